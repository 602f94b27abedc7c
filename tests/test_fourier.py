"""Fourier features, γ(x) = [cos Bx, sin Bx], as a `jprop.MLP` whose first layer is the sine layer
`jprop.fourier_features` builds: every quantity on the closed road against the same network
written in plain JAX (through the autodiff road and `jax.hessian`), in x and in the weights, with
B fixed and free, and against float64 central differences."""

import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, flat, normal

import jprop

# (network, F): a first layer of 2F sine units, then hidden layers of other activations.
CASES = {
    "3-8-6-6-2": (jprop.MLP((3, 8, 6, 6, 2), activation=("sin", "tanh", "softplus")), 4),
    "2-6-5-1": (jprop.MLP((2, 6, 5, 1), activation=("sin", "tanh"), output="sigmoid"), 3),
}
OUTPUTS = {"linear": lambda z: z, "sigmoid": jax.nn.sigmoid}
HIDDEN = {"tanh": jnp.tanh, "softplus": jax.nn.softplus}


def fourier_network(case, scale=1.5):
    net, features = CASES[case]
    n = net.n_inputs
    params = net.init(jax.random.key(0), jnp.float64)
    params[0] = jprop.fourier_features(
        jax.random.key(1), n, features, scale=scale, dtype=jnp.float64
    )
    x = normal(2, (5, n), jnp.float64)
    return net, features, params, x


def plain_network(net, features):
    """The Fourier-feature network as its authors write it, B read from the sine layer's rows."""

    def plain(params, x):
        z = params[0]["W"][:features] @ x
        h = jnp.concatenate([jnp.cos(z), jnp.sin(z)])
        for layer, name in zip(params[1:-1], net.activations()[1:-1]):
            h = HIDDEN[name](layer["W"] @ h + layer["b"])
        return OUTPUTS[net.output](params[-1]["W"] @ h + params[-1]["b"])

    return plain


@pytest.mark.parametrize("case", CASES)
def test_the_sine_layer_is_the_fourier_embedding(case):
    net, features, params, x = fourier_network(case)
    plain = plain_network(net, features)
    both = jax.jit(lambda p, x: (net(p, x), jax.vmap(lambda xi: plain(p, xi))(x)))
    assert_close(*both(params, x), 1e-14, "values")


@pytest.mark.parametrize(
    "quantity, options",
    [
        ("jacobian", {}),
        ("hessian", {}),
        ("laplacian", {}),
        ("laplacian", {"dims": (1, 0)}),
        ("hessian_diagonal", {}),
        ("hessian_diagonal", {"dims": (1,)}),
    ],
)
def test_every_input_derivative_equals_the_plain_networks(quantity, options):
    # the two networks in turn: the sigmoid output one for the diagonal, the deeper one otherwise
    case = "2-6-5-1" if quantity == "hessian_diagonal" else "3-8-6-6-2"
    net, features, params, x = fourier_network(case)
    plain = plain_network(net, features)
    ours = getattr(jprop, quantity)(net, method="closed", **options)
    theirs = getattr(jprop, quantity)(plain, method="autodiff", **options)
    assert_close(ours(params, x), theirs(params, x), 1e-12, quantity)
    # trained with B fixed, as the field does: the other layers' gradients are the plain net's
    frozen = lambda p: [jax.lax.stop_gradient(p[0]), *p[1:]]  # noqa: E731
    loss = lambda fn: lambda p: jnp.sum(jnp.sin(fn(frozen(p), x)))  # noqa: E731
    ours_grad, theirs_grad = (
        jax.jit(jax.grad(loss(ours)))(params),
        jax.jit(jax.grad(loss(theirs)))(params),
    )
    assert_close(flat(ours_grad[1:]), flat(theirs_grad[1:]), 1e-11, f"{quantity}: grad")
    assert float(jnp.max(jnp.abs(flat(ours_grad[:1])))) == 0.0  # B fixed


@pytest.mark.parametrize("case", CASES)
def test_the_r_operator_hvp_and_jprop_objectives_equal_the_plain_networks(case):
    net, features, params, x = fourier_network(case)
    plain = plain_network(net, features)
    r, g = jnp.ones_like(x), jnp.ones((5, net.n_outputs), jnp.float64)
    pairs = [
        (jprop.R(net, method="closed"), jprop.R(jax.vmap(plain, (None, 0))), (r,)),
        (jprop.hessian_vector_product(net), jprop.hessian_vector_product(plain), (g, r)),
    ]
    for ours, theirs, extra in pairs:
        assert_close(ours(params, x, *extra), theirs(params, x, *extra), 1e-12, "R / hvp")
    for objective, extra in ((jprop.jprop_v, (r, g)), (jprop.jprop_u, (g, r))):
        ours = jax.jit(jax.value_and_grad(objective(net, method="closed")))(params, x, *extra)
        theirs = jax.jit(jax.value_and_grad(objective(plain)))(params, x, *extra)
        assert_close(ours[0], theirs[0], 1e-12, objective.__name__)
        # with B free, the sine layer's W gradient is B's gradient through both its copies
        assert_close(flat(ours[1][1:]), flat(theirs[1][1:]), 1e-11, objective.__name__)
        assert_close(
            ours[1][0]["W"][:features] + ours[1][0]["W"][features:],
            theirs[1][0]["W"][:features],
            1e-11,
            "dB",
        )


def test_against_central_differences(case="2-6-5-1"):
    net, _, params, x = fourier_network(case, scale=3.0)
    for transform in (jprop.hessian, jprop.laplacian, jprop.hessian_diagonal):
        assert jprop.check(transform, net, params, x[0], method="closed") < 1e-6


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="`features` must be at least 1; got 0"):
        jprop.fourier_features(jax.random.key(0), 3, 0)
    for scale in (0.0, -1.0, "2", float("nan")):
        with pytest.raises(ValueError, match="`scale`, the standard deviation of B's entries"):
            jprop.fourier_features(jax.random.key(0), 3, 4, scale=scale)
    with pytest.raises(TypeError, match="`dtype` must be a floating dtype"):
        jprop.fourier_features(jax.random.key(0), 3, 4, dtype=jnp.int32)


@pytest.mark.parametrize("size", [1.0, 1e2, 1e4])
def test_in_float32_the_sine_layer_is_as_accurate_as_cos_and_sin(size, case="3-8-6-6-2"):
    # sin(z + π/2) rounds z + π/2; cos z rounds z: both lose about |z|·eps, so in float32 the
    # closed road's error against a float64 reference stays within the plain network's own.
    net, features, params, _ = fourier_network(case)
    plain = plain_network(net, features)
    params32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    params64 = jax.tree.map(lambda a: a.astype(jnp.float64), params32)
    x = size * normal(4, (5, net.n_inputs), jnp.float32)
    for quantity in ("laplacian", "hessian_diagonal", "jacobian"):
        reference = getattr(jprop, quantity)(plain)(params64, x.astype(jnp.float64))
        ours = getattr(jprop, quantity)(net, method="closed")(params32, x)
        theirs = getattr(jprop, quantity)(plain)(params32, x)
        assert ours.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(ours))), quantity
        scale = jnp.max(jnp.abs(reference))
        error, plain_error = (
            float(jnp.max(jnp.abs(v.astype(jnp.float64) - reference)) / scale)
            for v in (ours, theirs)
        )
        # 2× the plain network's error, and a floor of a few float32 roundings
        assert error < 2 * plain_error + 1e-6, (quantity, size, error, plain_error)
