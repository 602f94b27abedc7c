"""A physics-informed training step: `jax.grad` of mean(Δf²) with respect to the weights.

For each network and batch, the step is jitted for every contender and raced in one run
(`benchmarks.harness.race`: interleaved, rotating, compile timed apart):

- jprop: `jprop.laplacian(net)`, whose derivative rule is the hand-written tangent pass;
- autodiff through jprop's closed form: the same forward closed form with JAX differentiating it
  (what `jax.grad` did before the rule existed; a JAX-on-jprop route, labelled as such);
- folx + jax.grad: folx's forward Laplacian, differentiated by JAX, in the faster of two forms of
  one example's products (`harness.folx_forms`), named in its cell;
- trace(jax.hessian) + jax.grad.

The jprop forward Laplacian alone is timed too, for the ratio gradient / forward. Each row asserts
that every gradient agrees with jprop's. The same rows for the Hessian diagonal follow (mean of the
diagonal squared; jprop's hand-written rule), against diag(jax.hessian) + jax.grad, and Sobolev steps through the Jacobian
(mean of J²; jprop's hand-written rules, method="closed") against JAX's derivatives of jacrev and
jacfwd, and steps through the whole input Hessian (its rule against JAX's derivative of the same
closed form, and of jax.hessian).

Then the Laplacian over 8 of 32 inputs (`dims`) against all 32, and steps on whole batches
against the same with `batch_size` (with each program's temporaries and page faults per call).

Run from the repository root: python -m benchmarks.pinn_step [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib
import resource

import jax
import jax.numpy as jnp

import jprop
from benchmarks import harness
from benchmarks.harness import jax_hessian, race
from jprop.quantities import _closed

SHAPES = [
    ((2, 64, 64, 64, 1), 1024),
    ((3, 128, 128, 128, 1), 512),
    ((10, 128, 128, 128, 1), 512),
    ((32, 128, 128, 128, 1), 256),
]
QUICK_SHAPES = [((4, 32, 32, 1), 64)]


# Sobolev steps through the Jacobian: m < n (the rows pass; auto takes jacrev), and n <= m (the
# columns pass, auto's closed road).
JACOBIAN_SHAPES = [
    ((3, 128, 128, 128, 1), 512),
    ((32, 128, 128, 128, 8), 256),
    ((3, 64, 64, 10), 512),
]
QUICK_JACOBIAN_SHAPES = [((2, 16, 16, 3), 64)]

# Steps through the whole input Hessian: its rule against JAX's derivative of the same closed form.
HESSIAN_SHAPES = [((32, 128, 128, 128, 8), 256), ((4, 32, 32, 2), 64)]
QUICK_HESSIAN_SHAPES = [((3, 8, 2), 16)]

# Whole batches against `batch_size` chunks whose temporaries stay under glibc's 32 MiB mmap
# threshold: (quantity, sizes, batch, batch_size).
CHUNKED = [
    ("hessian_diagonal", (32, 128, 128, 128, 1), 256, 128),
    ("laplacian", (32, 128, 128, 128, 1), 1024, 256),
    ("hessian_diagonal", (32, 128, 128, 128, 1), 1024, 128),
]
QUICK_CHUNKED = [("laplacian", (4, 16, 16, 1), 64, 16)]

# The Laplacian over a subset of the inputs (`dims`): k of n tangents pushed, against all n.
SUBSET = ((32, 128, 128, 128, 1), 256, 8)
QUICK_SUBSET = ((6, 16, 16, 1), 64, 2)


def _step(q):
    return jax.grad(lambda p, x: jnp.mean(q(p, x) ** 2))


def jacobian_steps(net):
    """name -> ∇_w mean(J²): jprop's hand-written rules (method='closed') against JAX's
    derivatives of vmapped jacrev and jacfwd."""
    out = {"jprop": _step(jprop.jacobian(net, method="closed"))}
    for name, jac in (("jacrev", jax.jacrev), ("jacfwd", jax.jacfwd)):
        one = lambda p, jac=jac: jac(lambda xi: net(p, xi))  # noqa: E731
        out[f"{name} + jax.grad"] = _step(lambda p, x, one=one: jax.vmap(one(p))(x))
    return out, jprop.jacobian(net, method="closed")


def steps(net, quantity):
    """name -> fn(params, x) returning ∇_w mean(q²) for the quantity q of `net`."""
    if quantity == "jacobian":
        return jacobian_steps(net)
    diagonal = quantity == "hessian_diagonal"
    h = jax_hessian(net)
    step = _step
    if quantity == "hessian":
        ours = jprop.hessian(net, method="closed")
        return {
            "jprop": step(ours),
            "autodiff through jprop's closed form": step(lambda p, x: _closed.hessian(net, p, x)),
            "jax.hessian + jax.grad": step(h),
        }, ours

    ours = (jprop.hessian_diagonal if diagonal else jprop.laplacian)(net)
    closed = _closed.hessian_diagonal if diagonal else _closed.laplacian
    out = {
        "jprop": step(ours),
        "autodiff through jprop's closed form": step(lambda p, x: closed(net, p, x)),
    }
    if diagonal:
        out["diag(jax.hessian) + jax.grad"] = step(
            lambda p, x: jnp.diagonal(h(p, x), axis1=-2, axis2=-1)
        )
        return out, ours
    out["trace(jax.hessian) + jax.grad"] = step(lambda p, x: jnp.trace(h(p, x), axis1=-2, axis2=-1))
    for name, laplacian in harness.folx_forms(net, "folx + jax.grad").items():
        out[name] = step(laplacian)
    return out, ours


def subset_row(activation: str, quick: bool, repeats: int) -> dict:
    """The forward Laplacian and its training step over the first k of n inputs, each divided by
    the same over all n; the flop count allows (k + 2) / (n + 2)."""
    sizes, batch, k = QUICK_SUBSET if quick else SUBSET
    net = jprop.MLP(sizes, activation=activation)
    params = net.init(jax.random.key(0), jnp.float32)
    x = jax.random.uniform(jax.random.key(1), (batch, sizes[0]), jnp.float32, -1, 1)
    full, part = jprop.laplacian(net), jprop.laplacian(net, dims=tuple(range(k)))
    contenders = {"all": full, "subset": part, "all step": _step(full), "subset step": _step(part)}
    results = race(contenders, (params, x), repeats)
    h = jax_hessian(net)(params, x)[..., :k, :k]
    outs = {
        "subset": results["subset"]["out"],
        "trace(jax.hessian) over dims": jnp.trace(h, 0, -2, -1),
    }
    harness.agree(
        outs, "subset", ["trace(jax.hessian) over dims"], f"subset laplacian {sizes}", 1e-3
    )
    ms = {name: r["ms"] for name, r in results.items()}
    n = sizes[0]
    row = {
        "sizes": sizes,
        "batch": batch,
        "k": k,
        "forward_ratio": ms["subset"] / ms["all"],
        "step_ratio": ms["subset step"] / ms["all step"],
        "flop_ratio": (k + 2) / (n + 2),
    }
    print(
        f"laplacian over {k} of {n} inputs, {'-'.join(map(str, sizes))} B={batch}: forward "
        f"{ms['subset']:.2f} ms ({row['forward_ratio']:.3f}× all {n}), step {ms['subset step']:.2f} "
        f"ms ({row['step_ratio']:.3f}×); flop count (k + 2)/(n + 2) = {row['flop_ratio']:.3f}"
    )
    return row


def _page_faults(fn, args, calls: int = 5) -> float:
    """Median minor page faults the process takes per call of `fn` (after a warm-up call)."""
    jax.block_until_ready(fn(*args))
    counts = []
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        jax.block_until_ready(fn(*args))
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sorted(counts)[len(counts) // 2]


def chunked_rows(activation: str, quick: bool, repeats: int) -> list[dict]:
    """The training step on a whole batch against the same with `batch_size`: a compiled program
    whose temporaries pass glibc's 32 MiB mmap threshold gets them freshly mapped on every call,
    and pays a page fault per 4 KiB page it touches."""
    rows = []
    for quantity, sizes, batch, chunk in QUICK_CHUNKED if quick else CHUNKED:
        net = jprop.MLP(sizes, activation=activation)
        params = net.init(jax.random.key(0), jnp.float32)
        x = jax.random.uniform(jax.random.key(1), (batch, sizes[0]), jnp.float32, -1, 1)
        transform = getattr(jprop, quantity)
        contenders = {
            "whole": _step(transform(net)),
            "chunked": _step(transform(net, batch_size=chunk)),
        }
        results = race(contenders, (params, x), repeats)
        harness.agree(harness.outputs(results), "whole", ["chunked"], f"chunked {quantity}", 1e-4)
        row = {"quantity": quantity, "sizes": sizes, "batch": batch, "batch_size": chunk}
        for name in contenders:
            compiled = results[name]["compiled"]  # the program the race timed
            row[name] = {
                "ms": results[name]["ms"],
                "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
                "faults": _page_faults(compiled, (params, x)),
            }
        rows.append(row)
        whole, chunked = row["whole"], row["chunked"]
        print(
            f"{quantity} step {'-'.join(map(str, sizes))} B={batch}: whole {whole['ms']:.2f} ms "
            f"({whole['temp_mib']:.0f} MiB of temporaries, {whole['faults']:.0f} page faults per "
            f"call) | batch_size={chunk} {chunked['ms']:.2f} ms ({chunked['temp_mib']:.0f} MiB, "
            f"{chunked['faults']:.0f} page faults)"
        )
    return rows


def main(
    quick: bool = False,
    repeats: int | None = None,
    activation: str = "tanh",
    out: str | None = None,
) -> list[dict]:
    repeats = repeats or (3 if quick else 20)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    rows = []
    plan = {
        "laplacian": QUICK_SHAPES if quick else SHAPES,
        "hessian_diagonal": QUICK_SHAPES if quick else SHAPES,
        "jacobian": QUICK_JACOBIAN_SHAPES if quick else JACOBIAN_SHAPES,
        "hessian": QUICK_HESSIAN_SHAPES if quick else HESSIAN_SHAPES,
    }
    for quantity, shapes in plan.items():
        for sizes, batch in shapes:
            net = jprop.MLP(sizes, activation=activation)
            params = net.init(jax.random.key(0), jnp.float32)
            x = jax.random.uniform(jax.random.key(1), (batch, sizes[0]), jnp.float32, -1, 1)
            contenders, forward = steps(net, quantity)
            results = race({**contenders, "jprop forward": forward}, (params, x), repeats)
            ours = results["jprop"]
            others = [name for name in contenders if name != "jprop"]
            harness.agree(harness.outputs(results), "jprop", others, f"{quantity} {sizes}", 1e-3)
            row = {
                "quantity": quantity,
                "sizes": sizes,
                "batch": batch,
                "jprop_ms": ours["ms"],
                "forward_ms": results["jprop forward"]["ms"],
                "others": {},
                "form": {},
                "compile_s": ours["compile_s"],
            }
            row["others"], row["form"] = harness.faster_forms(
                {k: results[k]["ms"] for k in contenders if k != "jprop"}
            )
            rows.append(row)
            others = " | ".join(
                f"{k} {v:.2f} ms ({v / ours['ms']:.2f}×)" for k, v in row["others"].items()
            )
            print(
                f"{quantity:16s} {'-'.join(map(str, sizes)):18s} B={batch:<5d} "
                f"jprop {ours['ms']:7.2f} ms = {ours['ms'] / row['forward_ms']:.2f}× its forward | "
                + others
            )
    subset = subset_row(activation, quick, repeats)
    chunked = chunked_rows(activation, quick, repeats)
    out_dir = pathlib.Path(out) if out else pathlib.Path(__file__).with_name("out")
    harness.publish(
        out_dir,
        f"pinn_step_{activation}",
        _markdown(rows, repeats, activation, subset, chunked),
        {"rows": rows, "subset": subset, "chunked": chunked},
    )
    return rows


def _markdown(rows: list[dict], repeats: int, activation: str, subset: dict, chunked) -> str:
    """One table per quantity: jprop's training step, its cost in forwards, and each rival's time
    with its ratio to jprop's (above 1: jprop is faster)."""
    text = []
    for quantity in dict.fromkeys(r["quantity"] for r in rows):
        mine = [r for r in rows if r["quantity"] == quantity]
        rivals = list(mine[0]["others"])
        header = ["network", "batch", "jprop step", "jprop / its forward", *rivals]
        lines = [
            [
                "-".join(map(str, r["sizes"])),
                str(r["batch"]),
                f"{r['jprop_ms']:.2f} ms",
                f"{r['jprop_ms'] / r['forward_ms']:.2f}×",
                *(
                    f"{r['others'][k]:.2f} ms ({r['others'][k] / r['jprop_ms']:.2f}×"
                    + (f", {r['form'][k]})" if k in r.get("form", {}) else ")")
                    for k in rivals
                ),
            ]
            for r in mine
        ]
        text.append(f"**`jax.grad` of the mean square of the {quantity}**, {activation} units\n")
        text.append(harness.markdown_table(header, lines, ""))
    text.append(
        f"Medians of {repeats} interleaved rounds, float32; × is the rival's time over jprop's. "
        "folx runs in the faster of two forms of one example's products, named in its cell: the "
        "MLP's own evaluation (h Wᵀ) and its equations written W h."
    )
    text.append(
        f"\nThe Laplacian over {subset['k']} of {subset['sizes'][0]} inputs (`dims=`), "
        f"{'-'.join(map(str, subset['sizes']))} at batch {subset['batch']}: forward "
        f"{subset['forward_ratio']:.2f}×, training step {subset['step_ratio']:.2f}× the cost over "
        f"all inputs; the flop count allows {subset['flop_ratio']:.2f}×.\n"
    )
    header = ["step", "network", "batch", "whole batch", "with batch_size"]
    lines = [
        [
            r["quantity"],
            "-".join(map(str, r["sizes"])),
            str(r["batch"]),
            f"{r['whole']['ms']:.2f} ms, {r['whole']['temp_mib']:.0f} MiB, "
            f"{r['whole']['faults']:.0f} page faults",
            f"{r['batch_size']}: {r['chunked']['ms']:.2f} ms, {r['chunked']['temp_mib']:.0f} MiB, "
            f"{r['chunked']['faults']:.0f} page faults",
        ]
        for r in chunked
    ]
    footnote = "Temporaries are XLA's account of each compiled program; page faults per call."
    text.append(harness.markdown_table(header, lines, footnote))
    return "\n".join(text)


if __name__ == "__main__":
    main(
        **harness.command_line(
            __doc__, activation=("tanh", "hidden units: tanh, sin, softplus, ...")
        )
    )
