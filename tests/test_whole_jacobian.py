"""Spectral norm and log|det J|: values against numpy's SVD and slogdet of the dense Jacobian,
gradients against jax.grad of those dense formulas, both roads, carried state, and clear errors."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from helpers import (
    ARCH_IDS,
    ARCHITECTURES,
    TOL_EXACT,
    assert_close,
    dense_jacobian,
    flat,
    normal,
    pair,
    params_and_input,
)
from jax.flatten_util import ravel_pytree

import jprop

BATCH = 3


def dense_reference(f, statistic):
    """Batch mean of statistic(J) and its gradient, by autodiff through the dense Jacobian."""
    return jax.jit(
        jax.value_and_grad(lambda p, x: jnp.mean(jax.vmap(statistic)(dense_jacobian(f, p, x)))),
        static_argnums=(),
    )


def spectral_pair(sn):
    """((value, grads), state) of a SpectralNorm: value_and_grad with the state as auxiliary."""

    def run(params, x, state):
        (value, state), grads = jax.jit(jax.value_and_grad(sn, has_aux=True))(params, x, state)
        return (value, grads), state

    return run


def top_singular_value(J):
    return jnp.linalg.svd(J, compute_uv=False)[0]


# ----------------------------------------------------------------------------------------------
# Spectral norm


# Every architecture once: σ₁ on five of them, ½σ₁² on the other three.
SQUARED = {2, 3, 6}
# Depth 1 to 4, a softmax and a logsig output, logsig hidden units, m = 1; three squared.
SPECTRAL_RUNS = (1, 2, 3, 4, 6)
SPECTRAL_CASES = [(ARCHITECTURES[i], i in SQUARED) for i in SPECTRAL_RUNS]
SPECTRAL_IDS = [("squared-" if i in SQUARED else "") + ARCH_IDS[i] for i in SPECTRAL_RUNS]


@pytest.mark.parametrize("net, squared", SPECTRAL_CASES, ids=SPECTRAL_IDS)
def test_spectral_norm_matches_svd_and_its_gradient(net, squared):
    params, x = params_and_input(net, jnp.float64, seed=3, batch=(BATCH,))
    sn = jprop.SpectralNorm(net, num_iterations=300, squared=squared)
    statistic = (lambda J: 0.5 * top_singular_value(J) ** 2) if squared else top_singular_value

    @jax.jit  # ours and the dense references in one compiled program
    def ours_and_references(params, x, start):
        sigma = jax.vmap(top_singular_value)(dense_jacobian(net, params, x))
        return (
            spectral_pair(sn)(params, x, start),
            sigma,
            dense_reference(net, statistic)(params, x),
        )

    start = sn.init(params, x, jax.random.key(0))
    ((value, grads), state), sigma, (ref_value, ref_grads) = ours_and_references(params, x, start)
    assert_close(state.sigma, sigma, 1e-9, "sigma")
    assert_close(value, ref_value, 1e-9, "value")
    assert_close(flat(grads), flat(ref_grads), 1e-7, "grads")


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_spectral_norm_roads_agree_for_the_same_state(dtype):
    net = jprop.MLP((4, 8, 6, 3))
    params, x = params_and_input(net, dtype, seed=1, batch=(BATCH,))
    results = {}
    for road in ["closed", "autodiff"]:
        sn = jprop.SpectralNorm(net, method=road, num_iterations=3)
        results[road] = spectral_pair(sn)(params, x, sn.init(params, x, jax.random.key(2)))
    (v_c, g_c), s_c = results["closed"]
    (v_a, g_a), s_a = results["autodiff"]
    assert_close(v_c, v_a, TOL_EXACT[dtype], "value")
    assert_close(flat(g_c), flat(g_a), TOL_EXACT[dtype], "grads")
    assert_close(s_c.u, s_a.u, TOL_EXACT[dtype], "u")


def test_spectral_state_carried_over_calls_equals_more_iterations():
    net = jprop.MLP((5, 7, 4))
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(BATCH,))
    one, five = jprop.SpectralNorm(net), jprop.SpectralNorm(net, num_iterations=5)
    start = one.init(params, x, jax.random.key(3))
    state = start
    for _ in range(5):
        (value, grads), state = spectral_pair(one)(params, x, state)
    (value5, grads5), state5 = spectral_pair(five)(params, x, start)
    assert_close(state.u, state5.u, 1e-12, "u")
    assert_close(value, value5, 1e-12, "value")
    assert_close(flat(grads), flat(grads5), 1e-12, "grads")


def test_equal_spectral_norms_share_one_program(compiles):
    """A SpectralNorm made anew with the same model and options (as a training loop written
    inline makes it) runs the first one's compiled program; other options get their own."""
    net = jprop.MLP((5, 7, 4))
    params, x = params_and_input(net, jnp.float32, seed=4, batch=(BATCH,))
    state = jprop.SpectralNorm(net).init(params, x, jax.random.key(3))
    first = jprop.SpectralNorm(net)(params, x, state)
    before = compiles.count
    again = [jprop.SpectralNorm(net)(params, x, state) for _ in range(2)]
    assert compiles.count == before
    assert_close(again[1][0], first[0], 0.0, "the same program")
    jprop.SpectralNorm(net, num_iterations=2)(params, x, state)
    assert compiles.count > before


