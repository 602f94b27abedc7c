"""Physics-informed training steps on the architectures the field trains, built as `jprop.Network`s.

For each network, one step `jax.grad` of mean(Δu²) with respect to every trainable parameter, and
the forward Laplacian alone, raced in one run (`benchmarks.harness.race`):

- jprop: `jprop.laplacian(net)`, the closed road through each layer's own jet step;
- folx + jax.grad: folx's forward Laplacian of the same network, in the faster of two forms of
  one example's evaluation: jprop's own `net(params, x)` (products h Wᵀ, checked against the
  authors' equations in tests/test_layers.py) and those equations written as a plain function
  (`written`, products W h) — neither form is the faster on every network;
- trace(jax.hessian) + jax.grad on the faster of the same two forms;
- jprop's step again, its gradient accumulated over 4 chunks of the batch in one `jax.lax.scan`
  (each chunk's own `jax.grad`; nothing recomputed): the same numbers with one chunk's
  temporaries, which on a CPU under Linux stay below glibc's mmap threshold;
- the matrix products of jprop's compiled step alone (`harness.products_alone`): what they take
  by themselves, beside the step that runs them and folx's, which does as much work.

Rows: Fourier features (128 frequencies, s = 1) + modified MLP 4×256 tanh, 2 inputs; PirateNet
3 blocks × 256 with 128 Fourier frequencies, 3 inputs; Fourier features (64) + tanh MLP 3×128,
3 inputs; residual tanh 3-128×4-1 and, beside it, the same network without its skips, a plain
tanh MLP 3-128×5-1 on `jprop.MLP`'s own hand-derived rule (its ratio to folx is the reference for
the residual network's); and, beside the PirateNet, the same embedding and eleven dense tanh
layers of width 256 without its gates and skips (its step against its own forward is the
reference for the PirateNet's) — all at B = 512, float32. PirateNet blocks get α = 0.5 (at
α = 0 a block is the identity and its work would be wasted). Each row asserts that every
gradient and Laplacian agrees with jprop's.

Run from the repository root: python -m benchmarks.architectures [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp

import jprop
from benchmarks import harness
from jprop import layers
from jprop.models._activations import activation_function


def networks(quick: bool):
    """(name, network, batch)."""
    if quick:
        return [("PirateNet 1 × 16, n = 3", jprop.pirate_net(3, 1, width=16, blocks=1), 32)]
    mlp = [layers.FourierFeatures(64), *[layers.Dense(128) for _ in range(3)]]
    residual = [layers.Dense(128), *[layers.Residual() for _ in range(4)]]
    pirate_dense = [layers.FourierFeatures(128), *[layers.Dense(256) for _ in range(11)]]
    return [
        (
            "Fourier 128 + modified MLP 4×256, n = 2",
            jprop.modified_mlp(2, 1, width=256, depth=4, fourier_features=128),
            512,
        ),
        (
            "PirateNet 3 × 256 (Fourier 128), n = 3",
            jprop.pirate_net(3, 1, width=256, blocks=3),
            512,
        ),
        (
            "Fourier 64 + tanh MLP 3×128, n = 3",
            jprop.Network(3, [*mlp, layers.Dense(1, "identity")]),
            512,
        ),
        (
            "residual tanh 3-128×4-1",
            jprop.Network(3, [*residual, layers.Dense(1, "identity")]),
            512,
        ),
        (  # the residual network without its skips: a plain MLP, on its own hand-derived rule
            "tanh MLP 3-128×5-1",
            jprop.Network(3, [*[layers.Dense(128) for _ in range(5)], layers.Dense(1, "identity")]),
            512,
        ),
        (  # the PirateNet's embedding and eleven dense layers, without its gates and skips
            "Fourier 128 + tanh MLP 11×256, n = 3",
            jprop.Network(3, [*pirate_dense, layers.Dense(1, "identity")]),
            512,
        ),
    ]


def written(net: jprop.Network):
    """The network's equations as a plain JAX function of one example x (n,), each product
    written W h as their authors write them (jprop's own evaluation forms h Wᵀ): the form a user
    of folx or `jax.hessian` would write, for the layer kinds these rows use."""

    def dense(p, h, name):
        return activation_function(name)(p["W"] @ h + p["b"])

    def f(params, x):
        h, u, v = x, None, None
        for layer, p in zip(net.layers, params):
            if isinstance(layer, layers.FourierFeatures):
                z = (p["B"] if layer.trainable else jax.lax.stop_gradient(p["B"])) @ h
                h = jnp.concatenate([jnp.cos(z), jnp.sin(z)])
            elif isinstance(layer, layers.Gates):
                u, v = dense(p["U"], h, layer.activation), dense(p["V"], h, layer.activation)
            elif isinstance(layer, layers.GatedDense):
                z = dense(p, h, layer.activation)
                h = z * u + (1 - z) * v
            elif isinstance(layer, layers.PirateBlock):
                first, second, third = p["dense"]
                f1 = dense(first, h, layer.activation)
                z1 = f1 * u + (1 - f1) * v
                g = dense(second, z1, layer.activation)
                z2 = g * u + (1 - g) * v
                h = p["alpha"] * dense(third, z2, layer.activation) + (1 - p["alpha"]) * h
            elif isinstance(layer, layers.Residual):
                h = h + dense(p, h, layer.activation)
            elif isinstance(layer, layers.Dense) and not layer.factorised:
                h = dense(p, h, layer.activation)
            else:
                raise TypeError(f"benchmarks.architectures.written: no plain form for {layer}")
        return h

    return f


def _hessian_trace(f):
    """trace(jax.hessian) of one example's evaluation f(p, v), mapped over the batch."""

    def trace(p, x):
        one = lambda xi: jnp.trace(jax.hessian(lambda v: f(p, v)[0])(xi))  # noqa: E731
        return jax.vmap(one)(x)[:, None]

    return trace


RIVALS = {"folx": harness.folx_laplacian, "trace(jax.hessian)": _hessian_trace}


def _step(laplacian):
    return jax.grad(lambda p, x: jnp.mean(laplacian(p, x) ** 2))


CHUNKS = 4  # chunks of the batch in the accumulated step


def _accumulated_step(laplacian, count: int = CHUNKS):
    """The same gradient, accumulated over `count` equal chunks of the batch in one loop
    (`jax.lax.scan` of each chunk's own gradient; nothing recomputed): a step whose temporaries
    are one chunk's."""
    step = _step(laplacian)

    def accumulated(p, x):
        chunks = x.reshape(count, -1, x.shape[-1])

        def add(total, x_chunk):
            return jax.tree.map(jnp.add, total, step(p, x_chunk)), None

        total = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, p), chunks)[0]
        return jax.tree.map(lambda g: g / chunks.shape[0], total)

    return accumulated


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 20)
    rows = []
    for name, net, batch in networks(quick):
        params = net.init(jax.random.key(0), jnp.float32)
        params = [
            {**layer, "alpha": jnp.asarray(0.5, jnp.float32)} if "alpha" in layer else layer
            for layer in params
        ]
        x = jax.random.uniform(jax.random.key(3), (batch, net.n_inputs), jnp.float32, -1, 1)
        # one example's evaluation in both forms (`harness.FORMS`): jprop's own and the equations
        evaluations = {"h Wᵀ": lambda p, v, net=net: net(p, v), "W h": written(net)}

        laplacian = jprop.laplacian(net)
        contenders = {
            "jprop step": _step(laplacian),
            "jprop step, accumulated": _accumulated_step(laplacian),
            "jprop forward": laplacian,
        }
        for form, evaluate in evaluations.items():
            for rival, fn in RIVALS.items():
                contenders[f"{rival} step, {form}"] = _step(fn(evaluate))
                contenders[f"{rival} forward, {form}"] = fn(evaluate)
        # every contender takes (params, x, operands); only the products alone read the operands
        products, operands = harness.products_alone(
            jax.jit(contenders["jprop step"]).lower(params, x).compile()
        )
        contenders = {k: lambda p, v, _, f=f: f(p, v) for k, f in contenders.items()}
        contenders["products alone"] = lambda p, v, operands: products(operands)
        results = harness.race(contenders, (params, x, operands), repeats)
        outs = harness.outputs(results)
        for kind in ("step", "forward"):
            others = [k for k in contenders if not k.startswith("jprop") and f" {kind}," in k]
            others += ["jprop step, accumulated"] if kind == "step" else []
            harness.agree(outs, f"jprop {kind}", others, f"{name} {kind}", 1e-3)
        # each rival in its faster form, named
        each = {k: r["ms"] for k, r in results.items()}
        ms, taken = harness.faster_forms(each)
        # each program's compile time, a rival's in the form its timed row took
        compile_s = {k: results[f"{k}, {taken[k]}" if k in taken else k]["compile_s"] for k in ms}
        mib = {k: (r["peak_bytes"] or 0) / 2**20 for k, r in results.items()}
        gflop = {k: (harness.flops(r["compiled"]) or 0) / 1e9 for k, r in results.items()}
        rows.append(
            {
                "network": name,
                "batch": batch,
                "ms": ms,
                "form": taken,
                "ms_each_form": {k: v for k, v in each.items() if k not in ms},
                "peak_mib": mib,
                "gflop": gflop,
                "compile_s": compile_s,
            }
        )
        print(
            f"{name:42s} step: jprop {ms['jprop step']:.2f} ms, folx "
            f"{ms['folx step'] / ms['jprop step']:.2f}×, trace(hessian) "
            f"{ms['trace(jax.hessian) step'] / ms['jprop step']:.2f}×; step/forward "
            f"{ms['jprop step'] / ms['jprop forward']:.2f}, accumulated "
            f"{ms['jprop step, accumulated'] / ms['jprop forward']:.2f}; products alone "
            f"{ms['products alone'] / ms['jprop step']:.0%} of the step",
            flush=True,
        )

    objectives = objective_rows(quick, repeats)

    def cell(row, key, reference):
        mark = f", {row['form'][key]}" if key in row["form"] else ""
        return f"{row['ms'][key]:.2f} ms ({row['ms'][key] / row['ms'][reference]:.2f}×{mark})"

    header = [
        "network (jprop.Network)",
        "batch",
        "jprop step",
        "folx + jax.grad",
        "trace(jax.hessian) + jax.grad",
        "jprop step / its forward",
        f"jprop step accumulated over {CHUNKS} chunks / its forward",
        "the same in XLA's operation count",
        "the step's matrix products alone (share of jprop's step; folx's step over them)",
        "jprop forward",
        "folx forward",
        "trace(jax.hessian) forward",
        "compile, step (s): jprop / folx / trace(jax.hessian)",
    ]
    lines = [
        [
            r["network"],
            str(r["batch"]),
            f"{r['ms']['jprop step']:.2f} ms",
            cell(r, "folx step", "jprop step"),
            cell(r, "trace(jax.hessian) step", "jprop step"),
            f"{r['ms']['jprop step'] / r['ms']['jprop forward']:.2f}",
            f"{r['ms']['jprop step, accumulated'] / r['ms']['jprop forward']:.2f} "
            f"({r['ms']['jprop step, accumulated']:.2f} ms)",
            flop_ratio(r),
            products_cell(r),
            f"{r['ms']['jprop forward']:.2f} ms",
            cell(r, "folx forward", "jprop forward"),
            cell(r, "trace(jax.hessian) forward", "jprop forward"),
            " / ".join(
                f"{r['compile_s'][k]:.2f}"
                for k in ("jprop step", "folx step", "trace(jax.hessian) step")
            ),
        ]
        for r in rows
    ]
    footer = (
        f"Medians of {repeats} interleaved rounds, float32; a step is `jax.grad` of mean(Δu²) with "
        "respect to every parameter (B and ω fixed); × is the rival's time over jprop's. Each "
        "rival runs on the faster of two forms of one example's evaluation, named in its cell: "
        "jprop's own (products h Wᵀ) and the equations written as a plain function (products "
        "W h). The "
        "accumulated step is the same gradient summed over chunks of the batch in one loop "
        "(each chunk's own `jax.grad`, nothing recomputed), whose temporaries are one chunk's. XLA's "
        "operation count is the compiled programs' floating-point work, not their speed; its peak memory "
        "per program is in the JSON file beside this table. The matrix products alone are those of "
        "jprop's compiled step (`harness.products_alone`), each from its own operands, with "
        "nothing else; folx's step does as much floating-point work. Compile times are each "
        "program's `lower(...).compile()`, once, at XLA's default flags."
    )
    table = harness.markdown_table(header, lines, footer) + "\n\n" + objectives_table(objectives)
    print(table)
    harness.publish(
        out or pathlib.Path(__file__).with_name("out"),
        "architectures",
        table,
        {"laplacian": rows, "objectives": objectives},
    )
    return rows


