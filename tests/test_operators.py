"""Second-order operators along input directions (`jprop.hessian_trace`), the exact Laplacian in
chunks of input tangents and the randomized estimators, on the three roads: a `jprop.MLP`'s
hand-written pass, a `jprop.Network`'s layer steps and folx for a plain function."""

from __future__ import annotations

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    assert_close,
    central_differences,
    cosines_like,
    first_tangents_by_slices,
    flat,
    normal,
)

import jprop
from jprop import layers
from jprop.quantities._operators import _draw

MLP = jprop.MLP((5, 7, 6, 2), activation=("tanh", "silu"))
NETWORK = jprop.Network(
    5,
    [
        jprop.layers.FourierFeatures(3),
        jprop.layers.Gates(6),
        jprop.layers.GatedDense(),
        jprop.layers.Dense(2, "identity"),
    ],
)


def _plain(p, x):  # the MLP written as a plain function: the generic road
    return MLP(p, x)


CASES = {"mlp": (MLP, MLP), "network": (NETWORK, NETWORK), "function": (_plain, MLP)}


def operator_case(name, batch=4):
    f, model = CASES[name]
    params = model.init(jax.random.key(0), jnp.float64)
    x = normal(1, (batch, 5), jnp.float64)
    hessians = jax.jit(jax.vmap(jax.hessian(lambda xi: model(params, xi))))(x)  # (B, m, n, n)
    return f, params, x, hessians


def _laplacian(hessians, dims=None):
    diagonal = jnp.diagonal(hessians, axis1=-2, axis2=-1)
    return jnp.sum(diagonal if dims is None else diagonal[..., list(dims)], -1)


@pytest.mark.parametrize("name", list(CASES))
def test_exact_operators_equal_the_hessians_trace(name):
    """tr(σσᵀH) for σ shared and per example, the Laplacian in chunks (with dims, with outputs),
    and the sparse estimator with every coordinate sampled, against jax.hessian in float64."""
    f, params, x, hessians = operator_case(name)
    sigma = normal(2, (5, 3), jnp.float64)
    per_example = normal(3, (4, 5, 3), jnp.float64)

    @jax.jit  # one program for all of them
    def ours(params, x, sigma, per_example):
        trace = jprop.hessian_trace(f)
        return {
            "shared sigma": trace(params, x, sigma),
            "shared sigma, outputs": jprop.hessian_trace(f, outputs=(1,))(params, x, sigma),
            "per-example sigma, chunked": jprop.hessian_trace(f, tangent_chunk=2)(
                params, x, per_example
            ),
            "one example": trace(params, x[0], per_example[0]),
            "chunks of 2 of 5": jprop.laplacian(f, tangent_chunk=2)(params, x),
            "chunked dims and outputs": jprop.laplacian(
                f, tangent_chunk=2, dims=(0, 2, 4), outputs=(1,)
            )(params, x),
            "sparse with k = n": jprop.laplacian(f, estimator="sparse", probes=5)(
                params, x, jax.random.key(4)
            ),
        }

    expected = jnp.einsum("bnr,bmnq,bqr->bm", per_example, hessians, per_example)
    want = {
        "shared sigma": jnp.einsum("nr,bmnq,qr->bm", sigma, hessians, sigma),
        "shared sigma, outputs": jnp.einsum("nr,bmnq,qr->bm", sigma, hessians, sigma)[:, 1:],
        "per-example sigma, chunked": expected,
        "one example": expected[0],
        "chunks of 2 of 5": _laplacian(hessians),
        "chunked dims and outputs": _laplacian(hessians, (0, 2, 4))[:, 1:],
        "sparse with k = n": _laplacian(hessians),
    }
    got = ours(params, x, sigma, per_example)
    for label in want:
        assert_close(got[label], want[label], 1e-12, label)


@pytest.mark.parametrize("name", ["mlp", "network"])  # the generic road: the diagonal's test
def test_chunks_train_as_the_whole(name):
    """jax.grad in params and x of a loss on the chunked Laplacian and on tr(σσᵀH) (also in σ)
    equals the unchunked one's."""
    f, params, x, _ = operator_case(name)
    sigma = normal(3, (4, 5, 3), jnp.float64)

    @functools.partial(jax.jit, static_argnames="tangent_chunk")
    def grads(tangent_chunk=None):
        options = {"tangent_chunk": tangent_chunk}
        lap = jprop.laplacian(f, **options)
        trace = jprop.hessian_trace(f, **options)
        return jax.grad(
            lambda p, v, s: jnp.sum(lap(p, v) ** 2) + jnp.sum(jnp.sin(trace(p, v, s))),
            argnums=(0, 1, 2),
        )(params, x, sigma)

    whole, chunked = grads(), grads(tangent_chunk=2)
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        assert_close(a, b, 1e-12, "gradient")
    # forward mode too: jax.jvp in the parameters and in σ
    tangents = (jax.tree.map(jnp.ones_like, params), jnp.ones_like(sigma))

    @functools.partial(jax.jit, static_argnames="tangent_chunk")
    def pushed(tangent_chunk=None):
        trace = jprop.hessian_trace(f, tangent_chunk=tangent_chunk)
        return jax.jvp(lambda p, s: trace(p, x, s), (params, sigma), tangents)[1]

    assert_close(pushed(tangent_chunk=2), pushed(), 1e-12, "jvp")


@pytest.mark.parametrize("name", list(CASES))
def test_the_hessian_diagonal_in_chunks(name):
    """hessian_diagonal with tangent_chunk (chunks of 2 of 3 chosen inputs, with outputs) equals
    jax.hessian's diagonal, and trains as the unchunked one does."""
    f, params, x, hessians = operator_case(name)
    dims, outputs = (0, 2, 3), (1,)
    expected = jnp.diagonal(hessians, axis1=-2, axis2=-1)[:, 1:, list(dims)]
    chunked = jprop.hessian_diagonal(f, tangent_chunk=2, dims=dims, outputs=outputs)
    whole = jprop.hessian_diagonal(f, dims=dims, outputs=outputs)
    loss = lambda fn: lambda p: jnp.sum(jnp.sin(fn(p, x)))  # noqa: E731

    @jax.jit  # the value and both gradients in one compiled program
    def everything(params):
        return chunked(params, x), jax.grad(loss(chunked))(params), jax.grad(loss(whole))(params)

    value, ours, theirs = everything(params)
    assert_close(value, expected, 1e-12, "chunked diagonal")
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert_close(a, b, 1e-12, "gradient")


