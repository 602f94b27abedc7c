"""Closed-form input derivatives of MLPs against the best JAX compositions (and folx), one run.

For each quantity and shape, every contender is jitted; its compile time is measured on its own
(`lower(...).compile()`), then the compiled functions are timed in interleaved rounds with
`jax.block_until_ready`. The order rotates, and each timed call follows an untimed call of the same
function, so no contender pays for re-touching memory that another has just freed (a Laplacian
timed right after folx's measured 6× slower). The median is reported with the ratio baseline /
jprop, where the baseline is the fastest composition measured in this same run (> 1: jprop faster).
Each row also asserts that jprop agrees with the composition.

Run: python benchmarks/closed_forms.py [--quick] [--repeats N] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

import jprop

try:  # folx is optional (pip install -e ".[bench]")
    import folx
except ImportError:  # pragma: no cover - depends on the environment
    folx = None


def _compile(fn: Callable, *args) -> tuple[Callable, float]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _peak_bytes(compiled) -> int | None:
    """XLA's own account of the compiled program's memory: its peak, or at least arguments +
    outputs + temporaries (None where the backend gives no account)."""
    try:
        stats = compiled.memory_analysis()
        total = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
        return max(int(getattr(stats, "peak_memory_in_bytes", 0)), int(total)) or None
    except (AttributeError, NotImplementedError, TypeError):  # pragma: no cover - backend-specific
        return None


def race(contenders: dict[str, Callable], args: tuple, repeats: int) -> dict[str, dict]:
    """Compile each contender, then time them in interleaved rounds; medians in milliseconds."""
    compiled, results = {}, {}
    for name, fn in contenders.items():
        compiled[name], compile_s = _compile(fn, *args)
        out = jax.block_until_ready(compiled[name](*args))  # warm-up, kept for the oracle check
        results[name] = {
            "compile_s": compile_s,
            "times": [],
            "out": out,
            "peak_bytes": _peak_bytes(compiled[name]),
        }
    names = list(compiled)
    for round_ in range(repeats):  # rotate who goes first, so no contender always follows another
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            fn = compiled[name]
            jax.block_until_ready(fn(*args))  # untimed: re-touch its memory after the others ran
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            results[name]["times"].append(time.perf_counter() - start)
    for r in results.values():
        r["ms"] = 1e3 * statistics.median(r["times"])
    return results


def summary_row(results: dict, baselines, quantity: str, sizes, batch: int) -> dict:
    """One table row from a race: jprop against the fastest of `baselines` (speed-up > 1: jprop
    faster), with compile times and XLA's memory account of both."""
    best = min(baselines, key=lambda name: results[name]["ms"])
    ours, theirs = results["jprop"], results[best]
    return {
        "quantity": quantity,
        "sizes": sizes,
        "batch": batch,
        "jprop_ms": ours["ms"],
        "baseline": best,
        "baseline_ms": theirs["ms"],
        "speedup": theirs["ms"] / ours["ms"],
        "jprop_compile_s": ours["compile_s"],
        "baseline_compile_s": theirs["compile_s"],
        "jprop_peak_mib": (ours["peak_bytes"] or 0) / 2**20,
        "baseline_peak_mib": (theirs["peak_bytes"] or 0) / 2**20,
    }


def _net_and_data(sizes, batch, seed=0):
    net = jprop.MLP(sizes)
    params = net.init(jax.random.key(seed), jnp.float32)
    x = jax.random.normal(jax.random.key(seed + 1), (batch, sizes[0]), jnp.float32)
    return net, params, x


def _per_example(fn_of_x: Callable) -> Callable:
    return lambda params, x: jax.vmap(lambda xi: fn_of_x(params, xi))(x)


def jax_hessian(net):
    return _per_example(lambda p, xi: jax.hessian(lambda v: net(p, v))(xi))


def composition_baselines(net, quantity):
    """The JAX compositions (and folx) that compute `quantity` for `net`: name -> fn(params, x)."""
    h = jax_hessian(net)
    if quantity == "hessian":
        return {"vmap(jax.hessian)": h}
    if quantity == "hessian_diagonal":
        return {"diag(vmap(jax.hessian))": lambda p, x: jnp.diagonal(h(p, x), axis1=-2, axis2=-1)}
    if quantity == "jacobian":
        return {
            "vmap(jax.jacrev)": _per_example(lambda p, xi: jax.jacrev(lambda v: net(p, v))(xi)),
            "vmap(jax.jacfwd)": _per_example(lambda p, xi: jax.jacfwd(lambda v: net(p, v))(xi)),
        }
    out = {"trace(vmap(jax.hessian))": lambda p, x: jnp.trace(h(p, x), axis1=-2, axis2=-1)}
    if folx is not None:

        def folx_laplacian(p, x):
            one = folx.forward_laplacian(lambda v: net(p, v), sparsity_threshold=0)
            return jax.vmap(lambda xi: one(xi).laplacian)(x)

        out["folx.forward_laplacian"] = folx_laplacian
    return out


