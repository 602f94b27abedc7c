"""Networks of layers (`jprop.Network`): every quantity on the closed road against the equations
as their authors write them, in plain JAX here (not through jprop), with `jax.hessian` and
`jax.jacfwd` as oracles, in x and in the parameters, and against float64 central differences."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, central_differences, cosines_like, flat, normal

import jprop
from jprop import layers as L
from jprop.layers import _network as layer_passes
from jprop.objectives import _roads as objective_roads

ACT = {
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "identity": lambda z: z,
}


def dense(p, h):
    w = p["W"] if "W" in p else jnp.exp(p["g"])[:, None] * p["V"]
    return w @ h + p["b"]


def gamma(p, x):
    z = jax.lax.stop_gradient(p["B"]) @ x  # B is not trained (the field's default)
    return jnp.concatenate([jnp.cos(z), jnp.sin(z)])


def plain_modified_mlp(params, x, act="tanh"):
    """Fourier features; U = σ(W_u γ + b_u), V = σ(W_v γ + b_v); z = σ(W h + b),
    h ← z ⊙ U + (1 − z) ⊙ V; a linear output."""
    s = ACT[act]
    h = gamma(params[0], x)
    u, v = s(dense(params[1]["U"], h)), s(dense(params[1]["V"], h))
    for p in params[2:-1]:
        z = s(dense(p, h))
        h = z * u + (1 - z) * v
    return dense(params[-1], h)


def plain_pirate_net(params, x, act="tanh"):
    """γ, U, V; per block f, z1, g, z2, h' and h ← α h' + (1 − α) h; a linear output."""
    s = ACT[act]
    h = gamma(params[0], x)
    u, v = s(dense(params[1]["U"], h)), s(dense(params[1]["V"], h))
    for block in params[2:-1]:
        w1, w2, w3 = block["dense"]
        f = s(dense(w1, h))
        z1 = f * u + (1 - f) * v
        g = s(dense(w2, z1))
        z2 = g * u + (1 - g) * v
        h = block["alpha"] * s(dense(w3, z2)) + (1 - block["alpha"]) * h
    return dense(params[-1], h)


def plain_periodic_residual(params, x, trainable=False):
    """x_1 ↦ [cos ω x_1, sin ω x_1] (x_0 passed through), σ(W h + b) softplus, h + silu(W h + b),
    a linear output."""
    omega = params[0]["omega"][0]
    omega = omega if trainable else jax.lax.stop_gradient(omega)  # fixed unless trainable
    h = jnp.stack([jnp.cos(omega * x[1]), jnp.sin(omega * x[1]), x[0]])
    h = jax.nn.softplus(dense(params[1], h))
    h = h + jax.nn.silu(dense(params[2], h))
    return dense(params[3], h)


def plain_fourier_mlp(params, x):
    h = gamma(params[0], x)
    for p, act in zip(params[1:-1], ("tanh", "sin")):
        h = ACT[act](dense(p, h))
    return dense(params[-1], h)


def plain_wide_residual(params, x):
    """tanh(W x + b) over more inputs than the rules unroll, h + tanh(W h + b), a linear output."""
    h = jnp.tanh(dense(params[0], x))
    h = h + jnp.tanh(dense(params[1], h))
    return dense(params[2], h)


CASES = {
    "fourier + modified MLP, factorised": (
        jprop.modified_mlp(2, 2, width=6, depth=2, fourier_features=3, scale=2.0, factorised=True),
        plain_modified_mlp,
    ),
    "pirate net": (jprop.pirate_net(3, 1, width=6, blocks=1), plain_pirate_net),
    "periodic + residual": (
        jprop.Network(
            2,
            [
                L.PeriodicEmbedding(axes=(1,), periods=1.5),
                L.Dense(5, "softplus"),
                L.Residual("silu"),
                L.Dense(2, "identity"),
            ],
        ),
        plain_periodic_residual,
    ),
    "fourier + tanh/sin MLP": (
        jprop.Network(
            3,
            [L.FourierFeatures(3), L.Dense(5), L.Dense(4, "sin"), L.Dense(3, "identity")],
        ),
        plain_fourier_mlp,
    ),
    "wide input + residual": (
        jprop.Network(10, [L.Dense(12), L.Residual("tanh"), L.Dense(2, "identity")]),
        plain_wide_residual,
    ),
}


def plain_pirate_on_x(params, x):
    """Gates on x; a PirateNet block whose h is x itself; h + sin(W h + b); a linear output."""
    u, v = jax.nn.sigmoid(dense(params[0]["U"], x)), jax.nn.sigmoid(dense(params[0]["V"], x))
    w1, w2, w3 = params[1]["dense"]
    f = jnp.tanh(dense(w1, x))
    z1 = f * u + (1 - f) * v
    g = jnp.tanh(dense(w2, z1))
    z2 = g * u + (1 - g) * v
    h = params[1]["alpha"] * jnp.tanh(dense(w3, z2)) + (1 - params[1]["alpha"]) * x
    h = h + jnp.sin(dense(params[2], h))
    return dense(params[3], h)


# Networks that add x itself to a branch: the input's tangents, which a linear map reads as its
# weight's columns, are written out there (the gates pass h = x on unchanged).
ON_X = {
    "pirate block and residual on x": (
        jprop.Network(
            3,
            [
                L.Gates(3, "sigmoid"),
                L.PirateBlock("tanh"),
                L.Residual("sin"),
                L.Dense(2, "identity"),
            ],
        ),
        plain_pirate_on_x,
    ),
}


def setup_case(name, batch=4):
    net, plain = (CASES | ON_X)[name]
    params = net.init(jax.random.key(0), jnp.float64)
    # non-zero biases and skip weights, so that every term of every rule is exercised
    leaves, tree = jax.tree.flatten(params)
    leaves = [  # in NumPy: an eager JAX sum would compile one program per new shape
        jax.device_put(np.asarray(a) + 0.3 * np.asarray(normal(seed, a.shape, a.dtype)))
        for seed, a in enumerate(leaves, 10)
    ]
    params = jax.tree.unflatten(tree, leaves)
    x = normal(2, (batch, net.n_inputs), jnp.float64)
    return net, plain, params, x


# The plain networks' oracles, each one compiled program (run eagerly, they would compile every
# operation on its own).
@functools.partial(jax.jit, static_argnums=0)
def per_example(plain, params, x):
    return jax.vmap(lambda xi: plain(params, xi))(x)


@functools.partial(jax.jit, static_argnums=0)
def hessians(plain, params, x):
    return jax.vmap(lambda xi: jax.hessian(lambda v: plain(params, v))(xi))(x)


def _products(jaxpr):
    """Every dot_general of a jaxpr, its sub-jaxprs' included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a closed jaxpr's own
                if hasattr(sub, "eqns"):
                    yield from _products(sub)