@pytest.mark.parametrize("r", [3, 10])  # 10: more directions than the rule unrolls
def test_the_operators_gradient_is_autodiffs(r):
    """The MLP's hand-written rule for tr(σσᵀH) differentiated in params, x and a per-example σ
    (n × r) against jax.grad of the jax.hessian oracle."""
    f, params, x, _ = operator_case("mlp")
    sigma = normal(3, (4, 5, r), jnp.float64)

    def oracle(p, v, s):
        h = jax.vmap(jax.hessian(lambda xi: MLP(p, xi)))(v)
        return jnp.sum(jnp.einsum("bnr,bmnq,bqr->bm", s, h, s) ** 2)

    ours = jax.jit(
        jax.grad(lambda p, v, s: jnp.sum(jprop.hessian_trace(f)(p, v, s) ** 2), argnums=(0, 1, 2))
    )(params, x, sigma)
    expected = jax.jit(jax.grad(oracle, argnums=(0, 1, 2)))(params, x, sigma)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(expected)):
        assert_close(a, b, 1e-11, "gradient")


def test_the_first_layers_tangents_are_sliced_only_where_all_layers_tangents_are_large():
    """Slicing T¹ saves memory, not operations, so it is taken by the size of every hidden
    layer's tangents: the exact step over 100 inputs at a batch of 100 through four layers of 128
    (the high-dimensional benchmark's) slices, 32 inputs at 256 through three does not (the
    training-step benchmark's, whose temporaries are small), nor 16 probes at 100."""
    from jprop.quantities import _closed, _forward_laplacian

    def sliced(batch, k, widths):
        s1 = jnp.zeros((batch, widths[0]), jnp.float32)
        return _forward_laplacian.recomputed(s1, jnp.zeros((1, k, widths[0])), sum(widths))

    assert sliced(100, 100, (128,) * 4) == _closed.RULES_MAY_LOOP
    assert not sliced(256, 32, (128,) * 3)
    assert not sliced(100, 16, (128,) * 4)


@pytest.mark.parametrize("params_dtype", [jnp.float64, jnp.float32])
def test_the_first_layers_tangents_formed_by_slices_train_as_kept(
    monkeypatch, compiles, params_dtype
):
    """tr(σσᵀH) for a σ shared by the batch with more columns than the rule unrolls, its first
    layer's tangents formed again by slices of the batch (`FirstTangents`, forced on a small
    batch), differentiated in params, x and σ — σ moves the first layer's tangents too — against
    jax.grad of the jax.hessian oracle; with float32 weights and float64 x too (computed in their
    promotion). The gradient program compiles once for new inputs and a second build, and stays
    finite where every first-layer unit saturates (|x| = 1e4)."""
    net = jprop.MLP((10, 12, 5, 2), activation=("tanh", "silu"))
    params = net.init(jax.random.key(0), params_dtype)
    x, sigma = normal(1, (5, 10), jnp.float64), normal(2, (10, 9), jnp.float64)
    slices, sliced = first_tangents_by_slices(monkeypatch)

    def oracle(p, v, s):
        h = jax.vmap(jax.hessian(lambda xi: net(p, xi)))(v)
        return jnp.sum(jnp.sin(jnp.einsum("nr,bmnq,qr->bm", s, h, s)))

    def ours():  # a new build each time: the same program
        return jax.grad(
            lambda p, v, s: jnp.sum(jnp.sin(jprop.hessian_trace(net)(p, v, s))), (0, 1, 2)
        )

    got = ours()(params, x, sigma)
    expected = jax.jit(jax.grad(oracle, argnums=(0, 1, 2)))(params, x, sigma)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert a.dtype == b.dtype
        assert_close(a, b, 1e-11, "gradient")
    assert bool(slices) == sliced and all(shape == (5, 12) for shape in slices)
    far = 1e4 * x
    before = compiles.count
    saturated = ours()(params, far, sigma)
    assert compiles.count == before, "a new x and a second build compile nothing"
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(saturated))


@pytest.mark.parametrize("sizes", [(3, 5, 1), (4, 6, 5, 2), (7, 3, 4, 2)])
def test_the_operators_rule_against_float64_differences(sizes):
    """jax.grad of a loss on tr(σσᵀH) in the weights and in a per-example σ (the directions' own
    term of the rule), of a loss on a sparse estimate and of one on the exact Laplacian in the
    weights, against float64 central differences, on three shapes (the last with more inputs than
    first-layer units, where the Laplacian runs along the first layer's directions)."""
    net = jprop.MLP(sizes, activation="logsig", output="tansig")
    params = net.init(jax.random.key(0), jnp.float64)
    x = normal(1, (3, sizes[0]), jnp.float64)
    sigma = normal(2, (3, sizes[0], 2), jnp.float64)
    trace = jprop.hessian_trace(net)
    estimate = jprop.laplacian(net, estimator="sparse", probes=2)
    laplacian = jprop.laplacian(net)
    w, unravel = jax.flatten_util.ravel_pytree(params)
    losses = [
        (lambda p, s: jnp.sum(jnp.sin(trace(p, x, s))), True),
        (lambda p, s: jnp.sum(estimate(p, x, jax.random.key(3)) ** 2), False),
        (lambda p, s: jnp.sum(jnp.sin(laplacian(p, x))), False),
    ]
    for loss, in_sigma in losses:
        grads = jax.jit(jax.grad(loss, (0, 1)))(params, sigma)
        fd = central_differences(lambda v: loss(unravel(v), sigma), w)
        assert_close(flat(grads[0]), fd, 1e-7, "weights")
        if in_sigma:
            fds = central_differences(lambda v: loss(params, v.reshape(sigma.shape)), sigma.ravel())
            assert_close(grads[1].ravel(), fds, 1e-7, "sigma")


@pytest.mark.parametrize("name", ["mlp", "network"])
def test_saturated_units_give_finite_estimates_and_gradients(name):
    """At |x| = 1e4 every tanh unit saturates: the estimates, the operator, the diagonal's
    estimate, J-prop's E_v and E_u on the closed road, the Laplacian with its drift term, and
    their gradients stay finite, in float32 as users run them."""
    f, _ = CASES[name]
    params = f.init(jax.random.key(0), jnp.float32)
    x = 1e4 * jnp.sign(normal(1, (3, 5), jnp.float32))
    cases = {
        "rademacher estimate": (
            jprop.laplacian(f, estimator="rademacher", probes=3),
            (jax.random.key(2),),
        ),
        "operator in chunks": (
            jprop.hessian_trace(f, tangent_chunk=2),
            (jnp.ones((5, 3), jnp.float32),),
        ),
        "diagonal's estimate": (
            jprop.hessian_diagonal(f, estimator="rademacher", probes=2),
            (jax.random.key(3),),
        ),
        "E_v": (jprop.jprop_v(f, method="closed"), (x / 1e4, jnp.ones((3, 2), jnp.float32))),
        "E_u": (jprop.jprop_u(f, method="closed"), (jnp.ones((3, 2), jnp.float32), x / 1e4)),
        "f, x·∇f, Δf": (lambda p, x: jnp.stack(jprop.laplacian(f, drift="x")(p, x)), ()),
    }

    @jax.jit  # every value and gradient in one compiled program
    def everything(params):
        return {
            label: jax.value_and_grad(lambda p, t=transform, a=args: jnp.sum(t(p, x, *a) ** 2))(
                params
            )
            for label, (transform, args) in cases.items()
        }

    for label, (value, grads) in everything(params).items():
        assert np.isfinite(float(value)), label
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)), label


