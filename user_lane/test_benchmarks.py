"""Benchmarks run in quick mode; each asserts that jprop agrees with the compositions it races."""

from scripts import load_script


def test_closed_forms_benchmark_quick(tmp_path):
    table = tmp_path / "table.md"
    rows = load_script("benchmarks/closed_forms.py").main(
        quick=True, repeats=1, markdown=str(table)
    )
    assert {r["quantity"] for r in rows} == {"hessian", "jacobian", "hessian_diagonal", "laplacian"}
    assert all(r["jprop_ms"] > 0 and r["speedup"] > 0 for r in rows)
    assert "speed-up" in table.read_text()


def test_jprop_gradients_benchmark_quick():
    rows = load_script("benchmarks/jprop_gradients.py").main(quick=True, repeats=1)
    assert {r["objective"] for r in rows} == {"E_u", "E_v"} and len(rows) == 2
    assert all(r["jprop ms"] > 0 for r in rows)


def test_weight_curvature_benchmark_quick():
    rows = load_script("benchmarks/weight_curvature.py").main(quick=True, repeats=1)
    assert len(rows) == 1 and rows[0]["hvp / gradient"] > 0


def test_benchmark_suite_quick(tmp_path):
    rows = load_script("benchmarks/run.py").main(
        quick=True, repeats=1, out=str(tmp_path), progress=False
    )
    assert {r["quantity"] for r in rows} >= {
        "jacobian",
        "hessian",
        "laplacian",
        "E_v",
        "weight_hvp",
    }
    assert all(r["speedup"] > 0 and r["jprop_peak_mib"] > 0 for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert "speed-up" in table and "peak RSS" in table  # (Linux: /proc/self/status)
    assert (tmp_path / "speedup_vs_inputs.png").stat().st_size > 5_000


def test_pinn_step_benchmark_quick():
    # Each row asserts that every contender's gradient equals jprop's (to float32 rounding).
    rows = load_script("benchmarks/pinn_step.py").main(quick=True, repeats=1)
    assert [r["quantity"] for r in rows] == ["laplacian", "hessian_diagonal", "jacobian"]
    assert all(r["jprop_ms"] > 0 and r["forward_ms"] > 0 for r in rows)


def test_eager_benchmark_quick():
    # Asserts the rebuilt eager call and the jitted one agree; times are not checked here.
    report = load_script("benchmarks/eager.py").main(quick=True)
    assert len(report["times_ms"]) == 3 and report["ratio"] > 0
