"""MLP and RBFNetwork: shapes, parameters, batching, hashability, and the hand-checkable nets."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ARCH_IDS, ARCHITECTURES, params_and_input

import jprop


@pytest.mark.parametrize("net", ARCHITECTURES, ids=ARCH_IDS)
def test_init_shapes_and_dtype(net):
    for dtype in (jnp.float32, jnp.float64):
        params = net.init(jax.random.key(0), dtype)
        assert len(params) == net.depth
        for layer, fan_in, fan_out in zip(params, net.sizes[:-1], net.sizes[1:]):
            assert layer["W"].shape == (fan_out, fan_in) and layer["b"].shape == (fan_out,)
            assert layer["W"].dtype == dtype and layer["b"].dtype == dtype


def test_init_compiles_one_program_per_layer_shape_and_dtype(compiles):
    """MLP.init and Network.init draw each layer in one compiled program per layer (its shape,
    its kind) and dtype, which networks sharing the layer share (sizes seen nowhere else in the
    suite); a new key compiles nothing new, and the draws are those of the same `jax.random` calls
    written out in the test."""

    key = jax.random.key(0)  # made first: its own programs are not the init's

    def compiled(net, dtype=jnp.float32):
        before = compiles.count
        net.init(key, dtype)
        return compiles.count - before

    # MLPs: a program per new layer shape, none for a network of layers seen before
    assert compiled(jprop.MLP((3, 17, 19, 2))) == 3
    assert compiled(jprop.MLP((3, 17, 19, 19, 2))) == 1  # (19 → 19)
    assert compiled(jprop.MLP((3, 17, 19, 19, 19, 2))) == 0
    assert compiled(jprop.MLP((3, 17, 19, 2)), jnp.float64) == 3
    # Networks: a program per new layer (the PirateNet's blocks share one); the same layers in a
    # new network compile nothing once its number of layers has been seen (the keys' split and
    # unstacking, two small programs per number of layers)
    pirate = lambda blocks, outputs: jprop.pirate_net(  # noqa: E731
        2, outputs, width=14, blocks=blocks, factorised=True
    )
    assert 4 <= compiled(pirate(2, 1)) <= 6  # embedding, gates, block, output (+ the keys)
    assert compiled(pirate(2, 3)) == 1  # the new output layer
    assert compiled(pirate(3, 3)) <= 2  # six keys, if new
    assert compiled(pirate(3, 1)) == 0

    # the draws, written out in one program each: an MLP splits its key into the next key and
    # (W, b) per layer, uniform in ±1/√fan_in; a Network splits its key over its layers
    def mlp_draws(key, sizes):
        layers = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            key, k_w, k_b = jax.random.split(key, 3)
            bound = 1.0 / fan_in**0.5
            uniform = functools.partial(
                jax.random.uniform, dtype=jnp.float32, minval=-bound, maxval=bound
            )
            layers.append({"W": uniform(k_w, (fan_out, fan_in)), "b": uniform(k_b, (fan_out,))})
        return layers

    def network_draws(key, net):
        keys = jax.random.split(key, len(net.layers))
        return [
            layer.init(k, width, gates, jnp.dtype(jnp.float32))
            for k, layer, (width, gates) in zip(keys, net.layers, net.widths())
        ]

    mlp, network = jprop.MLP((3, 17, 19, 2)), pirate(2, 1)
    for net, written in (
        (mlp, jax.jit(functools.partial(mlp_draws, sizes=mlp.sizes))),
        (network, jax.jit(functools.partial(network_draws, net=network))),
    ):
        before = compiles.count
        drawn = net.init(jax.random.key(1), jnp.float32)
        assert compiles.count == before, type(net).__name__
        expected = written(jax.random.key(1))
        assert jax.tree.structure(drawn) == jax.tree.structure(expected)
        for a, b in zip(jax.tree.leaves(drawn), jax.tree.leaves(expected)):
            assert a.dtype == b.dtype == jnp.float32
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_init_runs_under_a_users_vmap_and_jit():
    """An ensemble's parameters drawn with `jax.vmap` over keys, or one set under `jax.jit`,
    equal the plain calls, for an MLP and a Network (old-style uint32 keys too)."""
    for net in (jprop.MLP((3, 6, 2)), jprop.pirate_net(2, 1, width=6, blocks=1, factorised=True)):
        keys = jax.random.split(jax.random.key(3), 4)
        ensemble = jax.vmap(lambda k, net=net: net.init(k, jnp.float32))(keys)
        for index, key in enumerate(keys):
            one = net.init(key, jnp.float32)
            for a, b in zip(jax.tree.leaves(ensemble), jax.tree.leaves(one)):
                np.testing.assert_allclose(a[index], b, rtol=1e-6, atol=1e-7)
        jitted = jax.jit(net.init, static_argnums=1)(keys[0], jnp.float32)
        for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(net.init(keys[0], jnp.float32))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        raw = jax.random.PRNGKey(3)
        assert jax.tree.structure(net.init(raw, jnp.float32)) == jax.tree.structure(jitted)


@pytest.mark.parametrize("net", ARCHITECTURES, ids=ARCH_IDS)
def test_apply_matches_manual_formula_and_batches(net):
    params, x = params_and_input(net, jnp.float64, batch=(2, 3))
    y = net(params, x)
    assert y.shape == (2, 3, net.sizes[-1])
    manual = np.asarray(x)
    acts = {
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "identity": lambda z: z,
        "linear": lambda z: z,
        "softmax": lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True),
    }
    for layer, name in zip(params, net.activations()):
        manual = acts[name](manual @ np.asarray(layer["W"]).T + np.asarray(layer["b"]))
    np.testing.assert_allclose(y, manual, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y[1, 2], net(params, x[1, 2]), rtol=1e-12, atol=1e-15)


def test_mlp_is_hashable_and_static_under_jit():
    a, b = jprop.MLP([2, 3, 1]), jprop.MLP((2, 3, 1))
    assert a == b and hash(a) == hash(b) and a.sizes == (2, 3, 1)
    assert jprop.MLP((2, 3, 1), output="tansig") != a
    params = a.init(jax.random.key(1), jnp.float32)
    out = jax.jit(lambda net, p, x: net(p, x), static_argnums=0)(
        a, params, jnp.ones(2, jnp.float32)
    )
    assert out.shape == (1,)


def test_one_hidden_unit_closed_form():
    # docs/math.md §7.3: f(x) = c tanh(wx + β) + d.
    c, w, beta, d, x = 2.0, 0.5, 0.1, -0.3, 1.2
    net = jprop.MLP((1, 1, 1))
    params = [
        {"W": jnp.full((1, 1), w), "b": jnp.full((1,), beta)},
        {"W": jnp.full((1, 1), c), "b": jnp.full((1,), d)},
    ]
    xs = jnp.full((1,), x)
    t = np.tanh(w * x + beta)
    np.testing.assert_allclose(net(params, xs)[0], c * t + d, rtol=1e-15)
    np.testing.assert_allclose(
        jprop.jacobian(net)(params, xs)[0, 0], c * w * (1 - t * t), rtol=1e-14
    )
    np.testing.assert_allclose(jprop.jacobian(net)(params, xs)[0, 0], 0.6347395900, rtol=1e-9)
    np.testing.assert_allclose(
        jprop.hessian(net)(params, xs)[0, 0, 0], -2 * c * w * w * t * (1 - t * t), rtol=1e-13
    )


def test_linear_network_jacobian_is_weight_product_and_hessian_zero():
    # docs/math.md §7.2.
    net = jprop.MLP((3, 4, 2), activation="purelin")
    params, x = params_and_input(net, jnp.float64)
    J = jprop.jacobian(net)(params, x)
    np.testing.assert_allclose(J, params[1]["W"] @ params[0]["W"], rtol=1e-13)
    np.testing.assert_allclose(jprop.hessian(net)(params, x), 0.0, atol=1e-15)


def test_rbf_matches_manual_formula():
    rbf = jprop.RBFNetwork(3, 4, 2)
    key = jax.random.key(3)
    params = jax.tree.map(lambda a: a + 0.1, rbf.init(key, jnp.float64))
    x = jnp.asarray([0.2, -0.4, 0.9])
    c, s = np.asarray(params["centers"]), np.exp(np.asarray(params["log_widths"]))
    phi = np.exp(-np.sum((np.asarray(x) - c) ** 2, axis=1) / (2 * s**2))
    np.testing.assert_allclose(
        rbf(params, x), np.asarray(params["W"]) @ phi + params["b"], rtol=1e-13
    )
    batch = jnp.stack([x, -x])
    np.testing.assert_allclose(rbf(params, batch)[1], rbf(params, -x), rtol=1e-14)