@pytest.mark.parametrize("case", CASES)
def test_one_examples_value_is_vector_matrix_products(case):
    """The network on one example (n,) runs vector–matrix products, as the plain function does —
    not a batch of one row, which JAX's per-example transforms (`jax.hessian`, `jax.jacrev` under
    `jax.vmap`, folx) would carry as an extra axis through every product — and on any leading
    axes it is the plain function of each example."""
    net, plain, params, x = setup_case(case, batch=6)
    jaxpr = jax.make_jaxpr(lambda v: net(params, v))(x[0]).jaxpr
    products = list(_products(jaxpr))
    assert products, "the network's jaxpr has no matrix product"
    for eqn in products:
        ranks = [v.aval.ndim for v in eqn.invars]
        assert min(ranks) == 1 and eqn.outvars[0].aval.ndim == 1, (eqn.primitive, ranks)

    @jax.jit  # one example and a grid of them, both networks, in one compiled program
    def values(params, x):
        grid = x.reshape(2, 3, net.n_inputs)
        return (
            net(params, x[0]),
            plain(params, x[0]),
            net(params, grid),
            per_example(plain, params, x),
        )

    one, plain_one, on_grid, plain_each = values(params, x)
    assert_close(one, plain_one, 1e-13)
    assert_close(on_grid, plain_each.reshape(2, 3, -1), 1e-13)


@pytest.mark.parametrize("case", CASES | ON_X)
def test_every_input_quantity_is_the_plain_networks(case):
    net, plain, params, x = setup_case(case)
    m, n = net.n_outputs, net.n_inputs
    dims = (n - 1, 0) if n > 1 else (0,)
    outputs = (m - 1, 0) if m > 1 else (0,)  # out of order: the pick keeps the order asked for
    r = jnp.flip(x, axis=-1)
    g = jnp.ones((x.shape[0], m), x.dtype)

    @jax.jit
    def ours(params, x):
        value, slope, lap = jprop.laplacian(net, drift="x")(params, x)
        return {
            "drift: value": value,
            "drift: x·∇f": slope,
            "drift: laplacian": lap,
            # x·∇f from a pass that carries no input tangents (Network.propagate, as a user calls it)
            "propagate: x·∇f": net.propagate(params, x, drift=True).drift,
            "value": net(params, x),
            "laplacian": jprop.laplacian(net)(params, x),
            "laplacian dims": jprop.laplacian(net, dims=dims)(params, x),
            "laplacian outputs": jprop.laplacian(net, outputs=outputs)(params, x),
            "diagonal": jprop.hessian_diagonal(net)(params, x),
            "diagonal outputs": jprop.hessian_diagonal(net, outputs=outputs)(params, x),
            "diagonal dims": jprop.hessian_diagonal(net, dims=dims)(params, x),
            "jacobian columns": jprop.jacobian(net, method="closed")(params, x),
            "jacobian auto": jprop.jacobian(net)(params, x),
            "R": jprop.R(net)(params, x, r),
            "hessian": jprop.hessian(net)(params, x),
            "hvp": jprop.hessian_vector_product(net)(params, x, g, r),
        }

    @jax.jit
    def oracle(params, x):
        h = hessians(plain, params, x)
        diagonal = jnp.diagonal(h, axis1=-2, axis2=-1)
        jac = jax.vmap(lambda xi: jax.jacfwd(lambda v: plain(params, v))(xi))(x)
        return {
            "drift: value": per_example(plain, params, x),
            "drift: x·∇f": jnp.einsum("bkn,bn->bk", jac, x),
            "drift: laplacian": jnp.trace(h, axis1=-2, axis2=-1),
            "propagate: x·∇f": jnp.einsum("bkn,bn->bk", jac, x),
            "value": per_example(plain, params, x),
            "laplacian": jnp.trace(h, axis1=-2, axis2=-1),
            "laplacian dims": diagonal[..., list(dims)].sum(-1),
            "laplacian outputs": jnp.trace(h, axis1=-2, axis2=-1)[:, list(outputs)],
            "diagonal": diagonal,
            "diagonal outputs": diagonal[:, list(outputs)],
            "diagonal dims": diagonal[..., list(dims)],
            "jacobian columns": jac,
            "jacobian auto": jac,
            "R": jnp.einsum("bkn,bn->bk", jac, r),
            "hessian": h,
            "hvp": jnp.einsum("bk,bkij,bj->bi", g, h, r),
        }

    got, want = ours(params, x), oracle(params, x)
    for name in want:
        assert_close(got[name], want[name], 1e-12, f"{case}: {name}")
    for quantity in ("laplacian", "hessian_diagonal", "R"):
        assert jprop.road(net, quantity).road == "closed"


