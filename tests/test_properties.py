"""Property tests over random architectures: an MLP's transforms against float64 finite
differences, and a random stack of layers' quantities against autodiff of its value."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import FD_FLOOR, assert_close, cosines_like, flat, normal
from hypothesis import given, settings
from hypothesis import strategies as st

import jprop


@st.composite
def networks(draw):
    n = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 5), min_size=0, max_size=3))
    m = draw(st.integers(1, 3))
    output = draw(st.sampled_from(["linear", "tansig", "logsig"] + (["softmax"] if m > 1 else [])))
    activation = draw(
        st.sampled_from(["tansig", "logsig", "purelin", "sin", "softplus", "silu", "gelu"])
    )
    return jprop.MLP((n, *hidden, m), activation=activation, output=output), draw(
        st.integers(0, 2**16)
    )


@settings(max_examples=6, deadline=None, derandomize=True)  # the same cases on every run
@given(networks())
def test_transforms_agree_with_finite_differences(case):
    net, seed = case
    params = net.init(jax.random.key(seed), jnp.float64)
    x = 2 * normal(seed, (2, net.sizes[0]))
    J, H, L = jax.jit(  # the three in one compiled program
        lambda p, x: [
            getattr(jprop, name)(net)(p, x) for name in ("jacobian", "hessian", "laplacian")
        ]
    )(params, x)
    assert_close(J, jprop.fd_jacobian(net)(params, x), 1e-7, "J", FD_FLOOR)
    assert_close(H, jprop.fd_hessian(net)(params, x), 1e-5, "H", FD_FLOOR)
    np.testing.assert_allclose(H, np.swapaxes(H, -1, -2), atol=1e-14)
    assert_close(L, np.trace(H, axis1=-2, axis2=-1), 1e-12, "L", 1e-12)


@st.composite
def layer_networks(draw):
    """A `jprop.Network` drawn layer by layer: an optional embedding (Fourier features or a
    periodic coordinate, fixed or trained), two or three of Dense (factorised or not), Residual,
    GatedDense and PirateBlock (after the Gates they need, which may read x itself), each with its
    own activation, and a Dense output; with a seed for its parameters."""
    layers = jprop.layers
    activations = st.sampled_from(["tanh", "sigmoid", "sin", "softplus", "gelu"])
    n = draw(st.sampled_from([3, 1, 2]))
    stack, width, gates = [], n, None
    embedding = draw(st.sampled_from(["periodic", "fourier", "none"]))
    if embedding == "fourier":
        features = draw(st.integers(1, 2))
        stack.append(layers.FourierFeatures(features, trainable=draw(st.booleans())))
        width = 2 * features
    elif embedding == "periodic":
        stack.append(layers.PeriodicEmbedding(axes=(0,), trainable=draw(st.booleans())))
        width = n + 1
    for kind in draw(
        st.lists(st.sampled_from(["pirate", "residual", "gated", "dense"]), min_size=2, max_size=3)
    ):
        activation = draw(activations)
        if kind == "dense":
            width = draw(st.integers(2, 4))
            stack.append(layers.Dense(width, activation, factorised=draw(st.booleans())))
        elif kind == "residual":
            stack.append(layers.Residual(activation))
        else:
            if gates is None:  # a PirateNet block's skip needs h as wide as the gates
                gates = width if kind == "pirate" else draw(st.integers(2, 4))
                stack.append(layers.Gates(gates, draw(activations)))
            if kind == "pirate" and width != gates:
                stack.append(layers.Dense(gates, activation))
            stack.append(
                layers.PirateBlock(activation)
                if kind == "pirate"
                else layers.GatedDense(activation)
            )
            width = gates
    stack.append(layers.Dense(draw(st.integers(1, 2)), draw(st.sampled_from(["identity", "tanh"]))))
    return jprop.Network(n, stack), draw(st.integers(0, 2**16))


@settings(max_examples=4, deadline=None, derandomize=True)  # the same cases on every run
@given(layer_networks())
def test_random_layer_stacks_equal_the_hessian_of_their_own_value(case):
    """On a random stack of layers, the closed road's Jacobian, Hessian diagonal and Laplacian (over
    every input and over the first) equal `jax.jacfwd` and `jax.hessian` of the network's own
    value, and the gradient in the parameters of a loss on the Laplacian equals the autodiff
    road's (folx's forward Laplacian), in float64."""
    net, seed = case
    params = net.init(jax.random.key(seed), jnp.float64)
    # every parameter away from its initial value (a PirateNet block's α = 0 would hide the block)
    params = jax.tree.map(lambda a: np.asarray(a) + 0.3 * np.asarray(cosines_like(a)), params)
    x = normal(seed, (2, net.n_inputs))

    def hessians(p):
        return jax.vmap(jax.hessian(lambda xi: net(p, xi)))(x)

    @jax.jit  # jprop's quantities and the oracle's, in one compiled program
    def both(p):
        closed = [
            jprop.jacobian(net, method="closed")(p, x),
            jprop.hessian_diagonal(net)(p, x),
            jprop.laplacian(net)(p, x),
            jprop.laplacian(net, dims=(0,))(p, x),
            jax.grad(lambda q: jnp.sum(jnp.sin(jprop.laplacian(net)(q, x))))(p),
        ]
        h = hessians(p)
        plain = [
            jax.vmap(jax.jacfwd(lambda xi: net(p, xi)))(x),
            jnp.diagonal(h, axis1=-2, axis2=-1),
            jnp.trace(h, axis1=-2, axis2=-1),
            h[..., 0, 0],
            jax.grad(lambda q: jnp.sum(jnp.sin(jprop.laplacian(net, method="autodiff")(q, x))))(p),
        ]
        return closed, plain

    assert jprop.road(net, "laplacian").road == "closed"
    closed, plain = both(params)
    labels = ("J", "Hessian diagonal", "Laplacian", "Laplacian over dims=(0,)", "gradient")
    for label, ours, theirs in zip(labels, closed, plain):
        assert_close(flat(ours), flat(theirs), 1e-11, f"{net.layers}: {label}")
