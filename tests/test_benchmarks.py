"""Benchmarks run in quick mode; each asserts that jprop agrees with the compositions it races."""

import importlib.util
import pathlib

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(relative):
    spec = importlib.util.spec_from_file_location(pathlib.Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_closed_forms_benchmark_quick(tmp_path):
    table = tmp_path / "table.md"
    # folx mixes dtypes internally; run as a user would, without the suite's strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        rows = load("benchmarks/closed_forms.py").main(quick=True, repeats=1, markdown=str(table))
    assert {r["quantity"] for r in rows} == {"hessian", "jacobian", "hessian_diagonal", "laplacian"}
    assert all(r["jprop_ms"] > 0 and r["ratio"] > 0 for r in rows)
    assert "speed-up" in table.read_text()


def test_jprop_gradients_benchmark_quick():
    rows = load("benchmarks/jprop_gradients.py").main(quick=True, repeats=1)
    assert {r["objective"] for r in rows} == {"E_u", "E_v"} and len(rows) == 4
    assert all(r["jprop ms"] > 0 for r in rows)