def cases(quick: bool):
    """(quantity, sizes, batch, jprop transform, {baseline name: fn(params, x)})."""
    hess_shape = ((32, 64, 64, 8), 32) if quick else ((32, 128, 128, 128, 8), 256)
    lap_shapes = (
        [((3, 32, 32, 1), 256), ((16, 64, 64, 1), 32)]
        if quick
        else [
            ((3, 64, 64, 64, 64, 1), 4096),
            ((32, 128, 128, 128, 1), 256),
            ((64, 256, 256, 256, 1), 128),
        ]
    )

    sizes, batch = hess_shape
    for quantity, transform in [
        ("hessian", jprop.hessian),
        ("jacobian", jprop.jacobian),
        ("hessian_diagonal", jprop.hessian_diagonal),
    ]:
        net = jprop.MLP(sizes)
        # The closed forms, forced: for the Jacobian "auto" takes JAX's own road (measured faster).
        ours = transform(net, method="closed")
        yield quantity, sizes, batch, ours, composition_baselines(net, quantity)
    for sizes, batch in lap_shapes:
        net = jprop.MLP(sizes)
        yield (
            "laplacian",
            sizes,
            batch,
            jprop.laplacian(net),
            composition_baselines(net, "laplacian"),
        )
        yield (
            "hessian_diagonal",
            sizes,
            batch,
            jprop.hessian_diagonal(net),
            composition_baselines(net, "hessian_diagonal"),
        )


def main(
    quick: bool = False, repeats: int | None = None, markdown: str | None = None
) -> list[dict]:
    repeats = repeats or (3 if quick else 30)
    rows = []
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    for quantity, sizes, batch, ours, baselines in cases(quick):
        _, params, x = _net_and_data(sizes, batch)
        # The same transform under the user's own jax.vmap (its batching rule joins the batch).
        mapped = {"jprop under jax.vmap": _per_example(ours)} if quantity == "hessian" else {}
        results = race({"jprop": ours, **mapped, **baselines}, (params, x), repeats)
        for name in (*mapped, *baselines):  # all agree with jprop (float32 rounding only)
            err = jprop.relative_error(results["jprop"]["out"], results[name]["out"])
            assert err < 1e-4, f"{quantity} {sizes}: jprop and {name} differ by {err:.1e}"
        row = summary_row(results, baselines, quantity, sizes, batch)
        best = row["baseline"]
        row["others"] = {k: results[k]["ms"] for k in (*mapped, *baselines) if k != best}
        rows.append(row)
        others = ", ".join(f"{k} {v:.2f} ms" for k, v in row["others"].items())
        print(
            f"{quantity:17s} {str(sizes):26s} B={batch:<5d} jprop {row['jprop_ms']:8.2f} ms | "
            f"{best} {row['baseline_ms']:8.2f} ms | {row['speedup']:5.2f}x"
            + (f" | {others}" if others else "")
        )
    table = _markdown(rows, repeats)
    print(table)
    if markdown:
        with open(markdown, "w") as handle:
            handle.write(table)
    return rows


def _markdown(rows: list[dict], repeats: int) -> str:
    lines = [
        "| quantity | sizes | batch | jprop (ms) | best JAX composition (ms) | speed-up | "
        "compile jprop / baseline (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['quantity']} | {'-'.join(map(str, r['sizes']))} | {r['batch']} | "
            f"{r['jprop_ms']:.2f} | {r['baseline']}: {r['baseline_ms']:.2f} | "
            f"**{r['speedup']:.2f}×** | {r['jprop_compile_s']:.2f} / {r['baseline_compile_s']:.2f} |"
        )
    lines.append(
        f"\nMedians of {repeats} interleaved runs, float32, {jax.devices()[0].device_kind}.\n"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small shapes, few repeats (smoke test)"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--markdown", default=None, help="also write the table to this file")
    args = parser.parse_args()
    main(args.quick, args.repeats, args.markdown)