ESTIMATES = 3000


@pytest.mark.parametrize(
    "name, estimator",
    [("mlp", "sparse"), ("mlp", "rademacher"), ("function", "gaussian")],
)
def test_estimators_are_unbiased(name, estimator):
    """The mean of 3000 estimates (2 probes each, keys split from one) is within 5 standard errors
    of the exact Laplacian, and of tr(σσᵀH); the sample spread is that of the estimator."""
    f, params, x, hessians = operator_case(name, batch=2)
    sigma = normal(2, (5, 3), jnp.float64)
    keys = jax.random.split(jax.random.key(5), ESTIMATES)
    for transform, args, exact in [
        (jprop.laplacian(f, estimator=estimator, probes=2), (), _laplacian(hessians)),
        (
            jprop.hessian_trace(f, estimator=estimator, probes=2),
            (sigma,),
            jnp.einsum("nr,bmnq,qr->bm", sigma, hessians, sigma),
        ),
    ]:
        draws = jax.vmap(lambda k: transform(params, x, *args, k))(keys)
        mean, spread = jnp.mean(draws, 0), jnp.std(draws, 0)
        assert float(jnp.min(spread)) > 0, "the estimates do not vary with the key"
        gap = jnp.abs(mean - exact) / (spread / np.sqrt(ESTIMATES))
        assert float(jnp.max(gap)) < 5, (estimator, mean, exact, spread)


def test_rademacher_probes_are_independent_fair_signs():
    """The dense estimator's probes, 32 signs from each random word: exactly ±1 in the asked
    dtype, a count that is not a multiple of 32 cut to length, reproducible from the key and new
    for another; over 4,096 draws of 70 signs each sign's mean and the correlation of each pair
    (neighbours, across a word's boundary and 32 apart: the same bit of the next word) lie within
    5 standard errors (1/√4096) of 0."""
    draw = jax.jit(_draw, static_argnums=(0, 2, 3, 4))  # as inside a program, compiled once
    draws = np.asarray(draw("rademacher", jax.random.key(0), 4096, 70, jnp.float32))
    assert draws.shape == (4096, 70) and draws.dtype == np.float32
    assert set(np.unique(draws)) == {-1.0, 1.0}
    bound = 5 / np.sqrt(4096)
    assert np.max(np.abs(draws.mean(0))) < bound, "a sign is not fair"
    correlation = draws.T @ draws / 4096
    off = correlation[~np.eye(70, dtype=bool)]
    assert np.max(np.abs(off)) < bound, "signs are correlated"
    for i, j in ((0, 1), (31, 32), (0, 32), (5, 37), (63, 64)):
        assert abs(correlation[i, j]) < bound, (i, j)
    again = draw("rademacher", jax.random.key(0), 4096, 70, jnp.float32)
    np.testing.assert_array_equal(draws, again)
    assert (
        np.mean(draws != np.asarray(draw("rademacher", jax.random.key(1), 4096, 70, jnp.float32)))
        > 0.45
    )
    half = draw("rademacher", jax.random.key(0), 3, 33, jnp.bfloat16)
    assert half.dtype == jnp.bfloat16 and half.shape == (3, 33)
    assert set(np.unique(np.asarray(half, np.float32))) == {-1.0, 1.0}


def test_the_sparse_variance_is_the_diagonals_spread():
    """Sampling k of n coordinates without replacement: Var = n² σ_d²/k · (n − k)/(n − 1), with
    σ_d² the (population) variance of the Hessian's diagonal: the sample variance of 4000
    estimates within 15% of it; the Rademacher estimator's is 2 Σ_{a≠b} H_ab² / k."""
    f, params, x, hessians = operator_case("mlp", batch=1)
    keys = jax.random.split(jax.random.key(6), 4000)
    n, k = 5, 2
    diagonal = jnp.diagonal(hessians[0], axis1=-2, axis2=-1)  # (m, n)
    sparse = jprop.laplacian(f, estimator="sparse", probes=k)
    draws = jax.vmap(lambda key: sparse(params, x, key))(keys)[:, 0]
    expected = n**2 * jnp.var(diagonal, -1) / k * (n - k) / (n - 1)
    assert_close(jnp.var(draws, 0), expected, 0.15, "sparse variance")
    dense = jprop.laplacian(f, estimator="rademacher", probes=k)
    draws = jax.vmap(lambda key: dense(params, x, key))(keys)[:, 0]
    off = hessians[0] * (1 - jnp.eye(n))
    assert_close(jnp.var(draws, 0), 2 * jnp.sum(off**2, (-1, -2)) / k, 0.15, "Rademacher")


@pytest.mark.parametrize(
    "name, k, per_example",
    [("mlp", 3, False), ("function", 3, False), ("mlp", 12, True), ("function", 12, True)],
)
def test_the_dense_rule_is_the_gradient_of_nested_jvps_on_the_same_probes(name, k, per_example):
    """jax.grad of a loss on the Rademacher estimate equals jax.grad of the nested-jvp estimator
    a JAX user writes, with the probes the key draws: one key for the batch, or one per example
    with more probes than the rule unrolls."""
    f, params, x, _ = operator_case(name)
    draw = functools.partial(_draw, "rademacher", k=k, count=5, dtype=jnp.float64)
    if per_example:
        key = jax.random.split(jax.random.key(7), x.shape[0])
        probes = jax.vmap(lambda one_key: draw(one_key))(key)  # what the estimator draws
    else:
        key = jax.random.key(7)
        probes = jnp.broadcast_to(draw(key), (x.shape[0], k, 5))
    estimate = jprop.laplacian(f, estimator="rademacher", probes=k)

    def nested(p):
        def one(xi, directions):
            g = lambda v: MLP(p, v)  # noqa: E731
            second = lambda v, d: jax.jvp(lambda u: jax.jvp(g, (u,), (d,))[1], (v,), (d,))[1]  # noqa: E731
            return jnp.mean(jax.vmap(lambda d: second(xi, d))(directions), 0)

        return jnp.sum(jnp.tanh(jax.vmap(one)(x, probes)))

    ours = jax.jit(jax.grad(lambda p: jnp.sum(jnp.tanh(estimate(p, x, key)))))(params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(jax.jit(jax.grad(nested))(params))):
        assert_close(a, b, 1e-12, "gradient")


