"""The networks physics-informed and Sobolev users write: every activation and per-layer mixes on
the closed road, against the autodiff road and float64 central differences, forward and through
jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, params_and_input
from jax.flatten_util import ravel_pytree

import jprop

# tanh is covered by every other test file; here each new activation, and a per-layer mix.
NETS = [
    jprop.MLP((3, 5, 5, 2), activation="sin"),
    jprop.MLP((2, 6, 4, 1), activation="softplus", output="sigmoid"),
    jprop.MLP((3, 5, 4, 2), activation="silu"),
    jprop.MLP((2, 5, 5, 1), activation="gelu", output="tanh"),
    jprop.MLP((3, 6, 5, 4, 2), activation=("sin", "tanh", "softplus")),
]
IDS = ["-".join(map(str, n.sizes)) + "-" + "-".join(n.activations()) for n in NETS]
QUANTITIES = ["jacobian", "hessian", "laplacian", "hessian_diagonal"]


@pytest.mark.parametrize("net", NETS, ids=IDS)
def test_closed_forms_and_training_through_every_activation(net):
    """Every quantity on both roads, and jax.grad of a loss on the Laplacian and E_v through each
    road's rule, in one compiled program; the Hessian against float64 central differences."""
    params, x = params_and_input(net, jnp.float64, seed=5, batch=(4,))
    g = jnp.ones((4, net.n_outputs), jnp.float64)

    def loss(method):
        lap = jprop.laplacian(net, method=method)
        e_v = jprop.jprop_v(net, method=method)
        v = jnp.ones_like(x)
        return lambda p: jnp.mean(lap(p, x) ** 2) + e_v(p, x, v, jnp.zeros((4, net.n_outputs)))

    @jax.jit  # quantity -> (closed, autodiff), in one compiled program
    def both_roads(params, x):
        roads = {
            name: [getattr(jprop, name)(net, method=m)(params, x) for m in ("closed", "autodiff")]
            for name in QUANTITIES
        }
        roads["hvp"] = [
            jprop.hessian_vector_product(net, method=m)(params, x, g, x)
            for m in ("closed", "autodiff")
        ]
        roads["grad"] = [ravel_pytree(jax.grad(loss(m))(params))[0] for m in ("closed", "autodiff")]
        return roads

    for name, (closed, autodiff) in both_roads(params, x).items():
        assert_close(closed, autodiff, 1e-11, name)
    # float64 central differences carry ~1e-6 truncation error in second derivatives (TOL_FD)
    assert jprop.check(jprop.hessian, net, params, x[:2], method="closed") < 1e-5


def test_mlp_init_follows_the_default_float_type():
    net = jprop.MLP((2, 3, 1))
    assert net.init(jax.random.key(0))[0]["W"].dtype == jnp.float64  # the suite enables x64
    with jax.enable_x64(False):
        assert net.init(jax.random.key(0))[0]["W"].dtype == jnp.float32
    assert net.init(jax.random.key(0), jnp.float32)[0]["W"].dtype == jnp.float32


def test_activation_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown hidden activation <.*known: 'tanh'.*e.g. 'tanh'"):
        jprop.MLP((2, 3, 1), activation=jnp.tanh)
    with pytest.raises(ValueError, match="one name per hidden layer, 2 for sizes"):
        jprop.MLP((2, 3, 3, 1), activation=("sin",))
    with pytest.raises(ValueError, match="unknown output activation 'sin'"):
        jprop.MLP((2, 3, 1), output="sin")


@pytest.mark.parametrize(
    "net", [jprop.MLP((4, 6, 5, 3), activation="sin"), jprop.MLP((4, 6, 3), output="softmax")]
)
def test_dims_and_outputs_select_the_laplacian_and_diagonal(net):
    params, x = params_and_input(net, jnp.float64, seed=8, batch=(5,))
    selections = [((1, 3), (2, 0)), ((0, 2, 3), 1)]

    def loss(method):  # through the hand rule over a subset of inputs and outputs
        lap = jprop.laplacian(net, method=method, dims=(0, 2), outputs=1)
        return lambda p: jnp.sum(lap(p, x) ** 2)

    @jax.jit  # every selection on both roads, and the grads, in one compiled program
    def results(params, x):
        selected = [
            [
                (
                    jprop.laplacian(net, method=m, dims=dims, outputs=outputs)(params, x),
                    jprop.hessian_diagonal(net, method=m, dims=dims, outputs=outputs)(params, x),
                )
                for m in ("closed", "autodiff")
            ]
            for dims, outputs in selections
        ]
        grads = [ravel_pytree(jax.grad(loss(m))(params))[0] for m in ("closed", "autodiff")]
        return jprop.hessian(net, method="autodiff")(params, x), selected, grads

    H, selected, grads = results(params, x)
    H = np.asarray(H)  # the oracle's selections in NumPy (eager jnp would compile each one)
    for (dims, outputs), roads in zip(selections, selected):
        o = list(np.atleast_1d(outputs))
        diagonal = np.diagonal(H, axis1=-2, axis2=-1)[:, o][..., list(dims)]
        for method, (lap, got) in zip(("closed", "autodiff"), roads):
            options = dict(method=method, dims=dims, outputs=outputs)
            assert_close(lap, diagonal.sum(-1), 1e-12, f"laplacian {options}")
            assert_close(got, diagonal, 1e-12, f"diagonal {options}")
    assert_close(grads[0], grads[1], 1e-11, "grad")


def test_dims_and_outputs_errors():
    net = jprop.MLP((3, 4, 2))
    params, x = params_and_input(net, jnp.float32, batch=(2,))
    with pytest.raises(ValueError, match=r"`dims` = \(0, 3\) picks input 3, but there are only 3"):
        jprop.laplacian(net, dims=(0, 3))(params, x)
    with pytest.raises(
        ValueError, match=r"`outputs` = \(2,\) picks output 2, but there are only 2"
    ):
        jprop.hessian_diagonal(net, outputs=2)(params, x)
    one = jprop.MLP((3, 4, 1))
    with pytest.raises(ValueError, match=r"picks output 1, but there is only 1 output \(index 0\)"):
        jprop.laplacian(one, outputs=(1,))(one.init(jax.random.key(0), jnp.float32), x)
    for bad in ((), (1, 1), (0.5,), "x", (-1,)):
        with pytest.raises(TypeError, match="`dims` must be a non-empty sequence of distinct"):
            jprop.laplacian(net, dims=bad)
