"""Benchmarks run in quick mode. Each must check every contender against jprop (`harness.agree`)
before it reports a time: the recorder below sees each check, so a benchmark that stops checking,
or checks fewer contenders than it races, fails here; and a wrong contender must fail the check."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
from scripts import load_script

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def checks(monkeypatch):
    """Every `harness.agree` call of the benchmark under test: (label, reference, names, errors)."""
    harness = load_script("benchmarks/harness.py")
    agree, seen = harness.agree, []

    def recording(outputs, reference, names, label, tolerance):
        errors = agree(outputs, reference, names, label, tolerance)
        seen.append((label, reference, tuple(names), errors))
        return errors

    monkeypatch.setattr(harness, "agree", recording)
    return seen


def test_tuned_malloc_starts_the_script_again_and_publishes_apart(monkeypatch, tmp_path, capsys):
    """`--tuned-malloc` starts the script again with glibc's tunables added to the user's own in
    the environment (and does not when they are all there already; some of them are not enough);
    results measured so are published under their own name, saying so; where glibc is older than
    2.35 it refuses, saying why."""
    import os
    import sys

    harness = load_script("benchmarks/harness.py")
    tuned = ":".join(harness.TUNED_MALLOC)
    started = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: started.append((args, env)))
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "benchmarks.x", "--tuned-malloc"])
    monkeypatch.setattr(sys, "argv", ["x", "--tuned-malloc", "--repeats", "2"])
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1")
    options = harness.command_line("A benchmark.")
    assert options["repeats"] == 2 and "tuned_malloc" not in options
    [(args, env)] = started
    assert args[1:] == ["-m", "benchmarks.x", "--tuned-malloc"]
    mine = "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"
    assert env["GLIBC_TUNABLES"] == f"{mine}:{tuned}"
    assert "glibc.malloc.mmap_max=0" in tuned and "glibc.malloc.arena_max=1" in tuned
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])  # as the new process sees it
    harness.command_line("A benchmark.")
    assert len(started) == 1
    harness.publish(tmp_path, "table", "| a |", [])
    said = (tmp_path / "table_tuned_malloc.md").read_text()
    assert f"GLIBC_TUNABLES={mine}:{tuned}" in said
    assert not (tmp_path / "table.md").exists()
    # a system whose C library does not know the tunables is told so, before anything runs
    import platform

    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.31"))
    with pytest.raises(SystemExit):
        harness.command_line("A benchmark.")
    assert len(started) == 1 and "glibc 2.35 or later" in capsys.readouterr().err
    # the setting the docs give users is the one the benchmarks measure
    howto = (ROOT / "docs/howto/batches-and-devices.md").read_text()
    assert f"export GLIBC_TUNABLES={tuned}\n" in howto


def test_one_blas_thread_starts_the_script_again_and_publishes_apart(monkeypatch, tmp_path):
    """`--one-blas-thread` starts the script again with OpenBLAS sized to one thread (and does
    not when it already is; with `--tuned-malloc` both settings come in one start); results
    measured so are published under their own name, saying so."""
    import os
    import sys

    harness = load_script("benchmarks/harness.py")
    started = []
    monkeypatch.setattr(os, "execve", lambda path, args, env: started.append((args, env)))
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "benchmarks.x", "--one-blas-thread"])
    monkeypatch.setattr(sys, "argv", ["x", "--one-blas-thread"])
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    options = harness.command_line("A benchmark.")
    assert "one_blas_thread" not in options
    [(args, env)] = started
    assert args[1:] == ["-m", "benchmarks.x", "--one-blas-thread"]
    assert env["OPENBLAS_NUM_THREADS"] == "1" and "GLIBC_TUNABLES" not in env
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # as the new process sees it
    harness.command_line("A benchmark.")
    assert len(started) == 1
    harness.publish(tmp_path, "table", "| a |", [])
    assert "OPENBLAS_NUM_THREADS=1" in (tmp_path / "table_one_blas_thread.md").read_text()
    assert not (tmp_path / "table.md").exists()
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setattr(sys, "argv", ["x", "--one-blas-thread", "--tuned-malloc"])
    monkeypatch.setattr(harness, "glibc_is_recent", lambda: True)
    harness.command_line("A benchmark.")
    env = started[-1][1]
    assert len(started) == 2 and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["GLIBC_TUNABLES"] == ":".join(harness.TUNED_MALLOC)
    # the setting the docs give users is the one the benchmarks measure
    howto = (ROOT / "docs/howto/high-dimensional.md").read_text()
    assert "export {}={}\n".format(*harness.ONE_BLAS_THREAD) in howto


def test_a_contender_that_differs_fails_the_check():
    harness = load_script("benchmarks/harness.py")
    good = {"jprop": {"w": jnp.ones(3)}, "jax": {"w": jnp.ones(3) * (1 + 1e-6)}}
    assert harness.agree(good, "jprop", ["jax"], "row", 1e-4)["jax"] < 1e-5
    bad = {"jprop": (jnp.ones(3), jnp.zeros(2)), "jax": (jnp.ones(3), jnp.full(2, 0.1))}
    with pytest.raises(AssertionError, match=r"row: jax differs from jprop by \d\.\de-01"):
        harness.agree(bad, "jprop", ["jax"], "row", 1e-3)


def test_closed_forms_benchmark_quick(tmp_path, checks):
    table = tmp_path / "closed_forms.md"
    rows = load_script("benchmarks/closed_forms.py").main(quick=True, repeats=1, out=str(tmp_path))
    assert [r["quantity"] for r in rows] == [label.split()[0] for label, *_ in checks]
    assert {r["quantity"] for r in rows} == {"hessian", "jacobian", "hessian_diagonal", "laplacian"}
    for row, (_, reference, names, _) in zip(rows, checks):
        assert reference == "jprop" and row["baseline"] in names  # the reported rival was checked
    hessian = next(names for label, _, names, _ in checks if label.startswith("hessian "))
    assert "jprop under jax.vmap" in hessian
    assert "speed-up" in table.read_text() and "operations: baseline / jprop" in table.read_text()
    assert all(r["jprop_gflop"] > 0 and r["baseline_gflop"] > 0 for r in rows)  # XLA's counts
    # the Hessian row again on one core and on all (child processes, each checking its race)
    import json
    import os

    cores = json.loads((tmp_path / "closed_forms.json").read_text())["data"]["hessian_by_cores"]
    if hasattr(os, "sched_setaffinity"):
        assert [r["cores"] for r in cores] == sorted({1, len(os.sched_getaffinity(0))})
        assert all(r["baseline"] == "vmap(jax.hessian)" and r["speedup"] > 0 for r in cores)
        assert "| cores |" in table.read_text()


def test_jprop_gradients_benchmark_quick(checks, tmp_path):
    rows = load_script("benchmarks/jprop_gradients.py").main(
        quick=True, repeats=1, out=str(tmp_path)
    )
    assert "jprop / MSE gradient" in (tmp_path / "jprop_gradients.md").read_text()
    assert [r["objective"] for r in rows] == ["E_u", "E_v"]
    assert [names for _, _, names, _ in checks] == [
        ("jax.grad(composition)", "naive (build J)")
    ] * 2


def test_weight_curvature_benchmark_quick(checks, tmp_path):
    rows = load_script("benchmarks/weight_curvature.py").main(
        quick=True, repeats=1, out=str(tmp_path)
    )
    assert "HVP / gradient" in (tmp_path / "weight_curvature.md").read_text()
    assert len(rows) == 1 and [names for _, _, names, _ in checks] == [("jax.jvp(jax.grad(E))",)]


def test_benchmark_suite_quick(tmp_path, checks):
    rows = load_script("benchmarks/run.py").main(
        quick=True, repeats=1, out=str(tmp_path), progress=False
    )
    assert {r["quantity"] for r in rows} >= {
        "jacobian",
        "hessian",
        "laplacian",
        "E_v",
        "weight_hessian_vector_product",
    }
    assert [label for label, *_ in checks] == [f"{r['quantity']} {r['sizes']}" for r in rows]
    assert all(r["jprop_peak_mib"] > 0 for r in rows)
    table = (tmp_path / "suite.md").read_text()
    assert "speed-up" in table and "peak RSS" in table  # (Linux: /proc/self/status)
    assert (tmp_path / "suite_speedup_vs_inputs.png").stat().st_size > 5_000


def test_pinn_step_benchmark_quick(checks, tmp_path):
    rows = load_script("benchmarks/pinn_step.py").main(quick=True, repeats=1, out=str(tmp_path))
    assert [r["quantity"] for r in rows] == ["laplacian", "hessian_diagonal", "jacobian", "hessian"]
    checked = {label.split()[0]: set(names) for label, _, names, _ in checks}
    assert "trace(jax.hessian) + jax.grad" in checked["laplacian"]
    assert {"folx + jax.grad, h Wᵀ", "folx + jax.grad, W h"} <= checked["laplacian"]
    laplacian = rows[0]  # the table's folx: the faster of its two forms
    assert laplacian["form"]["folx + jax.grad"] in {"h Wᵀ", "W h"}
    assert "diag(jax.hessian) + jax.grad" in checked["hessian_diagonal"]
    assert {"jacrev + jax.grad", "jacfwd + jax.grad"} <= checked["jacobian"]
    assert checked["subset"] == {"trace(jax.hessian) over dims"}
    assert "jax.hessian + jax.grad" in checked["hessian"]
    assert checked["chunked"] == {"chunked"}
    assert all(r["jprop_ms"] > 0 and r["forward_ms"] > 0 for r in rows)
    table = (tmp_path / "pinn_step_tanh.md").read_text()
    assert table.startswith("*Measured ") and "jax " in table and "cores" in table
    assert "folx" in table


def test_eager_benchmark_quick(checks):
    report = load_script("benchmarks/eager.py").main(quick=True)
    assert len(report["times_ms"]) == 3 and len(checks) == 1  # rebuilt eager == jitted


def test_generic_road_benchmark_quick(checks, tmp_path):
    script = load_script("benchmarks/generic_road.py")
    rows = script.main(quick=True, repeats=1, out=str(tmp_path))
    # the equinox module's row is the plain residual row's network, with its weights
    x = jnp.linspace(-1.0, 1.0, 3)
    (plain, p), (module, q) = script.residual(3, 16, 2), script.equinox_residual(3, 16, 2)
    np.testing.assert_allclose(module(q, x), plain(p, x), rtol=1e-6)
    # three plain-JAX networks and an equinox module on the generic road, then the Fourier
    # network as a jprop.MLP
    assert len(rows) == 5 and all("folx" in r["road"] for r in rows[:4])
    assert "equinox" in rows[3]["network"] and "closed road" in rows[4]["network"]
    assert [list(names) for _, _, names, _ in checks] == [
        ["folx + jax.grad", "trace(jax.hessian) + jax.grad"]
    ] * 5
    assert "folx + jax.grad" in (tmp_path / "generic_road.md").read_text()
    for row in rows:  # each step's compile time, measured apart
        assert set(row["compile_s"]) == set(row["ms"]) and min(row["compile_s"].values()) > 0


def test_architectures_benchmark_quick(checks, tmp_path):
    script = load_script("benchmarks/architectures.py")
    rows = script.main(quick=True, repeats=1, out=str(tmp_path))
    assert len(rows) == 1
    # each rival in both forms of one example's evaluation, every one checked against jprop
    forms, rivals = ("h Wᵀ", "W h"), list(script.RIVALS)
    named = {
        kind: [f"{r} {kind}, {f}" for f in forms for r in rivals] for kind in ("step", "forward")
    }
    assert [(ref, list(names)) for _, ref, names, _ in checks] == [
        ("jprop step", named["step"] + ["jprop step, accumulated"]),
        ("jprop forward", named["forward"]),
    ] + [(f"{e} closed", [f"{e} autodiff"]) for e in ("E_v", "E_u")]
    ms, taken, each = rows[0]["ms"], rows[0]["form"], rows[0]["ms_each_form"]
    assert set(taken) == {f"{r} {kind}" for r in rivals for kind in ("step", "forward")}
    for key, form in taken.items():  # the table's rival: the faster form
        timed = {f: each[f"{key}, {f}"] for f in forms}
        assert ms[key] == timed[form] == min(timed.values()), (key, timed)
    published = (tmp_path / "architectures.md").read_text()
    assert "folx + jax.grad" in published and "E_u: JAX composition" in published
    # each program's compile time, a rival's in the form its timed row took
    assert set(rows[0]["compile_s"]) == set(ms) and min(rows[0]["compile_s"].values()) > 0
    assert "compile, step (s)" in published
    gflop = rows[0]["gflop"]  # XLA's count: a step (forward + reverse) does more than its forward
    assert gflop["jprop step"] > gflop["jprop forward"] > 0
    # the step's products alone: no more work than the step, most of it
    assert 0.5 * gflop["jprop step"] < gflop["products alone"] <= gflop["jprop step"]


def test_products_alone_are_the_compiled_programs_live_products():
    """`harness.products_alone` runs the products XLA kept (a dead one gone), batched ones too,
    each from its own operands, and sums one entry of each."""
    import jax

    harness = load_script("benchmarks/harness.py")

    def program(a, w, v, c, d):
        dead = a @ jnp.ones((32, 8))  # noqa: F841 - never used: XLA drops it
        batched = jnp.einsum("bij,bjk->bik", c, d)
        return jnp.tanh(a @ w) @ v.T, batched

    shapes = [(64, 32), (32, 48), (16, 48), (4, 8, 5), (4, 5, 6)]
    args = [jnp.ones(s) for s in shapes]
    run, operands = harness.products_alone(jax.jit(program).lower(*args).compile())
    assert len(operands) == 6  # three products, two operands each
    # with every operand ones, each product's entries are its contraction's length
    ones = [jnp.ones_like(o) for o in operands]
    assert float(jax.jit(run)(ones)) == 32 + 48 + 5
    work = 2 * (64 * 32 * 48 + 64 * 48 * 16 + 4 * 8 * 5 * 6)
    assert harness.flops(jax.jit(run).lower(operands).compile()) == pytest.approx(work, rel=0.01)
    # integer products are not what it times, and it says so
    integers = jax.jit(lambda a, b: a @ b).lower(jnp.ones((4, 3), int), jnp.ones((3, 2), int))
    with pytest.raises(ValueError, match=r"products of \['s(32|64)'\].*floating-point"):
        harness.products_alone(integers.compile())


def test_high_dim_benchmark_quick(checks, tmp_path):
    rows = load_script("benchmarks/high_dim.py").main(quick=True, repeats=1, out=str(tmp_path))
    assert len(rows) == 1 and set(rows[0]["ms"]) == {
        "jprop exact",
        "jprop sparse",
        "jprop dense",
        "nested jvp sparse",
        "nested jvp dense",
        "jet sparse",
        "folx exact",
        "products alone",  # the step's matrix products timed alone: a reference, not a rival
    }
    estimates_and_steps = [
        ("jprop sparse", ["nested jvp sparse", "jet sparse"]),
        ("jprop dense", ["nested jvp dense"]),
    ]
    assert [(ref, list(names)) for _, ref, names, _ in checks] == estimates_and_steps * 2 + [
        ("jprop exact", ["folx exact, h Wᵀ", "folx exact, W h"]),
        ("jprop sparse", ["nested jvp sparse"]),  # the estimate alone
        ("jprop dense", ["nested jvp dense"]),
    ]
    assert set(rows[0]["estimate_alone_ms"]) == {
        "jprop sparse",
        "nested jvp sparse",
        "jprop dense",
        "nested jvp dense",
    }
    assert all(mib > 0 for mib in rows[0]["peak_mib"].values())
    assert "nested jvp" in (tmp_path / "high_dim.md").read_text()