def products_cell(row: dict) -> str:
    ms = row["ms"]
    share = ms["products alone"] / ms["jprop step"]
    return (
        f"{ms['products alone']:.2f} ms ({share:.0%}; "
        f"{ms['folx step'] / ms['products alone']:.2f}×)"
    )


def flop_ratio(row: dict) -> str:
    """The step's floating-point operations over its forward's, as XLA counts them ("n/a" where
    the backend gives no count)."""
    step, forward = row["gflop"]["jprop step"], row["gflop"]["jprop forward"]
    return f"{step / forward:.2f}" if step and forward else "n/a"


def objective_rows(quick: bool, repeats: int) -> list[dict]:
    """J-prop's E_v = ½‖Jv − b‖² and E_u = ½‖uᵀJ − a‖² on the gated networks: `jax.grad` in the
    parameters on the layer road (method="closed": J v, or J's n columns, through each layer's
    tangent step) against JAX's composition (method="autodiff": jax.grad of jax.jvp / jax.vjp)."""
    rows = []
    for name, net, batch in networks(quick)[:2]:
        params = net.init(jax.random.key(0), jnp.float32)
        n, m = net.n_inputs, net.n_outputs
        x, v, a = jax.random.uniform(jax.random.key(3), (3, batch, n), jnp.float32, -1, 1)
        u, b = jnp.ones((batch, m)), jnp.zeros((batch, m))
        contenders, data = {}, {"E_v": (v, b), "E_u": (u, a)}
        for objective, transform in (("E_v", jprop.jprop_v), ("E_u", jprop.jprop_u)):
            for method in ("closed", "autodiff"):
                grad = jax.grad(transform(net, method=method))
                contenders[f"{objective} {method}"] = lambda p, x, grad=grad, args=data[objective]: (
                    grad(p, x, *args)
                )
        results = harness.race(contenders, (params, x), repeats)
        outs = harness.outputs(results)
        for objective in data:
            harness.agree(
                outs, f"{objective} closed", [f"{objective} autodiff"], f"{name} {objective}", 1e-3
            )
        ms = {k: r["ms"] for k, r in results.items()}
        rows.append({"network": name, "batch": batch, "ms": ms})
    return rows


def objectives_table(rows: list[dict]) -> str:
    header = [
        "network (jprop.Network)",
        "batch",
        "E_v: layer road",
        "E_v: JAX composition",
        "E_u: layer road (J's columns)",
        "E_u: JAX composition",
        "auto takes",
    ]

    def pair(row, objective):
        closed, autodiff = row["ms"][f"{objective} closed"], row["ms"][f"{objective} autodiff"]
        return [f"{closed:.2f} ms", f"{autodiff:.2f} ms ({autodiff / closed:.2f}×)"]

    lines = [
        [r["network"], str(r["batch"]), *pair(r, "E_v"), *pair(r, "E_u"), "E_v: layers; E_u: JAX"]
        for r in rows
    ]
    footer = (
        "J-prop objectives on the same networks: `jax.grad` in the parameters of jprop.jprop_v / "
        "jprop.jprop_u with method='closed' (the layers' tangent steps) and method='autodiff' "
        "(jax.grad of jax.jvp / jax.vjp); × is the composition's time over the layer road's."
    )
    return harness.markdown_table(header, lines, footer)


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
