"""The generic road: physics-informed training steps on networks jprop has no closed form for,
written by the user as plain JAX functions of one example.

For each network, `jax.grad` of mean(Δu²) with respect to every parameter, raced in one run
(`benchmarks.harness.race`):

- jprop: `jprop.laplacian(f)` on the user's `f(params, x)` (the generic road);
- folx + jax.grad: folx's forward Laplacian of the same `f`, as a folx user writes it;
- trace(jax.hessian) + jax.grad.

The networks are the ones physics-informed practice trains: a tanh MLP, Fourier features
[cos Bx, sin Bx] (B fixed) before a tanh MLP, and residual blocks h ← h + tanh(W h + b); then the
residual network, with the same weights, as an equinox module of `eqx.nn.Linear` layers, given
to jprop as `jprop.equinox_function(model)` and to folx as the same function. A last row
gives the Fourier-feature network to jprop as what it is, a `jprop.MLP` with a sine first layer
(`jprop.fourier_features`), on the closed road. Each row asserts that every gradient agrees with
jprop's.

Run from the repository root: python -m benchmarks.generic_road [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp

import jprop
from benchmarks import harness


def _dense(key, n_out, n_in):
    return {"W": jax.random.normal(key, (n_out, n_in)) / jnp.sqrt(n_in), "b": jnp.zeros(n_out)}


def mlp(n: int, width: int, depth: int):
    """A tanh MLP n-width^depth-1 as a plain function."""

    def f(params, x):
        h = x
        for layer in params[:-1]:
            h = jnp.tanh(layer["W"] @ h + layer["b"])
        return params[-1]["W"] @ h + params[-1]["b"]

    keys = jax.random.split(jax.random.key(0), depth + 1)
    sizes = [n] + [width] * depth + [1]
    params = [_dense(k, b, a) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
    return f, params


def fourier_mlp(n: int, features: int, width: int, depth: int, scale: float = 1.0):
    """γ(x) = [cos Bx, sin Bx] with B ~ N(0, scale²) fixed, then a tanh MLP."""
    body, params = mlp(2 * features, width, depth)
    frequencies = scale * jax.random.normal(jax.random.key(1), (features, n))

    def f(params, x):
        z = jax.lax.stop_gradient(params["B"]) @ x
        return body(params["mlp"], jnp.concatenate([jnp.cos(z), jnp.sin(z)]))

    return f, {"B": frequencies, "mlp": params}


def residual(n: int, width: int, blocks: int):
    """h = tanh(W₀x + b₀); h ← h + tanh(W h + b) per block; a linear output."""
    keys = jax.random.split(jax.random.key(2), blocks + 2)

    def f(params, x):
        h = jnp.tanh(params["in"]["W"] @ x + params["in"]["b"])
        for block in params["blocks"]:
            h = h + jnp.tanh(block["W"] @ h + block["b"])
        return params["out"]["W"] @ h + params["out"]["b"]

    params = {
        "in": _dense(keys[0], width, n),
        "blocks": [_dense(k, width, width) for k in keys[1:-1]],
        "out": _dense(keys[-1], 1, width),
    }
    return f, params


class _ResidualModule(eqx.Module):
    """The residual network as an equinox user writes it: h = tanh(W₀x + b₀), h ← h + tanh(W h + b)
    per block, a linear output, each map an `eqx.nn.Linear`."""

    first: eqx.nn.Linear
    blocks: list[eqx.nn.Linear]
    last: eqx.nn.Linear

    def __call__(self, x):
        h = jnp.tanh(self.first(x))
        for block in self.blocks:
            h = h + jnp.tanh(block(h))
        return self.last(h)


def equinox_residual(n: int, width: int, blocks: int):
    """`residual`'s network, with its weights, as an equinox module split into `(f, params)` for
    jprop: the same numbers as the plain function's row."""
    _, plain = residual(n, width, blocks)

    def linear(layer):
        out, into = layer["W"].shape
        empty = eqx.nn.Linear(into, out, key=jax.random.key(0))
        return eqx.tree_at(lambda m: (m.weight, m.bias), empty, (layer["W"], layer["b"]))

    model = _ResidualModule(
        linear(plain["in"]), [linear(b) for b in plain["blocks"]], linear(plain["out"])
    )
    return jprop.equinox_function(model)


def networks(quick: bool):
    if quick:
        return [
            ("tanh MLP 3-16-16-1", *mlp(3, 16, 2), 32),
            ("Fourier features 8 + tanh MLP 16²", *fourier_mlp(3, 8, 16, 2), 32),
            ("residual tanh 3-16×2-1", *residual(3, 16, 2), 32),
            ("equinox module: residual tanh 3-16×2-1", *equinox_residual(3, 16, 2), 32),
        ]
    return [
        ("tanh MLP 3-128³-1", *mlp(3, 128, 3), 512),
        ("Fourier features 64 + tanh MLP 128³", *fourier_mlp(3, 64, 128, 3), 512),
        ("residual tanh 3-128×4-1", *residual(3, 128, 4), 512),
        ("equinox module: residual tanh 3-128×4-1", *equinox_residual(3, 128, 4), 512),
    ]