def test_keys_shared_or_per_example_and_no_recompiles(compiles):
    """A key of shape () draws once for the batch; keys with x's batch axes draw per example (the
    same as calling on each example with its key); a user's vmap over keys maps the draws; new
    keys, and a second build of the same transform, compile nothing new."""
    f, params, x, _ = operator_case("mlp", batch=3)
    before = compiles.count
    estimate = jprop.laplacian(f, estimator="sparse", probes=2)
    first = estimate(params, x, jax.random.key(0))
    for seed in range(1, 4):
        jprop.laplacian(f, estimator="sparse", probes=2)(params, x, jax.random.key(seed))
    assert compiles.count - before == 1
    shared = jnp.stack([estimate(params, x[i], jax.random.key(0)) for i in range(3)])
    assert_close(first, shared, 1e-14, "a shared key is one draw")
    keys = jax.random.split(jax.random.key(8), 3)
    per_example = estimate(params, x, keys)
    one_by_one = jnp.stack([estimate(params, x[i], keys[i]) for i in range(3)])
    assert_close(per_example, one_by_one, 1e-14, "per-example keys")
    mapped = jax.vmap(estimate, in_axes=(None, None, 0))(params, x, keys)
    each = jnp.stack([estimate(params, x, k) for k in keys])
    assert_close(mapped, each, 1e-14, "vmap over keys")
    raw = estimate(params, x, jax.random.PRNGKey(0))
    assert raw.shape == first.shape
    # the same for the Hessian diagonal's estimate
    before = compiles.count
    for seed in range(3):
        jprop.hessian_diagonal(f, estimator="rademacher", probes=2)(params, x, jax.random.key(seed))
    assert compiles.count - before == 1
    diagonal = jprop.hessian_diagonal(f, estimator="rademacher", probes=2)
    one_by_one = jnp.stack([diagonal(params, x[i], keys[i]) for i in range(3)])
    assert_close(diagonal(params, x, keys), one_by_one, 1e-14, "diagonal: per-example keys")
    mapped = jax.vmap(diagonal, in_axes=(None, None, 0))(params, x, keys)
    each = jnp.stack([diagonal(params, x, k) for k in keys])
    assert_close(mapped, each, 1e-14, "diagonal: vmap over keys")


def test_raw_keys_of_the_configured_prng_implementation():
    """Raw key data (`jax.random.PRNGKey`) is read with the PRNG implementation JAX is configured
    with: 4 words under "rbg", the same draws as its typed key, one or one per example; raw data
    of another length is refused with the length expected."""
    f, params, x, _ = operator_case("mlp", batch=3)
    with jax.default_prng_impl("rbg"):
        estimate = jprop.laplacian(f, estimator="sparse", probes=2)
        raw, typed = jax.random.PRNGKey(5), jax.random.key(5)
        assert raw.shape == (4,)
        assert_close(estimate(params, x, raw), estimate(params, x, typed), 0.0, "rbg raw key")
        per_example = jax.random.split(raw, 3)
        assert estimate(params, x, per_example).shape == (3, 2)
        with pytest.raises(TypeError, match=r"ending in shape \(4,\); got .* shape \(2,\)"):
            estimate(params, x, jnp.zeros(2, jnp.uint32))


def test_unbiased_square_is_unbiased_where_the_square_is_not():
    """E[(L̂₁ − g)(L̂₂ − g)] = (L − g)², while E[(L̂ − g)²] exceeds it by Var L̂."""
    f, params, x, hessians = operator_case("mlp", batch=1)
    target = _laplacian(hessians) + 0.05
    estimate = jprop.laplacian(f, estimator="rademacher", probes=1)
    keys = jax.random.split(jax.random.key(9), 6000)
    products = jax.vmap(
        lambda k: jprop.unbiased_square(lambda kk: estimate(params, x, kk) - target, k)
    )(keys)
    squares = jax.vmap(lambda k: (estimate(params, x, k) - target) ** 2)(keys)
    truth = (_laplacian(hessians) - target) ** 2
    standard_error = jnp.std(products, 0) / np.sqrt(len(keys))
    assert float(jnp.max(jnp.abs(jnp.mean(products, 0) - truth) / standard_error)) < 5
    assert float(jnp.min(jnp.mean(squares, 0) - truth)) > 10 * float(jnp.max(standard_error))


def test_roads_name_their_estimator():
    for estimator, words in [("sparse", "without replacement"), ("rademacher", "Rademacher")]:
        for f, road in [(MLP, "closed"), (NETWORK, "closed"), (_plain, "autodiff")]:
            chosen = jprop.road(f, "laplacian", estimator=estimator)
            assert chosen.road == road and words in chosen.reason, chosen
    assert "folx" in jprop.road(_plain, "hessian_trace").reason
    softmax = jprop.MLP((3, 6, 4), output="softmax")
    assert jprop.road(softmax, "hessian_trace").road == "autodiff"
    # a softmax's exact Laplacian is closed (the sum over units), but in chunks it runs folx
    assert jprop.road(softmax, "laplacian").road == "closed"
    chunked = jprop.road(softmax, "hessian_diagonal", tangent_chunk=2)
    assert chunked.road == "autodiff" and chunked.reason.startswith("in chunks")
    with pytest.raises(ValueError, match="`estimator` applies to"):
        jprop.road(MLP, "hessian", estimator="rademacher")


@pytest.mark.parametrize("name, estimator", [("mlp", "rademacher"), ("function", "gaussian")])
def test_the_diagonal_estimate_is_unbiased_with_the_stated_variance(name, estimator):
    """E[v ⊙ ∇²f v] is the Hessian's diagonal: the mean of 3000 estimates (2 probes each) within
    5 standard errors of it; the sample variance within 15% of Σ_{j≠i} H_ij²/k (Rademacher), or
    (2 H_ii² + Σ_{j≠i} H_ij²)/k (Gaussian)."""
    f, params, x, hessians = operator_case(name, batch=2)
    k = 2
    transform = jprop.hessian_diagonal(f, estimator=estimator, probes=k)
    keys = jax.random.split(jax.random.key(7), ESTIMATES)
    draws = jax.jit(jax.vmap(lambda key: transform(params, x, key)))(keys)
    diagonal = jnp.diagonal(hessians, axis1=-2, axis2=-1)
    mean, spread = jnp.mean(draws, 0), jnp.std(draws, 0)
    gap = jnp.abs(mean - diagonal) / (spread / np.sqrt(ESTIMATES))
    assert float(jnp.max(gap)) < 5, (mean, diagonal)
    off = jnp.sum(hessians**2, -1) - diagonal**2
    variance = (off if estimator == "rademacher" else off + 2 * diagonal**2) / k
    assert_close(jnp.var(draws, 0), variance, 0.15, "variance")


