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
    assert (net.activation, net.output) == ("logsig", "tansig")
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
    with pytest.raises(ValueError, match="hidden activation .* is none of tansig, logsig, purelin"):
        jprop.from_equinox(relu)
    scalar = eqx.nn.MLP("scalar", 2, 4, 1, activation=jnp.tanh, key=jax.random.key(0))
    with pytest.raises(ValueError, match="in_size=1"):
        jprop.from_equinox(scalar)
    depth0 = jprop.MLP((3, 2), output="tansig")
    with pytest.raises(ValueError, match="depth 0.*'tansig' output has no equivalent"):
        jprop.to_equinox(depth0, depth0.init(jax.random.key(0)))
    with pytest.raises(TypeError, match="expected an eqx.nn.MLP; got Linear"):
        jprop.from_equinox(eqx.nn.Linear(2, 2, key=jax.random.key(0)))
