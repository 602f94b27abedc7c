"""One dtype policy, in JAX's default configuration (x64 off, standard promotion): jprop computes in
JAX's promotion of params and x, the dtype f(params, x) itself has; input-space results have it on
both roads, weight-space results have the params' dtypes (as jax.grad's do); extra arguments must
have x's dtype."""

import jax
import jax.numpy as jnp
import pytest
from helpers import normal

import jprop


@pytest.fixture
def users_configuration():
    with jax.enable_x64(False), jax.numpy_dtype_promotion("standard"):
        yield


def test_bfloat16_inputs_with_float32_weights_give_float32_everywhere(users_configuration):
    net = jprop.MLP((3, 5, 2))
    params = net.init(jax.random.key(0), jnp.float32)
    x32 = normal(1, (4, 3), jnp.float32)
    x = x32.astype(jnp.bfloat16)
    g, r = jnp.ones((4, 2), jnp.bfloat16), jnp.ones((4, 3), jnp.bfloat16)
    for method in ("closed", "autodiff"):
        for name in ("jacobian", "hessian", "laplacian", "hessian_diagonal"):
            got = getattr(jprop, name)(net, method=method)(params, x)
            assert got.dtype == jnp.float32, (name, method, got.dtype)
            # computed from x rounded to bfloat16, in float32 throughout: the float32 result at
            # the rounded input, to float32 rounding
            expected = getattr(jprop, name)(net, method="autodiff")(params, x.astype(jnp.float32))
            assert jprop.relative_error(got, expected) < 1e-5, (name, method)
        hvp = jprop.hessian_vector_product(net, method=method)(params, x, g, r)
        assert hvp.dtype == jnp.float32
        value = jprop.jprop_v(net, method=method)(params, x, r, g)
        assert value.dtype == jnp.float32
    t = jnp.zeros((4, 2), jnp.bfloat16)
    for method in ("closed", "autodiff"):
        hv = jprop.weight_hessian_vector_product(jprop.SquaredError(net), method=method)(
            params, params, x, t
        )
        assert {leaf.dtype for leaf in jax.tree.leaves(hv)} == {jnp.dtype(jnp.float32)}
    diagonal = jprop.weight_hessian_diagonal(jprop.SquaredError(net))(params, x, t)
    assert {leaf.dtype for leaf in jax.tree.leaves(diagonal)} == {jnp.dtype(jnp.float32)}
    with pytest.raises(
        TypeError, match=r"`g` must have the dtype of `x` \(bfloat16\); got float32"
    ):
        jprop.hessian_vector_product(net)(params, x, g.astype(jnp.float32), r)


def test_weight_space_results_keep_the_params_dtype(users_configuration):
    # bfloat16 weights, float32 data: computed in float32, returned as bfloat16 like jax.grad's.
    net = jprop.MLP((3, 4, 2))
    params = net.init(jax.random.key(0), jnp.bfloat16)
    x, t = jnp.ones((4, 3), jnp.float32), jnp.zeros((4, 2), jnp.float32)
    loss = jprop.SquaredError(net)
    for method in ("closed", "autodiff"):
        hv = jprop.weight_hessian_vector_product(loss, method=method)(params, params, x, t)
        assert {leaf.dtype for leaf in jax.tree.leaves(hv)} == {jnp.dtype(jnp.bfloat16)}
    assert jprop.hessian(net)(params, x).dtype == jnp.float32  # input space: the promotion


@pytest.mark.parametrize(
    "params_dtype, x_dtype, tolerance",
    [(jnp.bfloat16, jnp.float32, 2e-6), (jnp.float32, jnp.float64, 1e-13)],
    ids=["bfloat16-params-float32-x", "float32-params-float64-x"],
)
def test_the_closed_road_computes_at_the_promoted_precision(params_dtype, x_dtype, tolerance):
    # Computing at the params' precision and casting at the end would err by about 5e-3 and 5e-8
    # here, where the promoted dtype (and the autodiff road) gives 3e-7 and 1e-16.
    net = jprop.MLP((3, 8, 8, 2))
    with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
        params = net.init(jax.random.key(0), params_dtype)
        x = normal(1, (5, 3), x_dtype)
        exact = jax.tree.map(lambda a: a.astype(jnp.float64), params)  # the same weights, exactly
        for name in ("laplacian", "hessian", "hessian_diagonal"):
            reference = getattr(jprop, name)(net, method="autodiff")(exact, x.astype(jnp.float64))
            got = getattr(jprop, name)(net, method="closed")(params, x)
            assert got.dtype == x_dtype
            assert jprop.relative_error(got, reference) < tolerance, name

        def loss(p):  # the gradient through the Laplacian, in the params' dtype
            return jnp.sum(jprop.laplacian(net, method="closed")(p, x) ** 2)

        grads, expected = jax.jit(jax.grad(loss))(params), jax.jit(jax.grad(loss))(exact)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
            assert a.dtype == params_dtype
            # rounded once to the params' dtype at the end: its own epsilon
            assert jprop.relative_error(a, b) < 2 * float(jnp.finfo(params_dtype).eps)
        value = jprop.jprop_v(net, method="closed")(
            params, x, jnp.ones_like(x), jnp.ones((5, 2), x_dtype)
        )
        expected = jprop.jprop_v(net, method="autodiff")(
            exact, x.astype(jnp.float64), jnp.ones((5, 3)), jnp.ones((5, 2))
        )
        assert jprop.relative_error(value, expected) < tolerance