def test_the_diagonal_estimates_rule_is_autodiffs_on_the_same_probes():
    """With dims, outputs and a key per example: the estimate is the mean of v ⊙ H v over the
    Rademacher probes its key draws, and jax.grad in params and x of a loss on it runs the
    Hessian-vector product's hand-written rule, equal to the autodiff road's on the same key."""
    f, params, x, hessians = operator_case("mlp")
    dims, outputs, k = (0, 2, 3), (1,), 3
    keys = jax.random.split(jax.random.key(8), x.shape[0])

    def estimate(method):
        return jprop.hessian_diagonal(
            f, method=method, estimator="rademacher", probes=k, dims=dims, outputs=outputs
        )

    draw = jax.jit(jax.vmap(lambda key: _draw("rademacher", key, k, len(dims), jnp.float64)))
    probes = np.asarray(draw(keys))  # the oracle in NumPy (eager jnp compiles each operation)
    h = np.asarray(hessians)[:, 1][:, :, list(dims)][:, list(dims)]  # (B, 3, 3): output 1 over dims
    expected = np.mean(probes * np.einsum("bij,bpj->bpi", h, probes), axis=1)[:, None]
    assert_close(estimate("closed")(params, x, keys), expected, 1e-12, "v ⊙ Hv")

    @jax.jit
    def grads(params, x):
        return [
            jax.grad(lambda p, v: jnp.sum(jnp.sin(estimate(m)(p, v, keys))), (0, 1))(params, x)
            for m in ("closed", "autodiff")
        ]

    ours, theirs = grads(params, x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert_close(a, b, 1e-12, "gradient")
    assert jprop.road(f, "hessian_diagonal", estimator="rademacher").road == "closed"
    assert "v ⊙ ∇²f v" in jprop.road(f, "hessian_diagonal", estimator="rademacher").reason


def test_bad_options_and_arguments_are_refused():
    f, params, x, _ = operator_case("mlp")
    with pytest.raises(ValueError, match=r"`drift` must be None .* or \"given\".*got 'v'"):
        jprop.hessian_trace(MLP, drift="v")
    with pytest.raises(
        ValueError, match=r"`drift` must be None .*got an array of shape \(4, 5\); a field b"
    ):
        jprop.laplacian(f, drift=x)  # the field goes to the call, with drift="given"
    with pytest.raises(ValueError, match=r"`b`, the direction .*\(5,\).*\(4, 5\); got \(4, 4\)"):
        jprop.laplacian(f, drift="given")(params, x, x[:, :4])
    with pytest.raises(TypeError, match="`b` must have a floating dtype"):
        jprop.laplacian(f, drift="given")(params, x, jnp.ones(5, jnp.int32))
    with pytest.raises(TypeError, match=r"expected arguments \(params, x, sigma, b, key\)"):
        jprop.hessian_trace(f, drift="given", estimator="sparse", probes=2)(params, x, x)
    with pytest.raises(ValueError, match="needs `probes`"):
        jprop.laplacian(f, estimator="sparse")
    with pytest.raises(ValueError, match="pass estimator="):
        jprop.laplacian(f, probes=3)
    with pytest.raises(ValueError, match="unknown estimator 'hutchinson'"):
        jprop.laplacian(f, estimator="hutchinson", probes=3)
    with pytest.raises(ValueError, match="probes=6 exceeds the 5 coordinates"):
        jprop.laplacian(f, estimator="sparse", probes=6)(params, x, jax.random.key(0))
    with pytest.raises(ValueError, match=r"probes=3 exceeds the 2 coordinates"):
        jprop.laplacian(f, dims=(0, 1), estimator="sparse", probes=3)(params, x, jax.random.key(0))
    with pytest.raises(TypeError, match="must be a JAX PRNG key"):
        jprop.laplacian(f, estimator="gaussian", probes=3)(params, x, 0)
    with pytest.raises(ValueError, match=r"`key` must have shape \(\)"):
        jprop.laplacian(f, estimator="gaussian", probes=3)(
            params, x, jax.random.split(jax.random.key(0), 3)
        )
    with pytest.raises(TypeError, match=r"expected arguments \(params, x, key\)"):
        jprop.laplacian(f, estimator="gaussian", probes=3)(params, x)
    with pytest.raises(ValueError, match=r"`sigma` must have shape \(n, r\) = \(5, r\)"):
        jprop.hessian_trace(f)(params, x, jnp.ones((4, 3)))
    with pytest.raises(TypeError, match="`sigma` must have a floating dtype"):
        jprop.hessian_trace(f)(params, x, jnp.ones((5, 3), jnp.int32))
    with pytest.raises(ValueError, match="tangent_chunk"):
        jprop.laplacian(f, tangent_chunk=0)
    with pytest.raises(ValueError, match="pass those coordinates as dims="):
        jprop.hessian_diagonal(f, estimator="sparse", probes=2)
    with pytest.raises(ValueError, match="Pass one of them"):
        jprop.hessian_diagonal(f, estimator="rademacher", probes=2, tangent_chunk=2)
    with pytest.raises(ValueError, match=r"`key` must have shape \(\)"):
        jprop.hessian_diagonal(f, estimator="gaussian", probes=2)(
            params, x, jax.random.split(jax.random.key(0), 3)
        )
    with pytest.raises(ValueError, match="diagonal's estimate takes estimator='rademacher'"):
        jprop.road(f, "hessian_diagonal", estimator="sparse")
    with pytest.raises(ValueError, match="sparse.*probes ≤ 3"):
        jprop.hessian_trace(f, estimator="sparse", probes=4)(
            params, x, jnp.ones((5, 3)), jax.random.key(0)
        )


def test_tangent_chunks_bound_the_compiled_programs_memory():
    """The equality tests would pass if tangent_chunk were ignored; this one would not: for
    jax.grad of a loss on the Laplacian of a modified MLP (its gates read the 512 inputs, so all
    512 tangents run) and on an MLP's Hessian diagonal, the temporaries of the compiled program
    (XLA's account) in chunks of 32 tangents are under a quarter of the unchunked program's. An
    MLP's Laplacian, and that of the Network of its layers, need no chunks there: they run along
    the first layer's 64 directions, under a quarter of tr(σσᵀH) with σ = I given per example
    (which pushes all 512)."""
    net = jprop.MLP((512, 64, 64, 1))
    gated = jprop.modified_mlp(512, 1, width=32, depth=1)
    params = net.init(jax.random.key(0), jnp.float32)
    x = normal(1, (16, 512), jnp.float32)

    def temporaries(loss, params=params):
        compiled = jax.jit(jax.grad(loss)).lower(params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    def squared(transform, f, **options):
        return lambda p: jnp.sum(transform(f, **options)(p, x) ** 2)

    gated_params = gated.init(jax.random.key(2), jnp.float32)
    for transform, f, p in (
        (jprop.laplacian, gated, gated_params),
        (jprop.hessian_diagonal, net, params),
    ):
        whole = temporaries(squared(transform, f), p)
        chunked = temporaries(squared(transform, f, tangent_chunk=32), p)
        assert chunked < whole / 4, (transform.__name__, chunked, whole)
    eye = jnp.broadcast_to(jnp.eye(512, dtype=jnp.float32), (16, 512, 512))
    pushed = temporaries(lambda p: jnp.sum(jprop.hessian_trace(net)(p, x, eye) ** 2))
    for f in (net, net.as_network()):
        assert temporaries(squared(jprop.laplacian, f)) < pushed / 4, f


def test_more_inputs_than_first_units_run_along_as_many_directions(monkeypatch):
    """Over k inputs (or directions) more than the first layer's h₁ units, an MLP's Laplacian runs
    along h₁ directions with the same first-layer Gram matrix: exact in value, in the gradient
    in (params, x, σ) and in the Hessian over the params times a direction (through the Cholesky
    factor's derivative), against the autodiff road in float64; a first layer whose directions'
    Gram matrix has no Cholesky factor (all zero, or one unit without weights) keeps the value
    and the gradient exact and finite. A counter shows the path runs."""
    from jprop.quantities import _forward_laplacian

    calls = []
    original = _forward_laplacian.fewer_directions
    monkeypatch.setattr(
        _forward_laplacian,
        "fewer_directions",
        lambda *args: calls.append(args[1]) or original(*args),
    )
    net = jprop.MLP((12, 5, 4, 2), activation=("tanh", "silu"))
    n, h = 12, 5
    params = net.init(jax.random.key(0), jnp.float64)
    x = normal(1, (3, n), jnp.float64)
    sigma = normal(2, (n, h + 3), jnp.float64)
    dims = tuple(range(0, n, 1))[1 : h + 3]
    cases = {  # coordinates, in chunks, vectors (a σ shared by the batch) and probes
        "dims": lambda m: lambda p, x, s: jprop.laplacian(net, dims=dims, method=m)(p, x),
        "chunks": lambda m: lambda p, x, s: jprop.laplacian(net, tangent_chunk=2, method=m)(p, x),
        "sigma": lambda m: lambda p, x, s: jprop.hessian_trace(net, method=m)(p, x, s),
        "probes": lambda m: (
            lambda p, x, s: jprop.laplacian(  # h + 3 drawn once for the batch
                net, estimator="rademacher", probes=h + 3, method=m
            )(p, x, jax.random.key(4))
        ),
    }
    zero_first = [{"W": jnp.zeros_like(params[0]["W"]), "b": params[0]["b"]}, *params[1:]]
    # one unit without weights: the directions' Gram matrix has a zero row, so no Cholesky factor
    # whatever the rounding, but the Laplacian is not zero (as the all-zero layer's is, along any
    # directions, so that a wrong basis would pass there)
    dead_unit = [{"W": params[0]["W"].at[-1].set(0.0), "b": params[0]["b"]}, *params[1:]]
    for name, case in cases.items():
        calls.clear()

        def loss(method, case=case):
            return lambda p, x, s: jnp.sum(jnp.sin(case(method)(p, x, s)))

        @jax.jit  # both roads' values and gradients in one program
        def both(params, x, sigma, case=case, loss=loss):
            return [
                (case(m)(params, x, sigma), jax.grad(loss(m), (0, 1, 2))(params, x, sigma))
                for m in ("closed", "autodiff")
            ]

        (value, ours), (expected, theirs) = both(params, x, sigma)
        assert_close(value, expected, 1e-13, f"{name}: value")
        assert calls, f"{name}: the h₁ directions did not run"
        assert_close(flat(ours), flat(theirs), 1e-12, f"{name}: gradient")
        if name == "dims":  # second order, through the Cholesky factor's derivative

            @functools.partial(jax.jit, static_argnums=0)
            def along(method, direction):  # the Hessian in the params times a direction
                grad = jax.grad(loss(method))
                return jax.jvp(lambda q: grad(q, x, sigma), (params,), (direction,))[1]

            ours, theirs = (along(m, cosines_like(params)) for m in ("closed", "autodiff"))
            assert_close(flat(ours), flat(theirs), 1e-11, f"{name}: Hessian in the params")
        if name == "dims":  # no Cholesky factor: the rows' basis held fixed

            @jax.jit  # both layers on both roads, in one compiled program
            def degenerate(x, sigma, loss=loss):
                return [
                    [jax.value_and_grad(loss(m))(first, x, sigma) for m in ("closed", "autodiff")]
                    for first in (zero_first, dead_unit)
                ]

            labels = ("an all-zero first layer", "a dead unit")
            for label, (ours, theirs) in zip(labels, degenerate(x, sigma)):
                assert np.all(np.isfinite(flat(ours)))
                assert_close(flat(ours), flat(theirs), 1e-12, f"{name}: {label}")
    # half precision: the directions are factored in float32 (LAPACK has no bfloat16)
    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, x))
    lap = jprop.laplacian(net)(*half)
    assert lap.dtype == jnp.bfloat16
    assert_close(lap.astype(jnp.float64), jprop.laplacian(net)(params, x), 0.05, floor=1.0)