@pytest.mark.parametrize("case", CASES | ON_X)
def test_training_through_each_quantity_is_the_plain_networks(case):
    """jax.grad in the parameters and in x, and jax.jvp in the parameters, of losses on the
    Laplacian, the Hessian diagonal over chosen inputs and the Jacobian's columns."""
    net, plain, params, x = setup_case(case)
    dims = (0,)
    direction = cosines_like(params)

    def losses(lap, diag, jac):
        return lambda p, x: (
            jnp.mean(lap(p, x) ** 2) + jnp.mean(jnp.sin(diag(p, x))) + jnp.mean(jac(p, x) ** 3)
        )

    ours = losses(
        jprop.laplacian(net),
        jprop.hessian_diagonal(net, dims=dims),
        jprop.jacobian(net, method="closed"),
    )
    oracle = losses(
        lambda p, x: jnp.trace(hessians(plain, p, x), axis1=-2, axis2=-1),
        lambda p, x: jnp.diagonal(hessians(plain, p, x), axis1=-2, axis2=-1)[..., list(dims)],
        lambda p, x: jax.vmap(lambda xi: jax.jacfwd(lambda v: plain(p, v))(xi))(x),
    )

    @jax.jit
    def both(params, x):
        return [
            (
                jax.grad(loss, argnums=(0, 1))(params, x),
                jax.jvp(lambda p: loss(p, x), (params,), (direction,))[1],
            )
            for loss in (ours, oracle)
        ]

    (g_ours, t_ours), (g_oracle, t_oracle) = both(params, x)
    assert_close(flat(g_ours), flat(g_oracle), 1e-11, f"{case}: gradients")
    assert_close(t_ours, t_oracle, 1e-11, f"{case}: forward mode in the parameters")


def test_central_differences_in_x_and_in_the_parameters():
    """The pirate net's Laplacian against float64 central differences of the plain network: in x
    (second differences per input) and along every parameter (the Laplacian's gradient)."""
    net, plain, params, x = setup_case("pirate net", batch=1)
    x0 = x[0]
    lap = jprop.laplacian(net)
    eps = 1e-4
    steps = eps * jnp.eye(x0.size, dtype=x0.dtype)
    value = lambda v: plain(params, v)[0]  # noqa: E731
    second = jax.jit(  # the 2n + 1 evaluations in one compiled program
        lambda x0: sum(value(x0 + s) - 2 * value(x0) + value(x0 - s) for s in steps) / eps**2
    )(x0)
    assert_close(lap(params, x0)[0], second, 1e-6, "Laplacian vs second differences")

    # B trainable here, so that the gradient covers every parameter the value depends on
    lap = jprop.laplacian(jprop.Network(3, [L.FourierFeatures(3, trainable=True), *net.layers[1:]]))
    point, unravel = jax.flatten_util.ravel_pytree(params)
    numeric = central_differences(lambda w: lap(unravel(w), x0)[0], point)
    analytic = flat(jax.grad(lambda p: lap(p, x0)[0])(params))
    assert_close(analytic, numeric, 1e-6, "gradient in the parameters vs central differences")


def test_fixed_embeddings_do_not_train_and_trainable_ones_do():
    net, _, params, x = setup_case("fourier + modified MLP, factorised")
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jprop.laplacian(net)(p, x) ** 2)))(params)
    assert not np.any(np.asarray(grads[0]["B"]))
    assert np.all(np.isfinite(flat(grads))) and np.any(np.asarray(grads[1]["U"]["g"]))
    free = jprop.Network(2, [L.FourierFeatures(3, trainable=True), *net.layers[1:]])
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jprop.laplacian(free)(p, x) ** 2)))(params)
    assert np.any(np.asarray(grads[0]["B"]))
    # the same for a periodic embedding's ω, whose gradient when trained is the plain network's
    net, plain, params, x = setup_case("periodic + residual")
    periodic = net.layers[0]
    for trainable in (False, True):
        layer = L.PeriodicEmbedding(periodic.axes, periodic.periods, trainable)
        changed = jprop.Network(2, [layer, *net.layers[1:]])
        grads = jax.jit(jax.grad(lambda p: jnp.sum(jprop.laplacian(changed)(p, x) ** 2)))(params)
        assert bool(np.any(np.asarray(grads[0]["omega"]))) == trainable
    free = functools.partial(plain, trainable=True)
    oracle = jax.jit(
        jax.grad(lambda p: jnp.sum(jnp.trace(hessians(free, p, x), axis1=-2, axis2=-1) ** 2))
    )(params)
    assert_close(grads[0]["omega"], oracle[0]["omega"], 1e-12, "a trained ω's gradient")


