"""Chunked batches give the plain results: every batch transform with `batch_size` (the
input-derivative transforms are in test_transforms.py), with memory bounded by one chunk. Inputs
sharded over 8 simulated CPU devices are tested in user_lane/test_devices.py."""

import functools

import jax
import jax.numpy as jnp
import pytest
from helpers import (
    DEEP,
    SCALAR_OUT,
    SOFTMAX,
    assert_close,
    cosines_like,
    flat,
    normal,
    pair,
    params_and_input,
)

import jprop
from jprop._batch import strided_steps


def test_chunks_are_strided_when_the_batch_splits_evenly():
    # (examples, batch_size) -> steps: the fewest that divide the batch, each chunk at least half
    # of batch_size; None when the batch has no such split (contiguous chunks and a remainder).
    cases = {(12, 4): 3, (10, 4): 5, (4096, 128): 32, (11, 4): None, (13, 4): None, (8, 8): None}
    assert {case: strided_steps(*case) for case in cases} == cases


# 12 examples in batch_size 4 run as 3 strided steps; the composite objectives and weight curvature
# below take 11 (no even split: contiguous chunks of 4 and a remainder of 3).
@pytest.mark.parametrize("road", ["closed", "autodiff"])
def test_jprop_objectives_in_chunks_equal_the_whole_batch(road):
    net = DEEP
    params, x = params_and_input(net, jnp.float64, seed=9, batch=(12,))
    v = normal(30, x.shape)
    t = normal(31, (12, net.n_outputs))
    jobs = {
        name: lambda make=make, args=args, **kw: pair(make(net, method=road, **kw))(
            params, x, *args
        )
        for name, make, args in [
            ("jprop_v", jprop.jprop_v, (v, t)),
            ("double_backprop", jprop.double_backprop, (t, 0.5)),
        ]
    }
    for name, (chunked, whole) in chunked_and_whole(jobs).items():
        assert_close(chunked[0], whole[0], 1e-13, f"{name} value")
        assert_close(flat(chunked[1]), flat(whole[1]), 1e-13, name)
    with pytest.raises(ValueError, match="`batch_size` must be at least 1"):
        jprop.jprop_u(net, batch_size=0)


def chunked_and_whole(jobs):
    """name -> (the job with batch_size=4, without), every job in one compiled program."""
    return jax.jit(lambda: {name: (job(batch_size=4), job()) for name, job in jobs.items()})()


def test_composite_objectives_in_chunks_equal_the_whole_batch(road="closed"):
    """Tangent Prop, Sobolev targets, both Frobenius penalties, σ₁ (carried state) and log|det J|:
    11 examples in chunks of 4 (two chunks and a remainder of 3) against one call. (Both roads
    chunk through the same code, tested on each road by the test above.)"""
    net, square = SCALAR_OUT, jprop.MLP((3, 6, 3))
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(11,))
    sq_params, sq_x = params_and_input(square, jnp.float64, seed=5, batch=(11,))
    key = jax.random.key(8)  # the spectral norm's starting vector
    n, m = net.sizes[0], net.n_outputs
    tangents = normal(80, (11, 2, n))
    y = normal(81, (11, m))
    T = normal(82, (11, m, n))
    sn = lambda **kw: jprop.SpectralNorm(net, method=road, num_iterations=3, **kw)  # noqa: E731
    state = sn().init(params, x, key)
    jobs = {
        "tangent_prop": lambda **kw: pair(jprop.tangent_prop(net, method=road, **kw))(
            params, x, tangents
        ),
        "derivative_targets": lambda **kw: pair(jprop.derivative_targets(net, method=road, **kw))(
            params, x, y, T
        ),
        "jacobian_penalty": lambda **kw: pair(jprop.jacobian_penalty(net, method=road, **kw))(
            params, x
        ),
        "jacobian_penalty probes": lambda **kw: pair(
            jprop.jacobian_penalty(net, method=road, num_probes=3, **kw)
        )(params, x, key),
        "SpectralNorm": lambda **kw: jax.jit(jax.value_and_grad(sn(**kw), has_aux=True))(
            params, x, state
        ),
        "log_abs_det_jacobian": lambda **kw: pair(
            jprop.log_abs_det_jacobian(square, method=road, **kw)
        )(sq_params, sq_x),
    }
    for name, (chunked, whole) in chunked_and_whole(jobs).items():
        assert_close(flat(chunked), flat(whole), 1e-12, name)


