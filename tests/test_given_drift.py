"""A drift field given at each call (`drift="given"`): the triple (f, b·∇f, the operator) from the
network's own pass, against jax.jvp along b and jax.hessian in float64."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, central_differences, normal
from test_operators import DRIFT_CASES, _laplacian, _triple_loss

import jprop

# more inputs than first units (an MLP), Fourier features then gates (a Network); with tangent
# chunks, f and b·∇f come from jax.jvp along b, as they do for any other function
GIVEN_CASES = {name: DRIFT_CASES[name] for name in ("mlp", "network")}


@pytest.mark.parametrize("name", list(GIVEN_CASES))
def test_a_given_drift_field_rides_the_same_pass(monkeypatch, compiles, name):
    """`drift="given"` returns (f, b·∇f, the operator) for a field b passed at each call: per
    example (x's shape) or shared ((n,)), with the exact Laplacian, tr(σσᵀH) for a σ per example,
    tangent chunks and estimators at k = n (exact) with a key per example, on an example-chunked
    batch (σ, b and keys all per example) and under a user's vmap; values,
    gradients in params, x and b, and forward mode in params and b against jax.jvp along b and
    jax.hessian in float64, the gradient in b against float64 differences too, and finite in
    float32 with saturated units. On an MLP or a Network the three come from its own pass, started
    from b (counted inside it); new params and a new b compile nothing new."""
    f, model = GIVEN_CASES[name]
    model = f if model is None else model
    n = model.n_inputs
    params = model.init(jax.random.key(0), jnp.float64)
    x = normal(1, (3, n), jnp.float64)
    b = normal(2, (3, n), jnp.float64)
    sigma = normal(3, (3, n, 2), jnp.float64)  # per example
    started = []  # the drift each network pass started from
    forward, propagate = jprop.quantities._forward_laplacian._forward, jprop.Network.propagate

    def counted(*args, **kwargs):
        started.append(args[6] if len(args) > 6 else kwargs.get("b"))
        return forward(*args, **kwargs)

    def counted_layers(*args, **kwargs):
        started.append(kwargs.get("b"))
        return propagate(*args, **kwargs)

    monkeypatch.setattr(jprop.quantities._forward_laplacian, "_forward", counted)
    monkeypatch.setattr(jprop.Network, "propagate", counted_layers)
    keys = jax.random.split(jax.random.key(4), 3)  # a draw per example
    transforms = {
        "laplacian": lambda p, v, c: jprop.laplacian(f, drift="given")(p, v, c),
        "sigma": lambda p, v, c: jprop.hessian_trace(f, drift="given")(p, v, sigma, c),
        "chunks": lambda p, v, c: jprop.laplacian(f, tangent_chunk=2, drift="given")(p, v, c),
        "sparse, k = n": lambda p, v, c: jprop.laplacian(
            f, estimator="sparse", probes=n, drift="given"
        )(p, v, c, keys),
        # σ, b and keys all per example, in chunks of 2 examples (k = r: exact)
        "batch_size": lambda p, v, c: jprop.hessian_trace(
            f, drift="given", estimator="sparse", probes=2, batch_size=2
        )(p, v, sigma, c, keys),
    }

    def ours(p, v, c, labels=tuple(transforms)):
        return {label: transforms[label](p, v, c) for label in labels}

    def oracle(p, v, c, labels=tuple(transforms)):
        g = lambda xi: model(p, xi)  # noqa: E731
        c = jnp.broadcast_to(c, v.shape)
        value, slope = jax.vmap(lambda xi, ci: jax.jvp(g, (xi,), (ci,)))(v, c)
        h = jax.vmap(jax.hessian(g))(v)
        trace = jnp.einsum("bnr,bmnq,bqr->bm", sigma, h, sigma)
        every = {label: (value, slope, _laplacian(h)) for label in transforms}
        every["sigma"] = every["batch_size"] = (value, slope, trace)
        return {label: every[label] for label in labels}

    trained = ("laplacian", "sigma")
    tangents = (jax.tree.map(jnp.ones_like, params), jnp.cos(b))

    @functools.partial(jax.jit, static_argnums=0)  # one compiled program for each side
    def everything(fn, p, v, c):
        """The triples for b per example and shared, the gradient of a loss on them in (params,
        x, b), and their derivative along a direction in (params, b)."""
        grad = jax.grad(lambda *a: _triple_loss(fn(*a, trained)), argnums=(0, 1, 2))
        pushed = jax.jvp(lambda q, e: fn(q, v, e, ("laplacian",)), (p, c), tangents)[1]
        return [fn(p, v, c), fn(p, v, c[1])], grad(p, v, c), pushed["laplacian"]

    (got, mine, pushed), (want, theirs, pulled) = (
        everything(fn, params, x, b) for fn in (ours, oracle)
    )
    for field, triples, expected in zip(("per example", "shared"), got, want):
        for label in expected:
            for part, a, c in zip(("f", "b·∇f", "operator"), triples[label], expected[label]):
                assert_close(a, c, 1e-12, f"{label}, b {field}: {part}")
    fused = [s for s in started if s is not None]
    assert fused  # the network's own pass started from b
    for a, c in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
        assert_close(a, c, 1e-11, "gradient")
    assert float(jnp.max(jnp.abs(mine[2]))) > 1e-3  # b's gradient is not vacuous
    for a, c in zip(pushed, pulled):
        assert_close(a, c, 1e-11, "jvp")
    # the pass's derivative in b (the MLP's hand-written tangent pass, the Network's jet rules),
    # against float64 differences rather than another autodiff
    fd = central_differences(
        lambda c: _triple_loss(ours(params, x, c.reshape(b.shape), trained)), b.ravel()
    )
    assert_close(mine[2].ravel(), fd, 1e-7, "b vs differences")
    # saturated units in float32: the triple and its gradients stay finite
    low = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    huge, field = 1e4 * x.astype(jnp.float32), b.astype(jnp.float32)
    lap = jprop.laplacian(f, drift="given")
    value, grads = jax.jit(
        jax.value_and_grad(lambda p, c: _triple_loss({"": lap(p, huge, c)}), argnums=(0, 1))
    )(low, field)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))

    @jax.jit
    def mapped(params, x, b):  # a user's vmap over the examples, b per example and shared
        return (
            jax.vmap(lambda xi, ci: jprop.laplacian(f, drift="given")(params, xi, ci))(x, b),
            jax.vmap(lambda xi: jprop.laplacian(f, drift="given")(params, xi, b[1]))(x),
        )

    for label, triple, expected in zip(("vmap", "vmap, shared b"), mapped(params, x, b), want):
        for part, a, c in zip(("f", "b·∇f", "operator"), triple, expected["laplacian"]):
            assert_close(a, c, 1e-13, f"{label}: {part}")
    jprop.laplacian(f, drift="given")(params, x, b)
    scaled, doubled = jax.tree.map(lambda a: 1.5 * a, params), 2 * b
    before = compiles.count
    again = jprop.laplacian(f, drift="given")(scaled, x, doubled)
    assert compiles.count == before and not np.allclose(again[1], got[0]["laplacian"][1])
