"""Benchmarks run in quick mode; each asserts that jprop agrees with the compositions it races."""

import jax
from helpers import load_script


def test_closed_forms_benchmark_quick(tmp_path):
    table = tmp_path / "table.md"
    # folx mixes dtypes internally; run as a user would, without the suite's strict promotion.
    with jax.numpy_dtype_promotion("standard"):
        rows = load_script("benchmarks/closed_forms.py").main(
            quick=True, repeats=1, markdown=str(table)
        )
    assert {r["quantity"] for r in rows} == {"hessian", "jacobian", "hessian_diagonal", "laplacian"}
    assert all(r["jprop_ms"] > 0 and r["ratio"] > 0 for r in rows)
    assert "speed-up" in table.read_text()


def test_jprop_gradients_benchmark_quick():
    rows = load_script("benchmarks/jprop_gradients.py").main(quick=True, repeats=1)
    assert {r["objective"] for r in rows} == {"E_u", "E_v"} and len(rows) == 4
    assert all(r["jprop ms"] > 0 for r in rows)


def test_weight_curvature_benchmark_quick():
    rows = load_script("benchmarks/weight_curvature.py").main(quick=True, repeats=1)
    assert len(rows) == 1 and rows[0]["hvp / gradient"] > 0
