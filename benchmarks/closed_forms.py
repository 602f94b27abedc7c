"""Closed-form input derivatives of MLPs against the best JAX compositions (and folx), one run.

For each quantity and shape, jprop and every composition race (`benchmarks.harness.race`); the
median is reported with the ratio baseline / jprop, where the baseline is the fastest composition
measured in this same run (> 1: jprop faster).
Each row also asserts that jprop agrees with the composition.

A second table races the Hessian row again on one core and on every core this process may use,
each in a child process pinned to those cores before it imports jax: how the closed Hessian's
lead depends on the number of cores (Linux CPUs only).

Run from the repository root: python -m benchmarks.closed_forms [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
[--markdown FILE]
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

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


def _race_row(quantity, sizes, batch, ours, baselines, repeats: int) -> dict:
    """One row: jprop against `baselines` (and, for the Hessian, jprop under the user's own
    jax.vmap, whose batching rule joins the batch), each checked against jprop."""
    _, params, x = net_and_data(sizes, batch)
    mapped = {"jprop under jax.vmap": per_example(ours)} if quantity == "hessian" else {}
    results = race({"jprop": ours, **mapped, **baselines}, (params, x), repeats)
    harness.agree(
        harness.outputs(results), "jprop", (*mapped, *baselines), f"{quantity} {sizes}", 1e-4
    )
    row = summary_row(results, baselines, quantity, sizes, batch)
    row["others"] = {k: results[k]["ms"] for k in (*mapped, *baselines) if k != row["baseline"]}
    return row


def hessian_row(quick: bool, repeats: int) -> None:
    """The Hessian row alone, printed as JSON on the last line: what each child process of
    `by_cores` runs."""
    row = _race_row(*next(case for case in cases(quick) if case[0] == "hessian"), repeats)
    print(json.dumps({k: row[k] for k in ("jprop_ms", "baseline", "baseline_ms", "speedup")}))


def by_cores(quick: bool, repeats: int) -> list[dict]:
    """The Hessian row on one core and on every core this process may use, each in a child
    process pinned to them before XLA starts; [] where the backend is not a CPU or the system
    cannot pin a process (not Linux)."""
    if jax.default_backend() != "cpu" or not hasattr(os, "sched_setaffinity"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    root = pathlib.Path(__file__).resolve().parent.parent
    rows = []
    for count in sorted({1, len(allowed)}):
        code = (  # pinned before jax is imported
            f"import os; os.sched_setaffinity(0, {allowed[:count]}); "
            f"from benchmarks.closed_forms import hessian_row; hessian_row({quick}, {repeats})"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
        )
        rows.append({"cores": count, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(f"hessian on {count} core(s): {rows[-1]['speedup']:.2f}x", flush=True)
    return rows


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 30)
    rows = []
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    for quantity, sizes, batch, ours, baselines in cases(quick):
        row = _race_row(quantity, sizes, batch, ours, baselines, repeats)
        best = row["baseline"]
        rows.append(row)
        others = ", ".join(f"{k} {v:.2f} ms" for k, v in row["others"].items())
        print(
            f"{quantity:17s} {str(sizes):26s} B={batch:<5d} jprop {row['jprop_ms']:8.2f} ms | "
            f"{best} {row['baseline_ms']:8.2f} ms | {row['speedup']:5.2f}x"
            + (f" | {others}" if others else "")
        )
    cores = by_cores(quick, repeats)
    hessian = next(r for r in rows if r["quantity"] == "hessian")
    table = _markdown(rows, repeats) + _cores_markdown(cores, hessian)
    print(table)
    harness.publish(
        out or pathlib.Path(__file__).with_name("out"),
        "closed_forms",
        table,
        {"rows": rows, "hessian_by_cores": cores},
    )
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


def _cores_markdown(cores: list[dict], hessian: dict) -> str:
    """The Hessian row by number of cores ("" when `by_cores` could not run it)."""
    if not cores:
        return ""
    header = ["cores", "jprop (ms)", "best JAX composition (ms)", "speed-up"]
    lines = [
        [
            str(r["cores"]),
            f"{r['jprop_ms']:.2f}",
            f"{r['baseline_ms']:.2f} ({r['baseline']})",
            f"{r['speedup']:.2f}×",
        ]
        for r in cores
    ]
    footer = (
        f"The Hessian of {'-'.join(map(str, hessian['sizes']))} at batch {hessian['batch']} "
        "again, in a process pinned to one core and in one pinned to every core this one may "
        "use, each its own race. `jax.hessian`'s products are thousands of rows tall and spread "
        "over the cores; the closed form's are one example's each, and gain less from more cores."
    )
    return "\n\n" + markdown_table(header, lines, footer)


def operations(row: dict) -> str:
    """The baseline's floating-point operations over jprop's ("n/a" without XLA's count)."""
    ours, theirs = row["jprop_gflop"], row["baseline_gflop"]
    return f"{theirs / ours:.2f}×" if ours and theirs else "n/a"


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