def _step(laplacian):
    return jax.grad(lambda p, x: jnp.mean(laplacian(p, x) ** 2))


def fourier_closed_row(quick: bool, repeats: int) -> dict:
    """The Fourier-feature network as a `jprop.MLP` whose first layer is `jprop.fourier_features`
    (B held fixed): the closed road and its hand-derived rule, against folx and jax.hessian on the
    same network written as a plain function. The gradients compared are the tanh MLP's."""
    features, width, depth, batch = (8, 16, 2, 32) if quick else (64, 128, 3, 512)
    f, plain_params = fourier_mlp(3, features, width, depth)
    net = jprop.MLP(
        (3, 2 * features) + (width,) * depth + (1,), activation=("sin",) + ("tanh",) * depth
    )
    b_matrix = plain_params["B"]
    phases = jnp.concatenate([jnp.full(features, jnp.pi / 2), jnp.zeros(features)])
    params = [{"W": jnp.concatenate([b_matrix, b_matrix]), "b": phases}, *plain_params["mlp"]]
    x = jax.random.uniform(jax.random.key(3), (batch, 3), jnp.float32, -1, 1)
    closed = jprop.laplacian(net)
    frozen = lambda p: [jax.lax.stop_gradient(p[0]), *p[1:]]  # noqa: E731
    ours = jax.jit(_step(lambda p, x: closed(frozen(p), x)[:, 0]))

    def hessian_trace(p, x):
        one = lambda xi: jnp.trace(jax.hessian(lambda v: f(p, v))(xi), axis1=-2, axis2=-1)  # noqa: E731
        return jax.vmap(one)(x)

    theirs = {
        "folx + jax.grad": _step(harness.folx_laplacian(f)),
        "trace(jax.hessian) + jax.grad": _step(hessian_trace),
    }
    # one race: every contender takes (MLP params, plain params, x) and returns the MLP's grads
    contenders = {
        "jprop": lambda p, q, x: ours(p, x)[1:],
        **{name: (lambda p, q, x, fn=fn: fn(q, x)["mlp"]) for name, fn in theirs.items()},
    }
    results = harness.race(contenders, (params, plain_params, x), repeats)
    name = f"Fourier features {features} + tanh MLP {width}^{depth}: jprop.MLP, closed road"
    harness.agree(harness.outputs(results), "jprop", list(theirs), name, 1e-3)
    return {
        "network": name,
        "batch": batch,
        "ms": {k: r["ms"] for k, r in results.items()},
        "compile_s": {k: r["compile_s"] for k, r in results.items()},
    }


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 20)
    rows = []
    for name, f, params, batch in networks(quick):
        x = jax.random.uniform(jax.random.key(3), (batch, 3), jnp.float32, -1, 1)

        def hessian_trace(p, x, f=f):
            one = lambda xi: jnp.trace(jax.hessian(lambda v: f(p, v))(xi), axis1=-2, axis2=-1)  # noqa: E731
            return jax.vmap(one)(x)

        contenders = {
            "jprop": _step(jprop.laplacian(f)),
            "folx + jax.grad": _step(harness.folx_laplacian(f)),
            "trace(jax.hessian) + jax.grad": _step(hessian_trace),
        }
        results = harness.race(contenders, (params, x), repeats)
        others = [k for k in contenders if k != "jprop"]
        harness.agree(harness.outputs(results), "jprop", others, f"generic {name}", 1e-3)
        ms = {k: r["ms"] for k, r in results.items()}
        rows.append(
            {
                "network": name,
                "batch": batch,
                "ms": ms,
                "compile_s": {k: r["compile_s"] for k, r in results.items()},
                "road": str(jprop.road(f, "laplacian")),
            }
        )
        print(
            f"{name:40s} B={batch}: jprop {ms['jprop']:.2f} ms | "
            + " | ".join(f"{k} {ms[k]:.2f} ms ({ms[k] / ms['jprop']:.2f}×)" for k in others)
        )
    rows.append(fourier_closed_row(quick, repeats))
    header = ["network (the user's own function or module)", "batch", "jprop", *others]
    header.append("compile (s): jprop / folx / trace(jax.hessian)")
    lines = [
        [
            r["network"],
            str(r["batch"]),
            f"{r['ms']['jprop']:.2f} ms",
            *(f"{r['ms'][k]:.2f} ms ({r['ms'][k] / r['ms']['jprop']:.2f}×)" for k in others),
            " / ".join(f"{r['compile_s'][k]:.2f}" for k in ("jprop", *others)),
        ]
        for r in rows
    ]
    footer = (
        f"Medians of {repeats} interleaved rounds, float32, 3 inputs; one step `jax.grad` of "
        "mean(Δu²) with respect to every parameter; × is the rival's time over jprop's. Compile "
        "times are each step's `lower(...).compile()`, once, at XLA's default flags."
    )
    table = harness.markdown_table(header, lines, footer)
    print(table)
    harness.publish(out or pathlib.Path(__file__).with_name("out"), "generic_road", table, rows)
    return rows


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