def test_spectral_norm_on_the_generic_road_and_of_a_zero_jacobian():
    rbf = jprop.RBFNetwork(3, 5, 2)
    params = rbf.init(jax.random.key(0), jnp.float64)
    x = normal(1, (BATCH, 3), jnp.float64)
    sn = jprop.SpectralNorm(rbf, num_iterations=300)
    (value, grads), state = spectral_pair(sn)(params, x, sn.init(params, x, jax.random.key(2)))
    ref_value, ref_grads = dense_reference(rbf, top_singular_value)(params, x)
    assert_close(value, ref_value, 1e-9, "rbf value")
    assert_close(flat(grads), flat(ref_grads), 1e-7, "rbf grads")

    net = jprop.MLP((3, 4, 2))
    zero = jax.tree.map(jnp.zeros_like, net.init(jax.random.key(0), jnp.float64))
    sn = jprop.SpectralNorm(net)
    (value, grads), state = spectral_pair(sn)(zero, x, sn.init(zero, x, jax.random.key(2)))
    assert float(value) == 0.0 and bool(jnp.all(state.sigma == 0))
    assert bool(jnp.all(jnp.isfinite(flat(grads))))


def test_spectral_norm_errors():
    net = jprop.MLP((3, 4, 2))
    params, x = params_and_input(net, jnp.float32, batch=(BATCH,))
    sn = jprop.SpectralNorm(net)
    state = sn.init(params, x, jax.random.key(0))
    with pytest.raises(ValueError, match=r"`state.u` must have shape \(3, 2\); got \(3, 3\)"):
        sn(params, x, dataclasses.replace(state, u=jnp.ones((BATCH, 3))))
    with pytest.raises(ValueError, match=r"`state.v` must have shape \(3, 3\); got \(4, 3\)"):
        sn(params, x, dataclasses.replace(state, v=jnp.ones((4, 3))))
    with pytest.raises(ValueError, match=r"needs x of shape \(B, n\)"):
        sn(params, x[0], state)
    with pytest.raises(ValueError, match="`num_iterations` must be at least 1; got 0"):
        jprop.SpectralNorm(net, num_iterations=0)


# ----------------------------------------------------------------------------------------------
# log|det J|

SQUARE = [
    jprop.MLP((2, 6, 2)),
    jprop.MLP((3, 5, 4, 3), output="tansig"),
    jprop.MLP((4, 6, 4), activation="logsig", output="logsig"),
]


def log_abs_det(J):
    return jnp.linalg.slogdet(J)[1]


