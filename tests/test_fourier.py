"""Fourier features, γ(x) = [cos Bx, sin Bx], as a `jprop.MLP` whose first layer is the sine layer
`jprop.fourier_features` builds: every quantity on the closed road against the same network
written in plain JAX (through the autodiff road and `jax.hessian`), in x and in the weights, with
B fixed and free, and against float64 central differences."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, flat

import jprop

N, F, WIDTH = 3, 4, 6
NET = jprop.MLP((N, 2 * F, WIDTH, WIDTH, 2), activation=("sin", "tanh", "softplus"))


def fourier_network(scale=1.5):
    params = NET.init(jax.random.key(0), jnp.float64)
    params[0] = jprop.fourier_features(jax.random.key(1), N, F, scale=scale, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(2), (5, N), jnp.float64)
    return params, x


def plain(params, x):
    """The Fourier-feature network as its authors write it, B read from the sine layer's rows."""
    b_matrix = params[0]["W"][:F]
    z = b_matrix @ x
    h = jnp.concatenate([jnp.cos(z), jnp.sin(z)])
    h = jnp.tanh(params[1]["W"] @ h + params[1]["b"])
    h = jax.nn.softplus(params[2]["W"] @ h + params[2]["b"])
    return params[3]["W"] @ h + params[3]["b"]


def test_the_sine_layer_is_the_fourier_embedding():
    params, x = fourier_network()
    assert_close(NET(params, x), jax.vmap(lambda xi: plain(params, xi))(x), 1e-14, "values")


@pytest.mark.parametrize(
    "quantity, options",
    [
        ("jacobian", {}),
        ("hessian", {}),
        ("laplacian", {}),
        ("laplacian", {"dims": (2, 0)}),
        ("hessian_diagonal", {}),
        ("hessian_diagonal", {"dims": (1,)}),
    ],
)
def test_every_input_derivative_equals_the_plain_networks(quantity, options):
    params, x = fourier_network()
    ours = getattr(jprop, quantity)(NET, method="closed", **options)
    theirs = getattr(jprop, quantity)(plain, method="autodiff", **options)
    assert_close(ours(params, x), theirs(params, x), 1e-12, quantity)
    # trained with B fixed, as the field does: the other layers' gradients are the plain net's
    frozen = lambda p: [jax.lax.stop_gradient(p[0]), *p[1:]]  # noqa: E731
    loss = lambda fn: lambda p: jnp.sum(jnp.sin(fn(frozen(p), x)))  # noqa: E731
    ours_grad, theirs_grad = jax.grad(loss(ours))(params), jax.grad(loss(theirs))(params)
    assert_close(flat(ours_grad[1:]), flat(theirs_grad[1:]), 1e-11, f"{quantity}: grad")
    assert float(jnp.max(jnp.abs(flat(ours_grad[:1])))) == 0.0  # B fixed


def test_the_r_operator_hvp_and_jprop_objectives_equal_the_plain_networks():
    params, x = fourier_network()
    r, g = jnp.ones_like(x), jnp.ones((5, 2), jnp.float64)
    pairs = [
        (jprop.R(NET, method="closed"), jprop.R(jax.vmap(plain, (None, 0))), (r,)),
        (jprop.hessian_vector_product(NET), jprop.hessian_vector_product(plain), (g, r)),
    ]
    for ours, theirs, extra in pairs:
        assert_close(ours(params, x, *extra), theirs(params, x, *extra), 1e-12, "R / hvp")
    for objective, extra in ((jprop.jprop_v, (r, g)), (jprop.jprop_u, (g, r))):
        ours = jax.value_and_grad(objective(NET, method="closed"))(params, x, *extra)
        theirs = jax.value_and_grad(objective(plain))(params, x, *extra)
        assert_close(ours[0], theirs[0], 1e-12, objective.__name__)
        # with B free, the sine layer's W gradient is B's gradient through both its copies
        assert_close(flat(ours[1][1:]), flat(theirs[1][1:]), 1e-11, objective.__name__)
        assert_close(ours[1][0]["W"][:F] + ours[1][0]["W"][F:], theirs[1][0]["W"][:F], 1e-11, "dB")


def test_against_central_differences():
    params, x = fourier_network(scale=3.0)
    for transform in (jprop.hessian, jprop.laplacian, jprop.hessian_diagonal):
        assert jprop.check(transform, NET, params, x[0], method="closed") < 1e-6


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="`features` must be at least 1; got 0"):
        jprop.fourier_features(jax.random.key(0), 3, 0)
    for scale in (0.0, -1.0, "2", float("nan")):
        with pytest.raises(ValueError, match="`scale`, the standard deviation of B's entries"):
            jprop.fourier_features(jax.random.key(0), 3, 4, scale=scale)
    with pytest.raises(TypeError, match="`dtype` must be a floating dtype"):
        jprop.fourier_features(jax.random.key(0), 3, 4, dtype=jnp.int32)


@pytest.mark.parametrize("size", [1.0, 1e2, 1e4])
def test_in_float32_the_sine_layer_is_as_accurate_as_cos_and_sin(size):
    # sin(z + π/2) rounds z + π/2; cos z rounds z: both lose about |z|·eps, so in float32 the
    # closed road's error against a float64 reference stays within the plain network's own.
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), fourier_network()[0])
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params32)
    x = size * jax.random.normal(jax.random.key(4), (5, N), jnp.float32)
    for quantity in ("laplacian", "hessian_diagonal", "jacobian"):
        reference = getattr(jprop, quantity)(plain)(params64, x.astype(jnp.float64))
        ours = getattr(jprop, quantity)(NET, method="closed")(params32, x)
        theirs = getattr(jprop, quantity)(plain)(params32, x)
        assert ours.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(ours))), quantity
        scale = jnp.max(jnp.abs(reference))
        error, plain_error = (
            float(jnp.max(jnp.abs(v.astype(jnp.float64) - reference)) / scale)
            for v in (ours, theirs)
        )
        # 2× the plain network's error, and a floor of a few float32 roundings
        assert error < 2 * plain_error + 1e-6, (quantity, size, error, plain_error)
