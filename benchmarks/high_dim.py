"""High-dimensional Poisson: one training step of `examples/high_dim_poisson.py`'s loss, exact and
randomized, against folx and the randomized estimators as a JAX user writes them.

The step is `jax.grad` of mean(r²) with r = −2d N − 4 x·∇N + (1 − ‖x‖²) ΔN − g on a d-128⁴-1 tanh
MLP N at B = 100 points (g, the source term, computed with the points as data). jprop's
contenders take N, x·∇N and ΔN from one transform (`drift="x"`), as the example does; the others
take N and x·∇N from one `jax.jvp` along x and ΔN their own way:

- jprop exact: `jprop.laplacian(net, drift="x")` (over d > 128 inputs, along the first layer's
  128 directions with the same Gram matrix);
- jprop sparse / dense: `jprop.laplacian(net, estimator="sparse" | "rademacher", probes=16,
  drift="x")`;
- folx: folx's exact forward Laplacian of the MLP, whose units it reads as elementwise, in the
  faster of two forms of its products (`harness.folx_forms`) (not run where it would not fit in
  memory);
- nested jvp, sparse / dense: the same 16 coordinates or Rademacher probes (drawn from the same key
  as jprop's), each pushed by `jax.jvp` of `jax.jvp` under `jax.vmap`, as a JAX user writes an
  SDGD or Hutchinson estimate, through the MLP's own evaluation (its tanh's derivative rule,
  written in the output, makes JAX's nested jvp faster than `jnp.tanh`'s does);
- jet, sparse: STDE's form, second-order Taylor coefficients by `jax.experimental.jet`, on the same
  coordinates, through the MLP in plain jnp (jet does not take a custom derivative rule);
- products alone (`products`): the (B·k × h) @ (h × h) matrix products between hidden layers
  that jprop's exact step runs along k = min(d, h₁) tangents, and the two of each in the backward
  pass, with nothing else: what those products take by themselves on this machine, beside the
  whole step (folx's step runs its products along all d tangents).

A second table times the estimate alone, `jax.grad` of mean((ΔN estimate)²), without the residual's
N and x·∇N, whose first layer reads all d inputs for every contender alike.

Each row checks that the randomized contenders' gradients agree with jprop's on the same samples,
and folx's with jprop exact, before it reports a time. The randomized steps race each other and
the exact ones each other, in interleaved rounds; time is the median, memory XLA's account of
each compiled step (`harness.peak_bytes`).

Run from the repository root: python -m benchmarks.high_dim [--quick] [--repeats N] [--out DIR]
(default DIR: benchmarks/out, untracked; `--out benchmarks/results` updates the published results)
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
from jax.experimental import jet

import jprop
from benchmarks import harness
from jprop.quantities._operators import _draw

PROBES = 16


def plain(params, x):
    """The MLP in plain jnp, as a folx or jet user writes it (what folx and jet differentiate)."""
    h = x
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["W"].T + layer["b"])
    return h @ params[-1]["W"].T + params[-1]["b"]


def _nested(net, directions):
    """Σ_p d_pᵀ ∇²N d_p per example by jax.jvp of jax.jvp, vmapped over the directions (k, n)."""

    def one(p, xi):
        g = lambda v: net(p, v)  # noqa: E731

        def second(d):
            return jax.jvp(lambda u: jax.jvp(g, (u,), (d,))[1], (xi,), (d,))[1]

        return jnp.sum(jax.vmap(second)(directions), 0)

    return lambda p, x: jax.vmap(lambda xi: one(p, xi))(x)


def _jet(net, directions):
    """The same sum by `jax.experimental.jet`: the second Taylor coefficient along each d_p."""

    def one(p, xi):
        g = lambda v: net(p, v)  # noqa: E731

        def second(d):
            return jet.jet(g, (xi,), ((d, jnp.zeros_like(d)),))[1][1]

        return jnp.sum(jax.vmap(second)(directions), 0)

    return lambda p, x: jax.vmap(lambda xi: one(p, xi))(x)


def products(net: jprop.MLP, k: int):
    """The matrix products of jprop's exact step along k tangents, alone, as a function of
    (params, x, g): forward, T ← T Wᵀ through each hidden-to-hidden layer from T (B·k × h₁) (the
    first layer's columns, scaled per example); backward, for each layer the weight's product
    Cᵀ T and the sensitivity's C W, from C = the last T. Its output is every weight product's
    sum, so that none of them is dead code."""

    def run(params, x, g):
        first = params[0]["W"][:, :k].T  # (k, h₁)
        t = (x[:, :1, None] * first[None]).reshape(-1, first.shape[-1])
        kept = []
        for layer in params[1:-1]:
            kept.append(t)
            t = t @ layer["W"].T
        total, c = 0.0, t
        for layer, t_in in zip(reversed(params[1:-1]), reversed(kept)):
            total = total + jnp.sum(c.T @ t_in)
            c = c @ layer["W"]
        return total + jnp.sum(c)

    return run


def _example():
    """examples/high_dim_poisson.py, for its source term and coefficients."""
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "high_dim_poisson.py"
    spec = importlib.util.spec_from_file_location("high_dim_poisson", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def _step(net, dim, laplacian):
    """jax.grad of the example's mean squared residual at points x with source values g (data,
    computed once with the points), N and x·∇N from one `jax.jvp`, ΔN from
    `laplacian(params, x)`."""

    def terms(params, x):
        value, tangent = jax.jvp(lambda v: net(params, v), (x,), (x,))
        return value, tangent, laplacian(params, x)

    return _fused_step(dim, terms)


def _fused_step(dim, terms):
    """jax.grad of the same loss, (N, x·∇N, ΔN) from `terms(params, x)`."""

    def loss(params, x, g):
        value, tangent, lap = terms(params, x)
        b = 1 - jnp.sum(x * x, -1, keepdims=True)
        lap_u = -2 * dim * value - 4 * tangent + b * lap
        return jnp.mean((lap_u[:, 0] - g) ** 2)

    return jax.grad(loss)


def row(dim: int, width: int, batch: int, repeats: int, folx_up_to: int):
    net = jprop.MLP((dim,) + (width,) * 4 + (1,))
    params = net.init(jax.random.key(0), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (batch, dim))
    x = 0.9 * x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    example = _example()
    g = example.source(example.coefficients(dim), x)
    key = jax.random.key(2)
    # the samples jprop draws from `key`, by jprop's own draw: the same for the JAX contenders
    coordinates = _draw("sparse", key, PROBES, dim, jnp.float32)
    probes = _draw("rademacher", key, PROBES, dim, jnp.float32)
    unit = jax.nn.one_hot(coordinates, dim, dtype=jnp.float32)
    scale = dim / PROBES

    exact = jprop.laplacian(net, drift="x")
    sparse = jprop.laplacian(net, estimator="sparse", probes=PROBES, drift="x")
    dense = jprop.laplacian(net, estimator="rademacher", probes=PROBES, drift="x")
    # ΔN alone, for the estimates' check and the second table
    sparse_alone = jprop.laplacian(net, estimator="sparse", probes=PROBES)
    dense_alone = jprop.laplacian(net, estimator="rademacher", probes=PROBES)
    nested_sparse, nested_dense = _nested(net, unit), _nested(net, probes)
    jet_sparse = _jet(plain, unit)
    randomized = {
        "jprop sparse": _fused_step(dim, lambda p, v: sparse(p, v, key)),
        "jprop dense": _fused_step(dim, lambda p, v: dense(p, v, key)),
        "nested jvp sparse": _step(net, dim, lambda p, v: scale * nested_sparse(p, v)),
        "nested jvp dense": _step(net, dim, lambda p, v: nested_dense(p, v) / PROBES),
        "jet sparse": _step(net, dim, lambda p, v: scale * jet_sparse(p, v)),
    }
    exact_steps = {"jprop exact": _fused_step(dim, exact)}
    if dim <= folx_up_to:
        for name, laplacian in harness.folx_forms(net, "folx exact").items():
            exact_steps[name] = _step(net, dim, laplacian)
    exact_steps["products alone"] = products(net, min(dim, width))
    # the same samples: the estimates of ΔN agree (a step's gradient alone would hide a wrong
    # sample, ΔN being one term of the residual)
    estimates = jax.jit(
        lambda p, v: {
            "jprop sparse": sparse_alone(p, v, key),
            "nested jvp sparse": scale * nested_sparse(p, v),
            "jet sparse": scale * jet_sparse(p, v),
            "jprop dense": dense_alone(p, v, key),
            "nested jvp dense": nested_dense(p, v) / PROBES,
        }
    )(params, x)
    label = f"d = {dim}"
    harness.agree(
        estimates, "jprop sparse", ["nested jvp sparse", "jet sparse"], f"{label} ΔN", 1e-4
    )
    harness.agree(estimates, "jprop dense", ["nested jvp dense"], f"{label} ΔN", 1e-4)
    # two races, so that the randomized steps (milliseconds) are not timed between exact ones
    # (seconds, hundreds of MiB), which on a shared CPU slows them unevenly
    results = harness.race(randomized, (params, x, g), 5 * repeats)  # milliseconds each
    results.update(harness.race(exact_steps, (params, x, g), repeats))
    out = harness.outputs(results)
    harness.agree(out, "jprop sparse", ["nested jvp sparse", "jet sparse"], label, 1e-3)
    harness.agree(out, "jprop dense", ["nested jvp dense"], label, 1e-3)
    folx = [name for name in out if name.startswith("folx exact")]
    harness.agree(out, "jprop exact", folx, label, 1e-3)
    # the estimate alone: jax.grad of mean(ΔN²), without the residual's N and x·∇N, whose first
    # layer reads all d inputs for every contender alike
    alone = {
        name: jax.grad(lambda p, v, fn=fn: jnp.mean(fn(p, v) ** 2))
        for name, fn in {
            "jprop sparse": lambda p, v: sparse_alone(p, v, key),
            "nested jvp sparse": lambda p, v: scale * nested_sparse(p, v),
            "jprop dense": lambda p, v: dense_alone(p, v, key),
            "nested jvp dense": lambda p, v: nested_dense(p, v) / PROBES,
        }.items()
    }
    estimate_alone = harness.race(alone, (params, x), 5 * repeats)
    out = harness.outputs(estimate_alone)
    harness.agree(out, "jprop sparse", ["nested jvp sparse"], f"{label} ΔN alone", 1e-3)
    harness.agree(out, "jprop dense", ["nested jvp dense"], f"{label} ΔN alone", 1e-3)
    ms, forms = harness.faster_forms({k: r["ms"] for k, r in results.items()})
    peak = {k: (r["peak_bytes"] or 0) / 2**20 for k, r in results.items()}
    for name, form in forms.items():  # the faster form's memory beside its time
        peak[name] = peak[f"{name}, {form}"]
    return {
        "estimate_alone_ms": {k: r["ms"] for k, r in estimate_alone.items()},
        "dim": dim,
        "batch": batch,
        "sizes": net.sizes,
        "ms": ms,
        "form": forms,
        "ms_each_form": {k: r["ms"] for k, r in results.items() if k.startswith("folx")},
        "compile_s": {k: r["compile_s"] for k, r in results.items()},
        "peak_mib": peak,
    }


def main(quick: bool = False, repeats: int | None = None, out: str | None = None) -> list[dict]:
    repeats = repeats or (2 if quick else 5)
    if quick:
        rows = [row(50, 16, 8, repeats, 50)]
    else:
        rows = [row(dim, 128, 100, repeats, 1000) for dim in (100, 1000, 10_000)]
    names = ["jprop exact", "folx exact", "products alone", "jprop sparse", "nested jvp sparse"]
    names += ["jet sparse", "jprop dense", "nested jvp dense"]

    def cell(r, name):
        if name not in r["ms"]:
            return "not run"
        text = f"{r['ms'][name]:.1f} ms, {r['peak_mib'][name]:.0f} MiB"
        rival = {"folx exact": "jprop exact", "products alone": "jprop exact"}.get(name)
        if name.startswith(("nested", "jet")):
            rival = "jprop " + name.split()[-1]
        if rival:
            form = f", {r['form'][name]}" if name in r.get("form", {}) else ""
            text += f" ({r['ms'][name] / r['ms'][rival]:.2f}×{form})"
        return text

    header = ["d", *names]
    lines = [[str(r["dim"]), *(cell(r, n) for n in names)] for r in rows]
    footer = (
        f"One step `jax.grad` of the example's mean squared residual on a "
        f"d-{rows[0]['sizes'][1]}⁴-1 tanh MLP at B = {rows[0]['batch']}, float32; medians of "
        f"{repeats} interleaved rounds for the exact steps, {5 * repeats} for the randomized ones, "
        "and XLA's memory account of each compiled step. jprop takes N, x·∇N and ΔN from one "
        '`jprop.laplacian(..., drift="x")`, the others N and x·∇N from one `jax.jvp`. Randomized '
        f"rows use {PROBES} probes drawn from one key; × is a rival's time over jprop's on the "
        "same samples (folx and the products alone against jprop exact). Nested jvp runs through the MLP's own "
        "evaluation, whose tanh rule suits it; jet through the MLP in plain jnp; folx in the "
        "faster of two forms of one example's products, named in its cell: the MLP's own "
        "evaluation (h Wᵀ) and its equations written W h. "
        "Products alone: the (B·k × h) @ (h × h) matrix products jprop's exact step runs between "
        "hidden layers along k = min(d, h₁) tangents, forward and backward, by themselves (folx's "
        "step runs its products along all d tangents)."
    )
    skipped = [str(r["dim"]) for r in rows if "folx exact" not in r["ms"]]
    if skipped:
        footer += (
            f" At d = {', '.join(skipped)} folx, which pushes all d tangents through every layer, "
            "is not run."
        )
    wide = [str(r["dim"]) for r in rows if r["dim"] > r["sizes"][1]]
    if wide:
        footer += (
            f" At d = {', '.join(wide)} (more inputs than the first layer's {rows[0]['sizes'][1]} "
            "units) jprop's exact Laplacian runs along that many directions with the same "
            "first-layer Gram matrix."
        )
    table = harness.markdown_table(header, lines, footer)
    alone = ["jprop sparse", "nested jvp sparse", "jprop dense", "nested jvp dense"]

    def alone_cell(r, name):
        ms = r["estimate_alone_ms"]
        text = f"{ms[name]:.1f} ms"
        if name.startswith("nested"):
            text += f" ({ms[name] / ms['jprop ' + name.split()[-1]]:.2f}×)"
        return text

    table += "\n\n" + harness.markdown_table(
        ["d", *alone],
        [[str(r["dim"]), *(alone_cell(r, n) for n in alone)] for r in rows],
        "The estimate alone: one step `jax.grad` of mean((ΔN estimate)²) on the same network, "
        "points and samples, without the residual's N and x·∇N; medians of "
        f"{5 * repeats} interleaved rounds.",
    )
    print(table)
    harness.publish(out or pathlib.Path(__file__).with_name("out"), "high_dim", table, rows)
    return rows


if __name__ == "__main__":
    main(**harness.command_line(__doc__))