@pytest.mark.parametrize("method", ["closed", "autodiff"])
def test_log_abs_det_of_a_softmax_output_is_refused(method):
    # Its J is singular at every input (rows sum to 0): a finite value would be rounding noise.
    net = jprop.MLP((3, 5, 3), output="softmax")
    params, x = params_and_input(net, jnp.float32, seed=6, batch=(4,))
    with pytest.raises(ValueError, match="singular everywhere"):
        jprop.log_abs_det_jacobian(net, method=method)(params, x)


@pytest.mark.parametrize(  # the closed road in both dtypes; the autodiff road on the first net
    "net, road, dtype",
    [(net, "closed", dtype) for net in SQUARE for dtype in (jnp.float32, jnp.float64)]
    + [(SQUARE[0], "autodiff", jnp.float64)],
    ids=lambda v: "-".join(map(str, v.sizes)) if isinstance(v, jprop.MLP) else str(v),
)
def test_log_abs_det_matches_slogdet_and_its_gradient(net, road, dtype):
    params, x = params_and_input(net, dtype, seed=6, batch=(BATCH,))
    (value, grads), (ref_value, ref_grads) = jax.jit(  # one compiled program
        lambda p, x: (
            pair(jprop.log_abs_det_jacobian(net, method=road))(p, x),
            dense_reference(net, log_abs_det)(p, x),
        )
    )(params, x)
    tol = 1e-4 if dtype == jnp.float32 else 1e-10  # float32: an n × n inverse on top of the sums
    assert_close(value, ref_value, tol, "value")
    assert_close(flat(grads), flat(ref_grads), tol, "grads")


def test_log_abs_det_generic_road_and_singular_jacobian():
    rbf = jprop.RBFNetwork(2, 6, 2)
    params = rbf.init(jax.random.key(0), jnp.float64)
    x = normal(1, (BATCH, 2), jnp.float64)
    value, grads = pair(jprop.log_abs_det_jacobian(rbf))(params, x)
    ref_value, ref_grads = dense_reference(rbf, log_abs_det)(params, x)
    assert_close(value, ref_value, 1e-10, "rbf value")
    assert_close(flat(grads), flat(ref_grads), 1e-10, "rbf grads")

    net = jprop.MLP((2, 3, 2))
    zero = jax.tree.map(jnp.zeros_like, net.init(jax.random.key(0), jnp.float64))
    value, _ = pair(jprop.log_abs_det_jacobian(net))(zero, x)
    assert float(value) == -jnp.inf  # det J = 0 exactly


def test_log_abs_det_refuses_a_non_square_jacobian():
    net = jprop.MLP((3, 4, 2))
    params, x = params_and_input(net, jnp.float32, batch=(BATCH,))
    with pytest.raises(ValueError, match=r"needs a square Jacobian.*n = 3 inputs to m = 2 outputs"):
        pair(jprop.log_abs_det_jacobian(net))(params, x)


def test_gradients_against_float64_differences_of_the_dense_value():
    # Directional central differences of the batch mean of σ₁(J) and log|det J| over the weights.
    net = jprop.MLP((3, 6, 3), output="tansig")
    params, x = params_and_input(net, jnp.float64, seed=11, batch=(BATCH,))
    sn = jprop.SpectralNorm(net, num_iterations=300)
    (_, g_sigma), _ = spectral_pair(sn)(params, x, sn.init(params, x, jax.random.key(0)))
    _, g_logdet = pair(jprop.log_abs_det_jacobian(net))(params, x)
    flat_p, unravel = ravel_pytree(params)

    def mean_of(statistic):
        return jax.jit(lambda w: jnp.mean(jax.vmap(statistic)(dense_jacobian(net, unravel(w), x))))

    eps = 1e-6
    for statistic, grads in ((top_singular_value, g_sigma), (log_abs_det, g_logdet)):
        value = mean_of(statistic)
        for k in range(3):
            d = normal(20 + k, flat_p.shape)
            fd = (value(flat_p + eps * d) - value(flat_p - eps * d)) / (2 * eps)
            assert_close(flat(grads) @ d, fd, 1e-7, f"{statistic.__name__} along d{k}")
