"""J-prop gradients of E_u and E_v against a plain MSE gradient, JAX's double-backprop compositions
and the naive route (build J, then the penalty), side by side in one run.

Reports, per network and objective, the median time of each contender (compile time separately),
jprop's cost relative to one plain MSE gradient of the same network and batch (the paper's O(1);
target ≤ 1.5×), and the speed-up over the best JAX composition (target ≥ 1). Each row asserts that
every contender computes the same gradient.

Run from the repository root: python -m benchmarks.jprop_gradients [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp

import jprop
from benchmarks import harness
from benchmarks.harness import race


def _mean_half_square(residual):
    return 0.5 * jnp.mean(jnp.sum(residual**2, -1))


def contenders(net, objective, method="closed"):
    """name -> fn(params, x, c, d) returning (value, weight gradient); (c, d) = (u, a) or (v, b).
    jprop's road is `method` (the closed passes by default; the suite passes "auto")."""

    def jtu_by_vjp(q, x, u):
        return jax.vmap(lambda xi, ui: jax.vjp(lambda z: net(q, z), xi)[1](ui)[0])(x, u)

    def jv_by_jvp(q, x, v):
        return jax.vmap(lambda xi, vi: jax.jvp(lambda z: net(q, z), (xi,), (vi,))[1])(x, v)

    if objective == "E_u":
        ours = jprop.jprop_u(net, method=method)  # the paper's passes, through jax.grad
        composition = lambda q, x, u, a: _mean_half_square(jtu_by_vjp(q, x, u) - a)  # noqa: E731
        naive = lambda q, x, u, a: _mean_half_square(  # noqa: E731
            jnp.einsum("bm,bmn->bn", u, jax.vmap(jax.jacrev(lambda xi: net(q, xi)))(x)) - a
        )
        target = lambda x, u, a: u  # noqa: E731  (the output-space argument)
    else:
        ours = jprop.jprop_v(net, method=method)  # ("auto" takes the jvp road)
        composition = lambda q, x, v, b: _mean_half_square(jv_by_jvp(q, x, v) - b)  # noqa: E731
        naive = lambda q, x, v, b: _mean_half_square(  # noqa: E731
            jnp.einsum("bmn,bn->bm", jax.vmap(jax.jacfwd(lambda xi: net(q, xi)))(x), v) - b
        )
        target = lambda x, v, b: b  # noqa: E731

    # A plain MSE gradient of the same network and batch, for scale.
    mse = lambda q, x, c, d: _mean_half_square(net(q, x) - target(x, c, d))  # noqa: E731
    return {
        "jprop": jax.value_and_grad(ours),
        "jax.grad(composition)": jax.value_and_grad(composition),
        "naive (build J)": jax.value_and_grad(naive),
        "plain MSE gradient": jax.value_and_grad(mse),
    }


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (3 if quick else 30)
    shapes = (
        [((8, 32, 32, 4), 64)]
        if quick
        else [((32, 256, 256, 256, 8), 512), ((2, 128, 128, 128, 128, 1), 4096)]
    )
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), float32")
    rows = []
    for sizes, batch in shapes:
        net = jprop.MLP(sizes)
        params = net.init(jax.random.key(0), jnp.float32)
        keys = jax.random.split(jax.random.key(1), 3)
        x = jax.random.normal(keys[0], (batch, sizes[0]), jnp.float32)
        n_side = jax.random.normal(keys[1], (batch, sizes[0]), jnp.float32)
        m_side = jax.random.normal(keys[2], (batch, sizes[-1]), jnp.float32)
        for objective in ("E_u", "E_v"):
            args = (
                (params, x, m_side, n_side) if objective == "E_u" else (params, x, n_side, m_side)
            )
            fns = contenders(net, objective)
            naive = {"naive (build J)": fns.pop("naive (build J)")}
            # The naive route holds 40-150 MiB of temporaries; raced alongside, it slowed the
            # closed passes by 25-40% on the first shape and not the composition, though both
            # compile to the same 19 products and 5 MiB of temporaries. It is timed on its own.
            res = race(fns, args, repeats) | race(naive, args, max(1, repeats // 3))
            harness.agree(
                {name: r["out"][1] for name, r in res.items()},  # the gradients
                "jprop",
                ("jax.grad(composition)", "naive (build J)"),
                f"{objective} {sizes}",
                1e-3,
            )
            best = min(("jax.grad(composition)", "naive (build J)"), key=lambda k: res[k]["ms"])
            row = {
                "objective": objective,
                "sizes": sizes,
                "batch": batch,
                **{f"{k} ms": r["ms"] for k, r in res.items()},
                "jprop / MSE gradient": res["jprop"]["ms"] / res["plain MSE gradient"]["ms"],
                "speed-up vs best composition": res[best]["ms"] / res["jprop"]["ms"],
                "jprop compile s": res["jprop"]["compile_s"],
            }
            rows.append(row)
            print(
                f"{objective} {'-'.join(map(str, sizes)):22s} B={batch:<5d} "
                + " | ".join(f"{k} {r['ms']:.2f} ms" for k, r in res.items())
                + f" | jprop/MSE {row['jprop / MSE gradient']:.2f}x"
                + f" | vs best composition {row['speed-up vs best composition']:.2f}x"
            )
    names = [k for k in rows[0] if k.endswith(" ms")]
    header = [
        "objective",
        "network",
        "batch",
        *names,
        "jprop / MSE gradient",
        "vs best composition",
    ]
    lines = [
        [
            r["objective"],
            "-".join(map(str, r["sizes"])),
            str(r["batch"]),
            *(f"{r[k]:.2f}" for k in names),
            f"{r['jprop / MSE gradient']:.2f}×",
            f"{r['speed-up vs best composition']:.2f}×",
        ]
        for r in rows
    ]
    footer = f"Medians of {repeats} interleaved rounds, float32; `jax.value_and_grad` of each loss."
    table = harness.markdown_table(header, lines, footer)
    harness.publish(out or pathlib.Path(__file__).with_name("out"), "jprop_gradients", table, rows)
    return rows


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
