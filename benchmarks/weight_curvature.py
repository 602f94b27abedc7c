"""Weight-space Hessian-vector products: jprop's closed passes against `jax.jvp(jax.grad(E))` and
against one plain gradient of the same loss, side by side in one run.

The goal: an HVP costs at most 2.5 gradients and is no slower than JAX's forward-over-
reverse composition. Also times the Gauss-Newton product. Each row asserts the HVPs agree.

Run from the repository root: python -m benchmarks.weight_curvature [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import jprop
from benchmarks import harness
from benchmarks.harness import race


def contenders(net):
    """name -> fn(params, v, x, t): the weight HVP, JAX's composition, a gradient, Gauss-Newton."""
    loss = jprop.SquaredError(net)
    return {
        "jprop.weight_hessian_vector_product": jprop.weight_hessian_vector_product(loss),
        "jax.jvp(jax.grad(E))": lambda p, v, x, t: jax.jvp(
            lambda q: jax.grad(loss)(q, x, t), (p,), (v,)
        )[1],
        "jax.grad(E)": lambda p, v, x, t: jax.grad(loss)(p, x, t),
        "jprop.gauss_newton_vector_product": jprop.gauss_newton_vector_product(loss),
    }


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 30)
    shapes = [((16, 32, 32, 4), 64)] if quick else [((100, 256, 256, 10), 1024)]
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    rows = []
    for sizes, batch in shapes:
        net = jprop.MLP(sizes)
        params = net.init(jax.random.key(0), jnp.float32)
        keys = jax.random.split(jax.random.key(1), 3)
        x = jax.random.normal(keys[0], (batch, sizes[0]), jnp.float32)
        t = jax.random.normal(keys[1], (batch, sizes[-1]), jnp.float32)
        v = optax.tree_utils.tree_random_like(keys[2], params)  # a leaf's own key each
        contenders_ = contenders(net)
        res = race(contenders_, (params, v, x, t), repeats)
        harness.agree(
            harness.outputs(res),
            "jprop.weight_hessian_vector_product",
            ("jax.jvp(jax.grad(E))",),
            f"HVP {sizes}",
            1e-3,
        )
        weights = ravel_pytree(params)[0].size
        row = {
            "sizes": sizes,
            "batch": batch,
            "weights": weights,
            **{f"{k} ms": r["ms"] for k, r in res.items()},
            "hvp / gradient": res["jprop.weight_hessian_vector_product"]["ms"]
            / res["jax.grad(E)"]["ms"],
            "speed-up vs jvp(grad)": res["jax.jvp(jax.grad(E))"]["ms"]
            / res["jprop.weight_hessian_vector_product"]["ms"],
            "compile s": {k: r["compile_s"] for k, r in res.items()},
        }
        rows.append(row)
        print(
            f"{'-'.join(map(str, sizes))} ({weights} weights) B={batch}: "
            + " | ".join(f"{k} {r['ms']:.2f} ms" for k, r in res.items())
            + f" | HVP/gradient {row['hvp / gradient']:.2f}x"
            + f" | vs jvp(grad) {row['speed-up vs jvp(grad)']:.2f}x"
        )
    names = [k for k in rows[0] if k.endswith(" ms")]
    header = ["network", "weights", "batch", *names, "HVP / gradient", "vs jvp(grad)"]
    lines = [
        [
            "-".join(map(str, r["sizes"])),
            str(r["weights"]),
            str(r["batch"]),
            *(f"{r[k]:.2f}" for k in names),
            f"{r['hvp / gradient']:.2f}×",
            f"{r['speed-up vs jvp(grad)']:.2f}×",
        ]
        for r in rows
    ]
    footer = f"Medians of {repeats} interleaved rounds, float32."
    table = harness.markdown_table(header, lines, footer)
    harness.publish(out or pathlib.Path(__file__).with_name("out"), "weight_curvature", table, rows)
    return rows


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
