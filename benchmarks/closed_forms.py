"""Closed-form input derivatives of MLPs against the best JAX compositions (and folx), one run.

For each quantity and shape, jprop and every composition race (`benchmarks.harness.race`); the
median is reported with the ratio baseline / jprop, where the baseline is the fastest composition
measured in this same run (> 1: jprop faster).
Each row also asserts that jprop agrees with the composition.

Run from the repository root: python -m benchmarks.closed_forms [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
[--markdown FILE]
"""

from __future__ import annotations

import pathlib

import jax

import jprop
from benchmarks import harness
from benchmarks.harness import (
    composition_baselines,
    markdown_table,
    net_and_data,
    per_example,
    race,
    summary_cells,
    summary_row,
)


def cases(quick: bool):
    """(quantity, sizes, batch, jprop transform, {baseline name: fn(params, x)})."""
    hess_shape = ((8, 16, 16, 2), 16) if quick else ((32, 128, 128, 128, 8), 256)
    lap_shapes = (
        [((3, 16, 16, 1), 32)]
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


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 30)
    rows = []
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    for quantity, sizes, batch, ours, baselines in cases(quick):
        _, params, x = net_and_data(sizes, batch)
        # The same transform under the user's own jax.vmap (its batching rule joins the batch).
        mapped = {"jprop under jax.vmap": per_example(ours)} if quantity == "hessian" else {}
        results = race({"jprop": ours, **mapped, **baselines}, (params, x), repeats)
        harness.agree(
            harness.outputs(results), "jprop", (*mapped, *baselines), f"{quantity} {sizes}", 1e-4
        )
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
    harness.publish(out or pathlib.Path(__file__).with_name("out"), "closed_forms", table, rows)
    return rows


def _markdown(rows: list[dict], repeats: int) -> str:
    header = (
        "quantity|sizes|batch|jprop (ms)|best JAX composition (ms)|speed-up|"
        "compile jprop / baseline (s)|operations: baseline / jprop"
    )
    footer = (
        f"Medians of {repeats} interleaved runs, float32; the closed road forced. The last column "
        "is XLA's count of each compiled program's floating-point operations: the work each does, "
        "which a CPU turns into time at its own rate for each shape of matrix product."
    )
    lines = [[*summary_cells(r), operations(r)] for r in rows]
    return markdown_table(header.split("|"), lines, footer)


def operations(row: dict) -> str:
    """The baseline's floating-point operations over jprop's ("n/a" without XLA's count)."""
    ours, theirs = row["jprop_gflop"], row["baseline_gflop"]
    return f"{theirs / ours:.2f}×" if ours and theirs else "n/a"


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