def _eigen(pairs):
    """The numbers of a `jprop.Eigenpairs`: eigenvalues, eigenvectors and residuals."""
    return pairs.eigenvalues, pairs.eigenvectors, pairs.residuals


@pytest.mark.parametrize("road", ["closed", "autodiff"])
def test_weight_curvature_in_chunks_equals_the_whole_batch(road):
    """Every weight-space transform with batch_size=4 over 11 examples: the closed road on softmax
    cross-entropy, the autodiff road's own products on squared error."""
    net = SOFTMAX if road == "closed" else SCALAR_OUT
    params, x = params_and_input(net, jnp.float64, seed=6, batch=(11,))
    t = jax.nn.softmax(normal(7, (11, net.n_outputs)))
    loss = jprop.CrossEntropy(net) if road == "closed" else jprop.SquaredError(net)
    v = cosines_like(params)
    ops = {
        "weight_hessian_vector_product": lambda **kw: jprop.weight_hessian_vector_product(
            loss, method=road, **kw
        )(params, v, x, t),
        "gauss_newton_vector_product": lambda **kw: jprop.gauss_newton_vector_product(
            loss, method=road, **kw
        )(params, v, x, t),
    }
    if road == "closed":
        ops |= {
            "becker_lecun": lambda **kw: jprop.weight_hessian_diagonal(loss, **kw)(params, x, t),
            "weight_hessian": lambda **kw: jprop.weight_hessian(loss, **kw)(params, x, t),
            "gauss_newton": lambda **kw: jprop.gauss_newton(loss, **kw)(params, x, t),
            "curvature_along": lambda **kw: jprop.curvature_along(loss, **kw)(params, v, x, t),
            "top_eigenpairs": lambda **kw: _eigen(
                jprop.top_eigenpairs(loss, k=2, **kw)(params, x, t)
            ),
        }
    for name, (chunked, whole) in chunked_and_whole(ops).items():
        assert_close(flat(chunked), flat(whole), 1e-11, name)
    with pytest.raises(ValueError, match="batch_size needs a jprop.SquaredError"):
        jprop.weight_hessian_vector_product(lambda p, x: jnp.sum(x), batch_size=4)


def test_batch_size_bounds_the_compiled_programs_memory():
    """The equality tests above would pass if batch_size were ignored; this one would not. In
    chunks of 128, each transform family's temporaries (XLA's own account of the compiled
    program) grow from 1024 to 4096 examples by no more than twice the arguments do (input-sized
    copies: the strided view of x, the slices of T, a per-example value and its cotangent), and
    are a quarter or less of the unchunked program's."""
    net = jprop.MLP((3, 64, 64, 2))
    loss = jprop.SquaredError(net)
    jobs = {
        "hessian": lambda kw, p, x, t, T: jprop.hessian(net, **kw)(p, x),
        "grad of a loss on the laplacian": lambda kw, p, x, t, T: jax.grad(
            lambda q: jnp.mean(jprop.laplacian(net, **kw)(q, x) ** 2)
        )(p),
        "jprop_v": lambda kw, p, x, t, T: pair(jprop.jprop_v(net, method="closed", **kw))(
            p, x, x, t
        ),
        "derivative_targets": lambda kw, p, x, t, T: pair(jprop.derivative_targets(net, **kw))(
            p, x, t, T
        ),
        "weight_hessian_vector_product": lambda kw, p, x, t, T: jprop.weight_hessian_vector_product(
            loss, **kw
        )(p, p, x, t),
        "becker_lecun": lambda kw, p, x, t, T: jprop.weight_hessian_diagonal(loss, **kw)(p, x, t),
    }

    def temporaries(job, batch, **kw):
        params, x = params_and_input(net, jnp.float32, seed=2, batch=(batch,))
        t, T = jnp.zeros((batch, 2), jnp.float32), jnp.zeros((batch, 2, 3), jnp.float32)
        compiled = jax.jit(functools.partial(job, kw)).lower(params, x, t, T).compile()
        stats = compiled.memory_analysis()
        return stats.temp_size_in_bytes, stats.argument_size_in_bytes

    for name, job in jobs.items():
        (small, args_small), (large, args_large) = (
            temporaries(job, batch, batch_size=128) for batch in (1024, 4096)
        )
        whole = temporaries(job, 4096)[0]
        report = f"{name}: chunked {small} -> {large} bytes, whole {whole}"
        assert large - small <= 2 * (args_large - args_small) and 4 * large <= whole, report