DENSE_FIRST = {  # a factorised Dense then a residual block; a Dense then gates and a PirateNet block
    "residual": [layers.Dense(4, factorised=True), layers.Residual(), layers.Dense(2, "identity")],
    "pirate": [layers.Dense(4), layers.Gates(4), layers.PirateBlock(), layers.Dense(2, "identity")],
}


@pytest.mark.parametrize("name", list(DENSE_FIRST))
def test_a_network_read_through_a_dense_layer_runs_along_its_units(monkeypatch, compiles, name):
    """A Network whose first layer is Dense has the MLP's structure at the input: over more
    inputs or shared directions than that layer's units, its Laplacian, its Laplacian over `dims`
    and tr(σσᵀH) run along that many directions, exact in value and in the gradient in
    (params, x, σ) against the autodiff road in float64, and the weight gradient against float64
    central differences (chunks and shared probes reach the same code as the MLP's, tested with
    it); a counter shows the path runs, and `road` says so;
    built again and called with new parameters, it does not compile again; bfloat16 weights and
    saturated units stay accurate and finite. A Network read through Fourier features does not
    take it."""
    from jprop.quantities import _forward_laplacian

    calls = []
    original = _forward_laplacian.fewer_directions
    monkeypatch.setattr(
        _forward_laplacian,
        "fewer_directions",
        lambda *args: calls.append(args[0].shape) or original(*args),
    )
    net = jprop.Network(9, DENSE_FIRST[name])
    params = net.init(jax.random.key(0), jnp.float64)
    params = [{**p, "alpha": jnp.asarray(0.6)} if "alpha" in p else p for p in params]
    x = normal(1, (3, 9), jnp.float64)
    sigma = normal(2, (9, 6), jnp.float64)
    dims = (0, 2, 3, 5, 6, 8)
    cases = {
        "all": lambda m: lambda p, x, s: jprop.laplacian(net, method=m)(p, x),
        "dims": lambda m: lambda p, x, s: jprop.laplacian(net, dims=dims, method=m)(p, x),
        "chunks": lambda m: lambda p, x, s: jprop.laplacian(net, tangent_chunk=2, method=m)(p, x),
        "sigma": lambda m: lambda p, x, s: jprop.hessian_trace(net, method=m)(p, x, s),
        "probes": lambda m: (
            lambda p, x, s: jprop.laplacian(  # 6 drawn once for the batch
                net, estimator="rademacher", probes=6, method=m
            )(p, x, jax.random.key(4))
        ),
    }
    # chunks and shared probes take the MLP's code for the directions (tested with it); the
    # PirateNet adds gates and a skip after the Dense layer
    cases = {
        k: cases[k] for k in (("all", "dims", "sigma") if name == "residual" else ("all", "sigma"))
    }

    ran = {}  # (case, road) -> the first-layer directions built while tracing it

    @jax.jit
    def both(params, x, sigma):
        loss = lambda case: lambda p, x, s: jnp.sum(jnp.sin(case(p, x, s)))  # noqa: E731
        out = {}
        for name, case in cases.items():
            for m in ("closed", "autodiff"):
                calls.clear()
                grads = jax.grad(loss(case(m)), (0, 1, 2))(params, x, sigma)
                out.setdefault(name, []).append((case(m)(params, x, sigma), grads))
                ran[name, m] = list(calls)
        return out

    for name, (ours, theirs) in both(params, x, sigma).items():
        assert_close(ours[0], theirs[0], 1e-13, f"{name}: value")
        assert_close(flat(ours[1]), flat(theirs[1]), 1e-12, f"{name}: gradient")
        assert ran[name, "closed"] and set(ran[name, "closed"]) == {(4, 9)}, (name, ran)
        assert not ran[name, "autodiff"], (name, ran)
    w, unravel = jax.flatten_util.ravel_pytree(params)
    loss = lambda p: jnp.sum(jnp.sin(jprop.laplacian(net)(p, x)))  # noqa: E731
    fd = central_differences(lambda v: loss(unravel(v)), w)
    assert_close(flat(jax.jit(jax.grad(loss))(params)), fd, 1e-7, "weights vs differences")
    scaled = jax.tree.map(lambda a: 1.5 * a, params)
    first = jprop.laplacian(net)(params, x)
    compiled = compiles.count
    again = jprop.laplacian(net)(scaled, x)
    assert compiles.count == compiled and not np.allclose(again, first)
    # bfloat16 weights with float32 inputs compute in float32 (the directions too); saturated
    # units (|x| = 1e4, float32) keep the value and the gradient finite
    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    x32 = x.astype(jnp.float32)
    reference = jprop.laplacian(net, method="autodiff")(
        jax.tree.map(lambda a: a.astype(jnp.float64), half), x32.astype(jnp.float64)
    )
    lap = jprop.laplacian(net)(half, x32)
    assert lap.dtype == jnp.float32
    assert_close(lap.astype(jnp.float64), reference, 1e-5)
    huge = 1e4 * jnp.sign(x32)
    value, grads = jax.jit(
        jax.value_and_grad(lambda p: jnp.sum(jprop.laplacian(net)(p, huge) ** 2))
    )(jax.tree.map(lambda a: a.astype(jnp.float32), params))
    assert np.isfinite(value) and np.all(np.isfinite(flat(grads)))
    assert "run as 4 directions" in jprop.road(net, "laplacian").reason
    assert "run as 4 directions" in jprop.road(net, "hessian_trace").reason
    fourier = jprop.Network(9, [layers.FourierFeatures(2), layers.Dense(2, "identity")])
    assert "directions" not in jprop.road(fourier, "laplacian").reason