@pytest.mark.parametrize("case", CASES)
def test_a_network_is_a_jax_citizen(compiles, case):
    """On every layer kind: built twice it compiles once; a user's vmap over x is the batch, over
    params an ensemble; batch_size chunks; a Laplacian of the closed Laplacian (the
    bi-Laplacian) runs."""
    net, plain, params, x = setup_case(case, batch=6)
    before = compiles.count
    first = jprop.laplacian(net)(params, x)
    jprop.laplacian(net)(params, x)
    assert compiles.count - before == 1
    mapped = jax.vmap(jprop.laplacian(net), in_axes=(None, 0))(params, x)
    chunked = jprop.laplacian(net, batch_size=2)(params, x)
    ensemble = jax.vmap(jprop.laplacian(net), in_axes=(0, None))(
        jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params), x
    )
    doubled = jax.tree.map(lambda a: 2 * a, params)
    assert_close(mapped, first, 1e-14, "vmap over x")
    assert_close(chunked, first, 1e-14, "batch_size")
    assert_close(ensemble[1], jprop.laplacian(net)(doubled, x), 1e-13, "vmap over params")

    inner = jprop.laplacian(net)
    bilaplacian = jprop.laplacian(lambda p, v: inner(p, v))(params, x[0])
    # the oracle: the trace of jax.hessian of the closed Laplacian (itself checked against
    # jax.hessian), which differentiates its training rule twice
    oracle = jnp.trace(jax.jit(jax.hessian(lambda v: inner(params, v)))(x[0]), axis1=-2, axis2=-1)
    assert_close(bilaplacian, oracle, 1e-11, "bi-Laplacian")


@pytest.mark.parametrize("case", list(CASES)[:2])
def test_jprop_objectives_on_a_network_are_the_compositions(case):
    """E_u, E_v, gᵀJr and double backprop on the layer road (method="closed"): values and
    gradients in the parameters against jax.jvp/jax.vjp of the plain network; E_u against float64
    differences."""
    net, plain, params, x = setup_case(case)
    m = net.n_outputs
    v = jnp.flip(x, axis=-1)
    u = cosines_like(np.zeros((x.shape[0], m), x.dtype))
    a, b = 0.3 * x, jnp.ones((x.shape[0], m), x.dtype)

    def jvp(p, xi, vi):
        return jax.jvp(lambda z: plain(p, z), (xi,), (vi,))[1]

    def vjp(p, xi, ui):
        return jax.vjp(lambda z: plain(p, z), xi)[1](ui)[0]

    def dbp(p, xi, ti):
        e0 = lambda z: 0.5 * jnp.sum((plain(p, z) - ti) ** 2)  # noqa: E731
        return e0(xi) + 0.7 * 0.5 * jnp.sum(jax.grad(e0)(xi) ** 2)

    composed = {
        "jprop_v": lambda p: 0.5 * jnp.sum((jax.vmap(jvp, (None, 0, 0))(p, x, v) - b) ** 2),
        "jprop_u": lambda p: 0.5 * jnp.sum((jax.vmap(vjp, (None, 0, 0))(p, x, u) - a) ** 2),
        "bilinear": lambda p: jnp.sum(u * jax.vmap(jvp, (None, 0, 0))(p, x, v)),
        "double_backprop": lambda p: jnp.sum(jax.vmap(dbp, (None, 0, 0))(p, x, b)),
    }
    arguments = {
        "jprop_v": (v, b),
        "jprop_u": (u, a),
        "bilinear": (u, v),
        "double_backprop": (b, 0.7),
    }

    direction = cosines_like(params)

    @jax.jit
    def pushed(params):  # forward mode in the parameters through the layer road's loss
        ours = jprop.jprop_v(net, method="closed")
        return (
            jax.jvp(lambda p: ours(p, x, v, b), (params,), (direction,))[1],
            jax.jvp(lambda p: composed["jprop_v"](p) / x.shape[0], (params,), (direction,))[1],
        )

    assert_close(*pushed(params), 1e-12, f"{case}: E_v under jax.jvp")

    @jax.jit
    def both(params):
        ours = {
            q: jax.jit(jax.value_and_grad(getattr(jprop, q)(net, method="closed")))(
                params, x, *arguments[q]
            )
            for q in composed
        }
        oracle = {
            q: jax.jit(jax.value_and_grad(lambda p: composed[q](p) / x.shape[0]))(params)
            for q in composed
        }
        return ours, oracle

    ours, oracle = both(params)
    # auto: one tangent through the layers for E_v and gᵀJr; one reverse sweep for Jᵀu
    auto = {"jprop_v": "closed", "bilinear": "closed", "jprop_u": "autodiff"}
    auto["double_backprop"] = "autodiff"
    for q in composed:
        assert jprop.road(net, q).road == auto[q], q
        assert_close(ours[q][0], oracle[q][0], 1e-12, f"{case}: {q} value")
        assert_close(flat(ours[q][1]), flat(oracle[q][1]), 1e-11, f"{case}: {q} gradient")
    assert "layer" in jprop.road(net, "tangent_prop").reason

    if case == "pirate net":  # E_u's gradient against float64 central differences
        free = jprop.Network(3, [L.FourierFeatures(3, trainable=True), *net.layers[1:]])
        e_u = jprop.jprop_u(
            free, method="closed"
        )  # B trained too: the differences move every parameter
        point, unravel = jax.flatten_util.ravel_pytree(params)
        numeric = central_differences(lambda w: e_u(unravel(w), x[:1], u[:1], a[:1]), point)
        analytic = flat(jax.grad(e_u)(params, x[:1], u[:1], a[:1]))
        assert_close(analytic, numeric, 1e-6, "E_u gradient vs central differences")


