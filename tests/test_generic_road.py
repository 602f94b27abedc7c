"""The generic road on networks jprop has no closed form for, written as plain JAX functions:
Fourier features before a tanh MLP, residual blocks, gated (modified-MLP) layers. Its Laplacian
runs folx's forward Laplacian; every quantity is held to `jax.hessian` in float64, forward, over
chosen inputs and through `jax.grad`."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, normal
from jax.flatten_util import ravel_pytree

import jprop


def _dense(seed, n_out, n_in):
    return {"W": normal(seed, (n_out, n_in)) / n_in**0.5, "b": 0.1 * normal(seed + 1, (n_out,))}


def fourier(n=3, features=4, width=6):

    def f(p, x):
        z = p["B"] @ x
        h = jnp.tanh(p["l1"]["W"] @ jnp.concatenate([jnp.cos(z), jnp.sin(z)]) + p["l1"]["b"])
        return p["out"]["W"] @ h + p["out"]["b"]

    params = {
        "B": normal(0, (features, n)),
        "l1": _dense(2, width, 2 * features),
        "out": _dense(4, 2, width),
    }
    return f, params


def residual(n=3, width=5, blocks=2):
    seeds = range(10, 10 + 2 * (blocks + 2), 2)

    def f(p, x):
        h = jnp.tanh(p["in"]["W"] @ x + p["in"]["b"])
        for block in p["blocks"]:
            h = h + jnp.tanh(block["W"] @ h + block["b"])
        return (p["out"]["W"] @ h + p["out"]["b"])[0]  # a scalar output

    params = {
        "in": _dense(seeds[0], width, n),
        "blocks": [_dense(seed, width, width) for seed in seeds[1:-1]],
        "out": _dense(seeds[-1], 1, width),
    }
    return f, params


def gated(n=2, width=5):
    # The modified MLP: U, V from the input, h ← z ⊙ U + (1 − z) ⊙ V.
    seeds = range(30, 40, 2)

    def f(p, x):
        u = jnp.tanh(p["u"]["W"] @ x + p["u"]["b"])
        v = jnp.tanh(p["v"]["W"] @ x + p["v"]["b"])
        h = jnp.tanh(p["l1"]["W"] @ x + p["l1"]["b"])
        z = jnp.tanh(p["l2"]["W"] @ h + p["l2"]["b"])
        h = z * u + (1 - z) * v
        return p["out"]["W"] @ h + p["out"]["b"]

    names = ("u", "v", "l1", "l2", "out")
    shapes = ((width, n), (width, n), (width, n), (width, width), (3, width))
    return f, {name: _dense(seed, *s) for name, seed, s in zip(names, seeds, shapes)}


NETWORKS = {"fourier": fourier, "residual": residual, "gated": gated}


def _hessian_trace(f, dims=None):
    def one(p, xi):
        h = jax.hessian(lambda v: f(p, v))(xi)
        if dims is not None:
            h = h[..., dims, :][..., dims]
        return jnp.trace(h, axis1=-2, axis2=-1)

    return jax.vmap(one, (None, 0))


@pytest.mark.parametrize("name", ["residual", "gated"])  # Fourier: tests/test_fourier.py
def test_the_generic_laplacian_is_the_hessians_trace_and_trains_alike(name):
    f, params = NETWORKS[name]()
    x = normal(3, (4, 3 if name != "gated" else 2), jnp.float64)
    tangent = jax.tree.map(jnp.ones_like, params)

    @jax.jit  # every comparison in one compiled program: (jprop's, the oracle's) per check
    def both(params, x):
        out = {}
        for dims in (None, (1, 0)):  # all inputs; a reordered subset
            ours = jprop.laplacian(f, dims=dims)
            oracle = _hessian_trace(f, None if dims is None else list(dims))
            loss = lambda lap: lambda p: jnp.sum(jnp.sin(lap(p, x)))  # noqa: E731
            out[f"dims={dims}"] = [lap(params, x) for lap in (ours, oracle)]
            out[f"dims={dims}: grad"] = [
                ravel_pytree(jax.grad(loss(lap))(params))[0] for lap in (ours, oracle)
            ]
        # forward mode through it
        out["jvp"] = [
            jax.jvp(lambda p: lap(p, x), (params,), (tangent,))[1]
            for lap in (jprop.laplacian(f), _hessian_trace(f))
        ]
        return out

    for check, (ours, oracle) in both(params, x).items():
        tolerance = 1e-11 if check == "jvp" or check.endswith("grad") else 1e-12
        assert_close(ours, oracle, tolerance, f"{name} {check}")


def test_road_names_the_generic_engine():
    f, _ = residual()
    reason = jprop.road(f, "laplacian").reason
    assert jprop.road(f, "laplacian").road == "autodiff" and "folx" in reason
    assert "folx" not in jprop.road(f, "hessian").reason


def test_the_generic_laplacian_keeps_float32_under_x64_and_strict_promotion():
    # This suite runs with x64 on and strict promotion: folx's own float64 zeros must neither
    # raise nor leak into a float32 model's result.
    f, params = fourier()
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    x = normal(5, (4, 3), jnp.float32)
    ours = jprop.laplacian(f)(params32, x)
    assert ours.dtype == jnp.float32
    reference = jax.jit(_hessian_trace(f))(params, x.astype(jnp.float64))
    assert_close(ours.astype(jnp.float64), reference, 1e-5)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jprop.laplacian(f)(p, x) ** 2)))(params32)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
