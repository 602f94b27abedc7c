"""The benchmark suite: jprop against the best JAX composition for each quantity, over a grid of
shapes, in one run — median time, speed-up, compile time and XLA's peak memory per program — plus
the peak RSS of a million-point chunked run. Writes a markdown table and a PNG of speed-up versus
input size, and records the device it ran on (it runs unchanged on a GPU).

Run from the repository root: python -m benchmarks.run [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results
that docs/benchmarks.md renders)
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import optax

import jprop
from benchmarks import harness, jprop_gradients, weight_curvature

INPUT_TRANSFORMS = {
    "jacobian": jprop.jacobian,
    "hessian": jprop.hessian,
    "laplacian": jprop.laplacian,
    "hessian_diagonal": jprop.hessian_diagonal,
}


def grid(quick: bool):
    """(quantity, sizes, batch): an input-size sweep per quantity, then width, depth and batch
    extremes. Hessian batches shrink as n grows, so B·m·n² stays near 2²² values."""
    if quick:
        return [
            ("jacobian", (4, 16, 3), 8),
            ("hessian", (4, 16, 3), 8),
            ("laplacian", (4, 16, 1), 8),
            ("E_v", (4, 16, 3), 8),
            ("weight_hessian_vector_product", (4, 16, 3), 8),
        ]
    rows = []
    for n in (1, 4, 16, 64, 256):
        rows += [
            ("jacobian", (n, 128, 128, 128, 4), 256),
            ("hessian", (n, 128, 128, 128, 4), max(1, min(256, (1 << 22) // (4 * n * n)))),
            ("laplacian", (n, 128, 128, 128, 1), 256),
            ("hessian_diagonal", (n, 128, 128, 128, 1), 256),
            ("E_u", (n, 128, 128, 128, 4), 256),
            ("E_v", (n, 128, 128, 128, 4), 256),
        ]
    rows += [
        ("hessian", (16, 32, 32, 32, 4), 256),
        ("hessian", (16, 512, 512, 4), 64),
        ("laplacian", (16, 64, 1), 1024),
        ("laplacian", (16, 64, 64, 64, 64, 64, 64, 1), 1024),
        ("jacobian", (8, 64, 64, 4), 1),
        ("jacobian", (8, 64, 64, 4), 16384),
        ("E_v", (8, 64, 64, 4), 16384),
        ("weight_hessian_vector_product", (100, 256, 256, 10), 1024),
        ("weight_hessian_vector_product", (16, 64, 64, 4), 16384),
    ]
    return rows


_ROAD_OF = {"E_u": "jprop_u", "E_v": "jprop_v", "weight_hessian_vector_product": "weight_curvature"}


def road(quantity, sizes) -> str:
    """The road `method="auto"` takes for the row: on the autodiff road jprop runs JAX's own
    transforms, so such a row times JAX against JAX and is labelled so."""
    net = jprop.MLP(sizes)
    model = jprop.SquaredError(net) if quantity == "weight_hessian_vector_product" else net
    return jprop.road(model, _ROAD_OF.get(quantity, quantity)).road


def contenders(quantity, sizes, batch):
    """(jprop's function as `method="auto"` builds it, {baseline name: function}, arguments)."""
    net, params, x = harness.net_and_data(sizes, batch)
    if quantity in INPUT_TRANSFORMS:
        baselines = harness.composition_baselines(net, quantity)
        return INPUT_TRANSFORMS[quantity](net), baselines, (params, x)
    keys = jax.random.split(jax.random.key(1), 3)
    n_side = jax.random.normal(keys[0], (batch, sizes[0]), jnp.float32)
    m_side = jax.random.normal(keys[1], (batch, sizes[-1]), jnp.float32)
    if quantity in ("E_u", "E_v"):
        fns = jprop_gradients.contenders(net, quantity, method="auto")
        args = (params, x, m_side, n_side) if quantity == "E_u" else (params, x, n_side, m_side)
        others = {k: v for k, v in fns.items() if k not in ("jprop", "plain MSE gradient")}
        return fns["jprop"], others, args
    fns = weight_curvature.contenders(net)
    v = optax.tree_utils.tree_random_like(keys[2], params)  # a leaf's own key each
    return (
        fns["jprop.weight_hessian_vector_product"],
        {"jax.jvp(jax.grad(E))": fns["jax.jvp(jax.grad(E))"]},
        (
            params,
            v,
            x,
            m_side,
        ),
    )


_RSS_SCRIPT = """
import jax, jax.numpy as jnp, jprop

def high_water_mib():  # this process's own peak RSS (VmHWM restarts at exec, ru_maxrss does not)
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM")) / 1024

net = jprop.MLP((2, 64, 64, 1))
params = net.init(jax.random.key(0))
x = jax.random.normal(jax.random.key(1), ({count}, 2))
jax.block_until_ready(x)
base = high_water_mib()
chunk = {chunk}
jax.block_until_ready(jprop.laplacian(net, batch_size=chunk)(params, x))
E, g = jax.value_and_grad(jprop.jprop_v(net, batch_size=chunk))(
    params, x, jnp.ones_like(x), jnp.zeros(({count}, 1))
)
jax.block_until_ready(g)
print(base, high_water_mib())
"""


def million_point_rss(quick: bool) -> dict:
    """Peak RSS of fresh processes computing Laplacians and a J-prop gradient of 10⁶ points
    (10⁴ in quick mode), in chunks of 16384 and in one piece, each against its own RSS just
    before the computation. Linux only (it reads /proc); elsewhere it reports nothing."""
    count = 10_000 if quick else 1_000_000
    report = {"points": count}
    for label, chunk in (("chunked", 16384), ("whole", None)):
        script = _RSS_SCRIPT.format(count=count, chunk=chunk)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        if done.returncode:
            return {**report, "error": done.stderr.strip().splitlines()[-1]}
        base, peak = (float(v) for v in done.stdout.split())
        report[label] = {"before_mib": base, "peak_mib": peak}
    return report


def main(
    quick: bool = False, repeats: int | None = None, out: str | None = None, progress: bool = True
) -> list[dict]:
    repeats = repeats or (3 if quick else 20)
    # Outputs go to the untracked out/, so a run leaves the checkout clean; the README's tracked
    # copies are regenerated with --out benchmarks/results.
    out_dir = pathlib.Path(out) if out else pathlib.Path(__file__).with_name("out")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = (
        f"{jax.devices()[0].device_kind} ({jax.default_backend()}, {len(jax.devices())} devices)"
    )
    print(f"device: {device}, float32")
    rss = million_point_rss(quick)  # first, while this process is small
    rows = []
    cases = grid(quick)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases), desc="benchmarks", leave=False, disable=None)
    for quantity, sizes, batch in cases:
        ours, baselines, args = contenders(quantity, sizes, batch)
        # The naive build-J routes hold 40-150 MiB of temporaries, which slowed whatever ran
        # next in the same race by 25-40%; they are timed in a race of their own.
        heavy = {k: fn for k, fn in baselines.items() if k.startswith("naive")}
        light = {k: fn for k, fn in baselines.items() if k not in heavy}
        res = harness.race({"jprop": ours, **light}, args, repeats)
        if heavy:
            res |= harness.race(heavy, args, max(1, repeats // 3))
        row = harness.summary_row(res, baselines, quantity, sizes, batch)
        row["road"] = road(quantity, sizes)
        outputs = harness.outputs(res)
        if quantity.startswith("E_"):  # (value, gradients): compare the gradients
            outputs = {name: out[1] for name, out in outputs.items()}
        harness.agree(outputs, "jprop", baselines, f"{quantity} {sizes}", 1e-3)
        rows.append(row)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    table = _markdown(rows, rss, repeats, device)
    print(table)
    harness.publish(out_dir, "suite", table, {"rows": rows, "rss": rss})
    _plot(rows, out_dir / "suite_speedup_vs_inputs.png", device)
    return rows


def _markdown(rows, rss, repeats, device) -> str:
    header = (
        "quantity|sizes|batch|jprop (ms)|best composition (ms)|speed-up|"
        "compile jprop / baseline (s)|peak MiB jprop / baseline"
    ).split("|")
    lines = []
    for r in rows:
        cells = harness.summary_cells(r)
        if r.get("road") == "autodiff":  # jprop ran JAX's own transforms: JAX against JAX
            cells[0] += " (auto: autodiff road, JAX vs JAX)"
        lines.append([*cells, f"{r['jprop_peak_mib']:.1f} / {r['baseline_peak_mib']:.1f}"])
    footer = (
        f'Medians of {repeats} interleaved runs, float32, {device}; jprop as `method="auto"` '
        "builds it. Peak memory is XLA's own account of each compiled program."
    )
    if "error" not in rss:
        footer += (
            f"\n\n{rss['points']:,} points through `jprop.laplacian` and `jprop.jprop_v`: peak RSS "
            f"{rss['chunked']['peak_mib']:.0f} MiB with `batch_size=16384`, "
            f"{rss['whole']['peak_mib']:.0f} MiB in one piece (each process held "
            f"{rss['chunked']['before_mib']:.0f} MiB before computing)."
        )
    return harness.markdown_table(header, lines, footer)


def _plot(rows, path, device):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    sweep = [r for r in rows if len(r["sizes"]) == 5 and r["sizes"][1] == 128]
    for quantity in dict.fromkeys(r["quantity"] for r in sweep):
        points = sorted((r["sizes"][0], r["speedup"]) for r in sweep if r["quantity"] == quantity)
        if len(points) > 1:
            ax.plot(*zip(*points), "o-", label=quantity)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [0.5, 0.75, 1, 1.5, 2, 3, 4]
    ax.set_yticks(ticks, [f"{t:g}×" for t in ticks])
    ax.minorticks_off()
    ax.set(
        ylim=(0.45, 4.5),
        xlabel="input size n (widths 128-128-128)",
        ylabel="speed-up over the best JAX composition",
        title=f"jprop vs JAX, float32, {device}",
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