def test_the_first_layers_directions_compile_once_and_stay_finite(compiles):
    """The Laplacian of an MLP with more inputs than first-layer units: built twice and called
    with new parameters, one compilation; jax.jvp in the parameters equals the autodiff road's;
    saturated units (|x| = 1e4, float32) keep the value and the gradient finite."""
    net = jprop.MLP((12, 5, 4, 2), activation=("tanh", "silu"))
    params = net.init(jax.random.key(0), jnp.float32)
    x = normal(1, (3, 12), jnp.float32)
    before = compiles.count
    for seed in range(3):
        jprop.laplacian(net)(net.init(jax.random.key(seed), jnp.float32), x)
    assert compiles.count - before == 1
    tangent = jax.tree.map(jnp.ones_like, params)
    ours = jax.jvp(lambda p: jprop.laplacian(net)(p, x), (params,), (tangent,))[1]
    theirs = jax.jvp(
        lambda p: jprop.laplacian(net, method="autodiff")(p, x), (params,), (tangent,)
    )[1]
    assert_close(ours, theirs, 1e-4, "jvp in the parameters")
    huge = 1e4 * x
    value, grads = jax.jit(
        jax.value_and_grad(lambda p: jnp.sum(jprop.laplacian(net)(p, huge) ** 2))
    )(params)
    assert np.isfinite(value) and np.all(np.isfinite(flat(grads)))