def test_the_initialiser_follows_the_field():
    net = jprop.pirate_net(2, 1, width=64, blocks=2, scale=3.0, factorised=True)
    params = net.init(jax.random.key(0), jnp.float64)
    assert params[0]["B"].shape == (32, 2) and abs(float(jnp.std(params[0]["B"])) - 3.0) < 0.8
    assert all(float(block["alpha"]) == 0.0 for block in params[2:-1])
    g = params[1]["U"]["g"]
    assert abs(float(jnp.mean(g)) - 1.0) < 0.05 and 0.05 < float(jnp.std(g)) < 0.15
    w = jnp.exp(g)[:, None] * params[1]["U"]["V"]  # the weight the factorisation stands for
    assert abs(float(jnp.std(w)) - (2 / (64 + 2)) ** 0.5) < 0.05
    assert not np.any(np.asarray(params[1]["U"]["b"]))
    # a PirateNet with α = 0 is its embedding's gates read out: each block is the identity
    x = jnp.ones((3, 2))
    h = jnp.concatenate([jnp.cos(x @ params[0]["B"].T), jnp.sin(x @ params[0]["B"].T)], axis=-1)
    out = h @ (jnp.exp(params[-1]["g"])[:, None] * params[-1]["V"]).T + params[-1]["b"]
    assert_close(net(params, x), out, 1e-13, "α = 0 blocks are the identity")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: jprop.Network(2, [L.Dense(4)]) and jprop.Network(2, [L.Gates(4)]), "last layer"),
        (lambda: jprop.Network(2, [L.GatedDense(), L.Dense(1)]), "Gates layer"),
        (lambda: jprop.Network(2, [L.Gates(8), L.PirateBlock(), L.Dense(1)]), "as wide as"),
        (lambda: jprop.Network(2, [L.PeriodicEmbedding(axes=(2,)), L.Dense(1)]), "only 2"),
        (lambda: jprop.Network(2, [jnp.tanh, L.Dense(1)]), r"layers\[0\]"),
        (lambda: L.Dense(3, "relu"), "unknown activation"),
        (lambda: L.Dense(3, jnp.tanh), r"Dense: unknown activation .* e\.g\. 'tanh' for jnp\.tanh"),
        (lambda: L.FourierFeatures(8, scale=0), "positive number"),
        (lambda: jprop.pirate_net(2, 1, width=7), "even"),
        (
            lambda: jprop.modified_mlp(2, 1, width=0),
            r"jprop.modified_mlp: `width` must be at least",
        ),
        (lambda: jprop.pirate_net(2, 1, blocks=0), r"jprop.pirate_net: `blocks` must be at least"),
        (
            lambda: L.FourierFeatures(8, trainable="no"),
            r"`trainable` must be True or False; got 'no'",
        ),
        (lambda: L.Dense(4, factorised="yes"), r"Dense: `factorised` must be True or False"),
        (lambda: L.PeriodicEmbedding(axes=(0,), trainable=1), r"`trainable` must be True or"),
        (lambda: jprop.modified_mlp(2, 1, factorised="no"), r"modified_mlp: `factorised` must be"),
    ],
)
def test_a_network_that_does_not_fit_is_refused_saying_why(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build()


def test_params_that_do_not_fit_name_the_layer_and_entry():
    net, _, params, x = setup_case("pirate net")
    params[2]["dense"][1]["W"] = params[2]["dense"][1]["W"][:, :3]
    with pytest.raises(ValueError, match=r"params\[2\] \(PirateBlock\)\['dense'\]\[1\]\['W'\]"):
        jprop.laplacian(net)(params, x)
    params = net.init(jax.random.key(0))
    params[1]["U"]["b"] = params[1]["U"]["b"].astype(jnp.int32)  # the fix it suggests is code
    with pytest.raises(
        TypeError, match=r"e\.g\. `params\[1\]\['U'\]\['b'\]\.astype\(jnp\.float32\)`"
    ):
        jprop.laplacian(net)(params, x)
    with pytest.raises(ValueError, match="closed road covers .*laplacian"):
        jprop.hessian(net, method="closed")


def test_to_equinox_takes_a_network_of_dense_layers_and_refuses_others_saying_why():
    dense = jprop.Network(3, [L.Dense(5, "silu"), L.Dense(5, "silu"), L.Dense(2, "identity")])
    params = dense.init(jax.random.key(0), jnp.float64)
    x = normal(1, (4, 3), jnp.float64)
    model = jprop.to_equinox(dense, params)  # through Network.as_mlp
    assert_close(jax.vmap(model)(x), dense(params, x), 1e-14, "eqx.nn.MLP")
    net, _, params, _ = setup_case("pirate net")
    with pytest.raises(
        TypeError, match=r"layers\[0\] is a FourierFeatures .*no eqx.nn counterpart"
    ):
        jprop.to_equinox(net, params)
    factorised = jprop.Network(3, [L.Dense(4, factorised=True), L.Dense(1, "identity")])
    with pytest.raises(TypeError, match=r"layers\[0\] is a factorised Dense"):
        jprop.to_equinox(factorised, factorised.init(jax.random.key(0)))


@pytest.mark.parametrize("case", ["pirate net", *ON_X])
def test_mixed_dtypes_compute_in_their_promotion_and_extremes_stay_finite(case):
    """float32 params with float64 x compute in float64 (to float64 accuracy, under the strict
    promotion this lane sets); bfloat16 params with float32 x in float32; saturated units at
    |x| = 1e4 give finite Laplacians and gradients. Also where x itself joins a branch, its
    tangents written out in x's dtype."""
    net, plain, params, x = setup_case(case)
    cast = lambda tree, dtype: jax.tree.map(lambda a: np.asarray(a).astype(dtype), tree)  # noqa: E731
    low = cast(params, np.float32)
    exact = np.trace(hessians(plain, cast(low, np.float64), x), axis1=-2, axis2=-1)
    ours = jprop.laplacian(net)(low, x)
    assert ours.dtype == jnp.float64 and jax.eval_shape(net, low, x).dtype == jnp.float64
    assert_close(ours, exact, 1e-12, "float32 params, float64 x")
    half = cast(params, jnp.bfloat16)
    assert jprop.laplacian(net)(half, np.asarray(x, np.float32)).dtype == jnp.float32
    far = np.full((2, 3), 1e4, np.float32)
    lap, grads = jax.jit(jax.value_and_grad(lambda p: jnp.sum(jprop.laplacian(net)(p, far))))(low)
    assert np.isfinite(float(lap)) and np.all(np.isfinite(flat(grads)))


@pytest.mark.parametrize(
    "net",
    [
        jprop.MLP((3, 8, 5, 2), activation=("sin", "softplus"), output="logsig"),
        jprop.MLP((2, 6, 1)),
    ],
    ids=["sin-softplus-logsig", "tanh"],
)
def test_an_mlp_is_the_network_of_its_layers(net):
    # The same parameters through the MLP's own passes and through its layers' steps: every
    # quantity both cover, and jax.grad of a loss on each, agree. jprop's transforms run such a
    # network as its MLP (the road says so), so the layers' steps are called here directly.
    network = net.as_network()
    assert [type(layer) for layer in network.layers] == [L.Dense] * net.depth
    params = net.init(jax.random.key(0), jnp.float64)
    x = normal(1, (4, net.n_inputs), jnp.float64)
    r = normal(2, x.shape, jnp.float64)
    transforms = {
        "laplacian": (
            lambda f: jprop.laplacian(f),
            lambda p, x: layer_passes.laplacian(network, p, x),
        ),
        "laplacian, dims": (
            lambda f: jprop.laplacian(f, dims=(0,)),
            lambda p, x: layer_passes.laplacian(network, p, x, dims=(0,)),
        ),
        "hessian_diagonal": (
            lambda f: jprop.hessian_diagonal(f),
            lambda p, x: layer_passes.hessian_diagonal(network, p, x),
        ),
        "jacobian": (
            lambda f: jprop.jacobian(f, method="closed"),
            lambda p, x: layer_passes.jacobian(network, p, x),
        ),
        "R": (
            lambda f: lambda p, x: jprop.R(f)(p, x, r),
            lambda p, x: layer_passes.jacobian_vector_product(network, p, x, r),
        ),
    }
    for name in transforms:
        assert jprop.road(network, name.split(",")[0]).reason.startswith(
            "a jprop.Network of plain Dense layers, run as its jprop.MLP"
        )

    def sine_sum(fn):
        return lambda p: jnp.sum(jnp.sin(fn(p, x)))

    @jax.jit  # every quantity's three roads, and two gradients, in one compiled program
    def quantities(params):
        out = {}
        for name, (transform, steps) in transforms.items():
            values = (steps(params, x), transform(net)(params, x), transform(network)(params, x))
            grads = [jax.grad(sine_sum(fn))(params) for fn in (steps, transform(net))]
            out[name] = values, grads
        return out

    for name, ((steps, mlp, network_road), grads) in quantities(params).items():
        assert_close(steps, mlp, 1e-12, name)
        assert_close(network_road, mlp, 1e-12, name)
        assert_close(flat(grads[0]), flat(grads[1]), 1e-11, f"grad of {name}")
    m = net.n_outputs
    v, b = r, jnp.ones((4, m), jnp.float64)
    steps = {
        jprop.jprop_v: objective_roads.layers_jprop_v,
        jprop.jprop_u: objective_roads.layers_jprop_u,
    }

    @jax.jit
    def objectives(params):
        out = []
        for objective, layer_sums in steps.items():
            args = (v, b) if objective is jprop.jprop_v else (b, v)
            mean = lambda p, *a, sums=layer_sums: sums(network, p, x, *a) / x.shape[0]  # noqa: E731
            out.append(
                (
                    jax.value_and_grad(mean)(params, *args),
                    jax.value_and_grad(objective(net, method="closed"))(params, x, *args),
                )
            )
        return out

    for objective, (ours, theirs) in zip(steps, objectives(params)):
        assert_close(flat(ours), flat(theirs), 1e-11, objective.__name__)
    assert_close(network(params, x), net(params, x), 1e-14, "value")
    assert network.as_mlp() == net  # and back: the same MLP, whose programs it shares
    # The Hessian and its products, which a Network with other layers leaves to JAX, run the
    # MLP's passes (method="closed" is refused to any other Network), against JAX's transforms.
    g = normal(3, (4, m), jnp.float64)
    products = {
        "hessian": lambda f, method: jprop.hessian(f, method=method),
        "hessian_vector_product": lambda f, method: (
            lambda p, x: jprop.hessian_vector_product(f, method=method)(p, x, g, r)
        ),
    }
    for name in products:
        assert jprop.road(network, name).reason.startswith("a jprop.Network of plain Dense layers")

    @jax.jit  # the closed and the autodiff road, values and gradients, in one compiled program
    def both(params):
        out = {}
        for name, transform in products.items():
            fns = [transform(network, method) for method in ("closed", "autodiff")]
            out[name] = [(fn(params, x), jax.grad(sine_sum(fn))(params)) for fn in fns]
        return out

    for name, ((value, grads), (expected, expected_grads)) in both(params).items():
        assert_close(value, expected, 1e-12, name)
        assert_close(flat(grads), flat(expected_grads), 1e-11, f"grad of {name}")


@pytest.mark.parametrize("quantity", ["laplacian", "hessian_diagonal"])
def test_a_training_step_sums_the_tangents_products_by_additions_not_a_reduction(quantity):
    """Through a layer's activation and gate, s ∘ T_p scales each tangent; under `jax.grad` its
    transpose in s, Σ_p T̄_p ∘ T_p, is written as k - 1 additions, which XLA fuses with the work
    around them: the compiled step of a residual and a gated network reduces over no tangent
    axis (a sum over the tangents' axis {1} of a (B, k, w) array), and its gradient is the
    autodiff road's."""
    import re

    x = normal(0, (8, 3), jnp.float32)
    for network in (
        jprop.Network(3, [L.Dense(16), L.Residual(), L.Residual(), L.Dense(1, "identity")]),
        jprop.modified_mlp(3, 1, width=16, depth=2, fourier_features=8),
    ):
        params = network.init(jax.random.key(1), jnp.float32)
        transform = getattr(jprop, quantity)

        def step(p, method):
            return jax.grad(lambda q: jnp.mean(transform(network, method=method)(q, x) ** 2))(p)

        text = jax.jit(step, static_argnums=1).lower(params, "closed").compile().as_text()
        reductions = re.findall(r"= f32\[8,16\]\{[\d,]*\} reduce\([^\n]*dimensions=\{1\}", text)
        assert not reductions, (network, reductions)
        assert_close(flat(step(params, "closed")), flat(step(params, "autodiff")), 1e-4, quantity)


def test_a_network_of_dense_layers_runs_no_layer_step(monkeypatch):
    """Every transform of a Network of plain Dense layers runs its MLP's passes: a counter on the
    layers' jets with tangents stays at zero through each value and weight gradient, and counts
    on a PirateNet, whose layers' steps run."""
    carried = []
    propagate = jprop.Network.propagate

    def counted(self, params, x, tangents=None, *args, **kwargs):
        carried.append(tangents is not None)
        return propagate(self, params, x, tangents, *args, **kwargs)

    monkeypatch.setattr(jprop.Network, "propagate", counted)
    network = jprop.MLP((3, 7, 5, 2), activation=("tanh", "silu")).as_network()
    params = network.init(jax.random.key(0), jnp.float64)
    x, r = normal(1, (5, 3), jnp.float64), normal(2, (5, 3), jnp.float64)
    g, key = normal(3, (5, 2), jnp.float64), jax.random.key(4)
    losses = {
        "laplacian": lambda f, p: jprop.laplacian(f)(p, x),
        "sparse estimate": lambda f, p: jprop.laplacian(f, estimator="sparse", probes=2)(p, x, key),
        "hessian_diagonal": lambda f, p: jprop.hessian_diagonal(f)(p, x),
        "jacobian": lambda f, p: jprop.jacobian(f, method="closed")(p, x),
        "R": lambda f, p: jprop.R(f)(p, x, r),
        "jprop_v": lambda f, p: jprop.jprop_v(f, method="closed")(p, x, r, g),
        "jprop_u": lambda f, p: jprop.jprop_u(f, method="closed")(p, x, g, r),
    }
    for name, loss in losses.items():
        value = jax.jit(jax.value_and_grad(lambda p, loss=loss: jnp.sum(loss(network, p))))
        jax.block_until_ready(value(params))
        assert not any(carried), name
    pirate = jprop.pirate_net(3, 1, width=10, blocks=1)
    jax.grad(lambda p: jnp.sum(jprop.laplacian(pirate)(p, x)))(pirate.init(jax.random.key(0)))
    assert any(carried)


@pytest.mark.parametrize(
    "quantity, options",
    [("hessian", {}), ("laplacian", {}), ("hessian_diagonal", {"dims": (0, 2)})],
    ids=["hessian", "laplacian", "hessian_diagonal"],
)
def test_a_network_of_dense_layers_runs_its_mlps_passes_as_a_citizen(compiles, quantity, options):
    """A quantity a Network of plain Dense layers takes from its MLP's passes: its weight gradient
    against float64 central differences, wrong params named by the Network's own layers, built
    again with new parameters it compiles nothing new; float32 weights with float64 x give the
    autodiff road's value in the promoted dtype and gradients in the weights' dtype, and
    saturated units at |x| = 1e4 stay finite."""
    network = jprop.MLP((3, 8, 5, 2), activation=("sin", "softplus"), output="logsig").as_network()
    params = network.init(jax.random.key(0), jnp.float64)
    x = normal(1, (2, 3), jnp.float64)

    def build(method="closed"):
        return getattr(jprop, quantity)(network, method=method, **options)

    transform = build()
    w, unravel = jax.flatten_util.ravel_pytree(params)
    loss = lambda p: jnp.sum(jnp.sin(transform(p, x)))  # noqa: E731
    fd = central_differences(lambda v: loss(unravel(v)), w)
    assert_close(flat(jax.jit(jax.grad(loss))(params)), fd, 1e-7, "weights vs differences")
    wrong = [dict(params[0], W=params[0]["W"][:, :2]), *params[1:]]
    with pytest.raises(ValueError, match=r"params\[0\] \(Dense\)\['W'\] must have shape"):
        transform(wrong, x)
    first, scaled = transform(params, x), jax.tree.map(lambda a: 1.5 * a, params)
    before = compiles.count
    again = build()(scaled, x)
    assert compiles.count == before and not np.allclose(again, first)
    single = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    mixed = transform(single, x)
    assert mixed.dtype == jnp.float64
    assert_close(mixed, build("autodiff")(single, x), 1e-10, "float32 weights, float64 x")
    grads = jax.grad(lambda p: jnp.sum(transform(p, x)))(single)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    far = jnp.full((2, 3), 1e4, jnp.float32)
    assert np.all(np.isfinite(transform(single, far)))
    grads = jax.grad(lambda p: jnp.sum(transform(p, far)))(single)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_a_softmax_mlp_has_no_layers_and_says_why():
    with pytest.raises(ValueError, match="softmax output couples the outputs"):
        jprop.MLP((3, 4, 2), output="softmax").as_network()


@pytest.mark.parametrize(
    "layer_list, why",
    [
        ([L.FourierFeatures(4), L.Dense(1, "identity")], r"layers\[0\] is a FourierFeatures"),
        ([L.Dense(4), L.Residual(), L.Dense(1, "identity")], r"layers\[1\] is a Residual"),
        ([L.Dense(4, factorised=True), L.Dense(1, "identity")], r"layers\[0\] is a factorised"),
        ([L.Dense(4), L.Dense(1, "softplus")], r"layers\[1\] is a 'softplus' output layer"),
    ],
    ids=["fourier", "residual", "factorised", "softplus output"],
)
def test_a_network_with_other_layers_is_no_mlp_and_says_which(layer_list, why):
    net = jprop.Network(3, layer_list)
    with pytest.raises(ValueError, match=why + ".*only a network of plain Dense layers"):
        net.as_mlp()
    assert "as_mlp" not in jprop.road(net, "hessian").reason


# the cases with a Fourier or periodic embedding: (case, the input axis it reads); the PirateNet's
# embedding is the modified MLP's FourierFeatures layer, so one of the two suffices
EMBEDDED = {  # each embedding once (a sine layer in float32: tests/test_fourier.py)
    "fourier + modified MLP, factorised": 0,
    "periodic + residual": 1,
}


@pytest.mark.parametrize("case", EMBEDDED)
def test_float32_embeddings_take_the_shared_sine_and_cosine_and_stay_the_plain_networks(case):
    """In float32 the embeddings read their sines and cosines from one reduction by π/2 and two
    polynomials (`sine_and_cosine`, behind a switch: the jaxpr holds its `cond`). The Laplacian,
    the Hessian diagonal over chosen inputs, and a loss's gradient (reverse mode) and its
    derivative along a direction (forward mode) in the parameters, also mapped over two parameter
    sets, against the plain network: at ordinary inputs evaluated in float64 from the same
    float32 numbers; at inputs up to 1e4 (arguments up to 1e5, still the reduced road) in float32
    through `jax.hessian` and JAX's own sine, on the same rounded arguments (one non-zero
    coordinate, so both products round alike)."""
    net, plain, params, x = setup_case(case)
    axis, dims = EMBEDDED[case], (1,)
    # cast, stacked and indexed in NumPy: run eagerly in JAX, each leaf's shape compiles apart
    p32 = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    direction = jax.tree.map(lambda a: np.asarray(a, np.float32), cosines_like(params))
    far = np.zeros((4, net.n_inputs), np.float32)
    far[:, axis] = [1e4, -3e3, 7e2, -7e3]

    def loss(lap, diag):
        return lambda p, x: jnp.mean(lap(p, x) ** 2) + jnp.mean(jnp.sin(diag(p, x)))

    ours = loss(jprop.laplacian(net), jprop.hessian_diagonal(net, dims=dims))
    oracle = loss(
        lambda p, x: jnp.trace(hessians(plain, p, x), axis1=-2, axis2=-1),
        lambda p, x: jnp.diagonal(hessians(plain, p, x), axis1=-2, axis2=-1)[..., list(dims)],
    )

    def results(loss, p, x):
        return (
            jax.grad(loss)(p, x),
            jax.jvp(
                lambda q: loss(q, x), (p,), (jax.tree.map(lambda d: d.astype(x.dtype), direction),)
            )[1],
        )

    x32 = np.asarray(x, np.float32)
    assert " cond[" in str(jax.make_jaxpr(jprop.laplacian(net))(p32, x32))
    up = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)  # noqa: E731
    laplacian = lambda p, v: jnp.trace(hessians(plain, p, v), axis1=-2, axis2=-1)  # noqa: E731
    for points, cast, tol in [(x32, up, 5e-5), (far, None, 5e-5)]:
        cast = cast or (lambda tree: tree)
        (g_ours, t_ours, lap_ours), (g_ref, t_ref, lap_ref) = jax.jit(
            lambda p, v: (
                (*results(ours, p, v), jprop.laplacian(net)(p, v)),
                (*results(oracle, cast(p), cast(v)), laplacian(cast(p), cast(v))),
            )
        )(p32, points)
        where = f"{case}, |x| ≤ {float(np.max(np.abs(points))):.0e}"
        assert np.all(np.isfinite(flat(g_ours))), f"{where}: gradient not finite"
        assert_close(lap_ours, lap_ref, tol, f"{where}: Laplacian")
        assert_close(flat(g_ours), flat(g_ref), tol, f"{where}: gradients")
        assert_close(t_ours, t_ref, tol, f"{where}: forward mode in the parameters")
    two = jax.tree.map(lambda a: np.stack([a, 1.1 * a]), p32)
    mapped = jax.vmap(jprop.laplacian(net), in_axes=(0, None))(two, points)
    for i in range(2):
        one = jax.tree.map(lambda a: a[i], two)
        assert_close(mapped[i], jprop.laplacian(net)(one, points), 1e-6, f"{case}: mapped")
