"""Equinox interop: the generic road on an equinox model, and eqx.nn.MLP <-> jprop.MLP both ways."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from helpers import assert_close, pair, params_and_input

import jprop


@pytest.mark.parametrize(
    "net",
    [
        jprop.MLP((3, 8, 8, 2)),
        jprop.MLP((2, 5, 1), activation="logsig", output="tansig"),
        jprop.MLP((4, 3)),
        jprop.MLP((2, 6, 6, 6, 2), activation="purelin"),
    ],
    ids=lambda n: "-".join(map(str, n.sizes)) + f"-{n.activation}-{n.output}",
)
def test_round_trip_keeps_the_function_and_its_derivatives(net):
    params, x = params_and_input(net, jnp.float64, seed=2, batch=(4,))
    model = jprop.to_equinox(net, params)
    assert_close(jax.vmap(model)(x), net(params, x), 1e-14, "outputs")
    back, back_params = jprop.from_equinox(model)
    assert back.sizes == net.sizes and back.output == net.output
    assert back.activation == net.activation or net.depth == 1  # depth 1: no hidden activation
    for a, b in zip(jax.tree.leaves(back_params), jax.tree.leaves(params)):
        assert_close(a, b, 0.0, "params")
    # The closed form on the converted net equals the generic road on the equinox model.
    f, eqx_params = jprop.equinox_function(model)
    assert_close(jprop.hessian(back)(back_params, x), jprop.hessian(f)(eqx_params, x), 1e-12, "H")


def test_generic_road_on_an_equinox_model_matches_jax():
    model = eqx.nn.MLP(
        3, 2, 6, 2, activation=jax.nn.sigmoid, final_activation=jnp.tanh, key=jax.random.key(0)
    )
    model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_array(a) else a, model)
    f, params = jprop.equinox_function(model)
    x = jnp.linspace(-1.0, 1.0, 3)
    assert_close(jprop.jacobian(f)(params, x), jax.jacfwd(model)(x), 1e-14, "J")
    net, net_params = jprop.from_equinox(model)
    assert (net.activation, net.output) == ("sigmoid", "tanh")
    assert_close(jprop.laplacian(net)(net_params, x), jprop.laplacian(f)(params, x), 1e-12, "Δ")
    value, grads = pair(jprop.jprop_v(f))(params, x[None], jnp.ones((1, 3)), jnp.zeros((1, 2)))
    assert jax.tree.structure(grads) == jax.tree.structure(params)


def test_conversion_errors():
    net = jprop.MLP((3, 4, 2), output="softmax")
    with pytest.raises(ValueError, match="cannot hold a softmax output"):
        jprop.to_equinox(net, net.init(jax.random.key(0)))
    uneven = jprop.MLP((3, 4, 5, 2))
    with pytest.raises(ValueError, match=r"single hidden width.*\(4, 5\)"):
        jprop.to_equinox(uneven, uneven.init(jax.random.key(0)))
    relu = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.relu, key=jax.random.key(0))
    with pytest.raises(ValueError, match="hidden activation relu is not one jprop knows exactly"):
        jprop.from_equinox(relu)  # by its name: jax.nn.relu's repr is an object's address
    clipped = eqx.nn.MLP(
        3, 2, 4, 1, activation=lambda z: jnp.tanh(jnp.clip(z, -2.5, 2.5)), key=jax.random.key(0)
    )
    with pytest.raises(
        ValueError, match="activation given as a lambda.*clipped function is refused"
    ):
        jprop.from_equinox(clipped)
    with pytest.raises(ValueError, match="softmax there is not the network's softmax"):
        jprop.from_equinox(
            eqx.nn.MLP(3, 2, 4, 1, jnp.tanh, final_activation=jax.nn.softmax, key=jax.random.key(0))
        )
    with pytest.raises(ValueError, match="tanh approximation.*jprop.gelu"):
        jprop.from_equinox(eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.gelu, key=jax.random.key(0)))
    scalar = eqx.nn.MLP("scalar", 2, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    with pytest.raises(ValueError, match="in_size=1"):
        jprop.from_equinox(scalar)
    depth0 = jprop.MLP((3, 2), output="tansig")
    with pytest.raises(ValueError, match="depth 0.*'tanh' output has no equivalent"):
        jprop.to_equinox(depth0, depth0.init(jax.random.key(0)))
    with pytest.raises(TypeError, match="expected an eqx.nn.MLP; got Linear"):
        jprop.from_equinox(eqx.nn.Linear(2, 2, key=jax.random.key(0)))
    with pytest.raises(TypeError, match="equinox_function: `model` must be an equinox module"):
        jprop.equinox_function({"W": jnp.ones((2, 2))})  # its parameters without the module


def test_every_known_activation_converts_by_identity():
    for activation, name in [
        (jnp.tanh, "tanh"),
        (jax.nn.sigmoid, "sigmoid"),
        (jnp.sin, "sin"),
        (jax.nn.softplus, "softplus"),
        (jax.nn.silu, "silu"),
        (jprop.gelu, "gelu"),
    ]:
        model = eqx.nn.MLP(3, 2, 4, 1, activation=activation, key=jax.random.key(0))
        net, params = jprop.from_equinox(model)
        assert net.activation == name
        x = jnp.linspace(-1.0, 1.0, 3)
        assert_close(net(params, x), model(x), 1e-12, name)


# Under each transformation, on activations whose tables are read in output and in input form.
@pytest.mark.parametrize("activation", [jnp.tanh, jax.nn.softplus], ids=["tanh", "softplus"])
def test_from_equinox_inside_jit_filter_jit_and_filter_grad(activation):
    model = eqx.nn.MLP(3, 2, 6, 2, activation=activation, key=jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 3)  # the model's own dtype: JAX's default float type

    def laplacian_sum(model, x):
        net, params = jprop.from_equinox(model)
        return jnp.sum(jprop.laplacian(net)(params, x))

    reference = jax.jit(  # the model itself, by autodiff
        lambda x: jnp.sum(jnp.trace(jax.hessian(model)(x), axis1=-2, axis2=-1))
    )(x)
    assert_close(eqx.filter_jit(laplacian_sum)(model, x), reference, 2e-5, "filter_jit")
    params, static = eqx.partition(model, eqx.is_array)
    jitted = jax.jit(lambda p, x: laplacian_sum(eqx.combine(p, static), x))(params, x)
    assert_close(jitted, reference, 2e-5, "jit")
    grads = eqx.filter_grad(laplacian_sum)(model, x)
    expected = eqx.filter_jit(
        eqx.filter_grad(lambda m, x: jnp.sum(jnp.trace(jax.hessian(m)(x), axis1=-2, axis2=-1)))
    )(model, x)
    assert_close(grads.layers[0].weight, expected.layers[0].weight, 2e-4, "filter_grad")
    net, params = jprop.from_equinox(model)
    back = jprop.to_equinox(net, params)
    assert_close(back(x), model(x), 1e-6, "round trip")