DRIFT_CASES = {
    # more inputs (6) than first units (4), a tanh output: the first-layer directions and the
    # pass's nonlinear last layer
    "mlp": (jprop.MLP((6, 4, 5, 2), activation=("tanh", "silu"), output="tanh"), None),
    # fewer inputs than first units, a linear output: the PINN's usual shape
    "mlp, few inputs": (jprop.MLP((3, 6, 5, 2)), None),
    "network": CASES["network"],
    # a Dense first (6 inputs over its 4 units), then gates and a PirateNet block
    "network, dense first": (jprop.Network(6, DENSE_FIRST["pirate"]), None),
}  # (a plain function takes f and x·∇f from jax.jvp, as the MLP's chunks do)


def _triple_loss(results):
    """A scalar that reads every part of each (f, drift term, operator) triple nonlinearly."""
    total = 0.0
    for value, slope, operator in results.values():
        total = total + jnp.sum(jnp.sin(value) * slope + operator * value + 0.5 * slope**2)
    return total


@pytest.mark.parametrize("name", list(DRIFT_CASES))
def test_drift_gives_the_value_and_the_derivative_along_x_in_the_same_pass(
    monkeypatch, compiles, name
):
    """`drift="x"` returns (f, x·∇f, the operator) for the exact Laplacian (with dims and
    outputs), tangent chunks and tr(σσᵀH) with a per-example σ; values and gradients in params and
    x, and forward mode in params, against f, jax.jvp along x and jax.hessian in float64. On an
    MLP or a Network the three come from its own pass (counted inside it). A user's vmap, and a
    second build called with new parameters (no new compilation)."""
    f, model = DRIFT_CASES[name]
    model = f if model is None else model
    n = model.n_inputs
    params = model.init(jax.random.key(0), jnp.float64)
    x = normal(1, (3, n), jnp.float64)
    sigma = normal(2, (3, n, 2), jnp.float64)
    fused = []  # whether a network's own pass was asked for x·∇f
    forward = jprop.quantities._forward_laplacian._forward
    propagate = jprop.Network.propagate

    def counted(*args, **kwargs):
        fused.append(bool(kwargs.get("drift", args[5] if len(args) > 5 else False)))
        return forward(*args, **kwargs)

    def counted_layers(*args, **kwargs):
        fused.append(bool(kwargs.get("drift", False)))
        return propagate(*args, **kwargs)

    monkeypatch.setattr(jprop.quantities._forward_laplacian, "_forward", counted)
    monkeypatch.setattr(jprop.Network, "propagate", counted_layers)

    transforms = {
        "laplacian": lambda p, v: jprop.laplacian(f, drift="x")(p, v),
        "dims, outputs": lambda p, v: jprop.laplacian(f, dims=(0, 2), outputs=(1,), drift="x")(
            p, v
        ),
        "chunks": lambda p, v: jprop.laplacian(f, tangent_chunk=2, drift="x")(p, v),
        "sigma": lambda p, v: jprop.hessian_trace(f, drift="x")(p, v, sigma),
    }

    def ours(p, v, labels=tuple(transforms)):
        return {label: transforms[label](p, v) for label in labels}

    def oracle(p, v, labels=tuple(transforms)):
        g = lambda xi: model(p, xi)  # noqa: E731
        value, slope = jax.vmap(lambda xi: jax.jvp(g, (xi,), (xi,)))(v)
        h = jax.vmap(jax.hessian(g))(v)
        lap, two = _laplacian(h), _laplacian(h, (0, 2))[:, 1:]
        trace = jnp.einsum("bnr,bmnq,bqr->bm", sigma, h, sigma)
        every = {
            "laplacian": (value, slope, lap),
            "dims, outputs": (value[:, 1:], slope[:, 1:], two),
            "chunks": (value, slope, lap),
            "sigma": (value, slope, trace),
        }
        return {label: every[label] for label in labels}

    trained = ("laplacian", "sigma")  # directions shared (the inputs) and per example (σ)
    tangent = jax.tree.map(jnp.ones_like, params)

    @functools.partial(jax.jit, static_argnums=0)  # one compiled program for each side
    def everything(fn, p, v):
        """The triples, the gradient of a loss on them in (params, x), and the Laplacian's triple
        along a direction in the params."""
        grad = jax.grad(lambda p, v: _triple_loss(fn(p, v, trained)), argnums=(0, 1))
        pushed = jax.jvp(lambda q: fn(q, v, ("laplacian",)), (p,), (tangent,))[1]
        return fn(p, v), grad(p, v), pushed["laplacian"]

    (got, mine, pushed), (want, theirs, pulled) = (
        everything(fn, params, x) for fn in (ours, oracle)
    )
    for label in want:
        for part, a, b in zip(("f", "x·∇f", "operator"), got[label], want[label]):
            assert_close(a, b, 1e-12, f"{label}: {part}")
    assert any(fused) == (f is model)  # the network's own pass carried f and x·∇f
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs)):
        assert_close(a, b, 1e-11, "gradient")
    for a, b in zip(pushed, pulled):
        assert_close(a, b, 1e-11, "jvp")
    if isinstance(f, jprop.MLP):  # the hand-written tangent pass, against float64 differences
        w, unravel = jax.flatten_util.ravel_pytree(params)
        fd = central_differences(lambda v: _triple_loss(ours(unravel(v), x, trained)), w)
        assert_close(flat(mine[0]), fd, 1e-7, "weights vs differences")
    if isinstance(f, jprop.MLP):  # the triple in chunks of examples, and per-example keys
        chunked = jprop.laplacian(f, drift="x", batch_size=2)(params, x)  # 3 = 2 + 1
        keys = jax.random.split(jax.random.key(5), x.shape[0])
        sampled = jprop.laplacian(f, estimator="sparse", probes=n, drift="x")(params, x, keys)
        for label, triple in (("batch_size", chunked), ("per-example keys, k = n", sampled)):
            for part, a, b in zip(("f", "x·∇f", "operator"), triple, got["laplacian"]):
                assert_close(a, b, 1e-12, f"{label}: {part}")
    # a user's vmap over the examples joins the batch; built again with new parameters, and
    # called eagerly, the transform compiles nothing new
    mapped = jax.vmap(lambda xi: jprop.laplacian(f, drift="x")(params, xi))(x)
    for part, a, b in zip(("f", "x·∇f", "operator"), mapped, got["laplacian"]):
        assert_close(a, b, 1e-13, f"vmap: {part}")
    jprop.laplacian(f, drift="x")(params, x)
    scaled = jax.tree.map(lambda a: 1.5 * a, params)
    before = compiles.count
    again = jprop.laplacian(f, drift="x")(scaled, x)
    assert compiles.count == before and not np.allclose(again[2], got["laplacian"][2])
