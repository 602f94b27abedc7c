"""J-prop: both roads against each other, jax.grad of the autodiff objectives, float64 finite
differences, the hand-checked numbers of docs/math.md §7, the two traps, and the named objectives."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ARCH_IDS,
    ARCHITECTURES,
    DEEP,
    LOGSIG,
    SCALAR_OUT,
    TOL_EXACT,
    WIDER_IN,
    assert_close,
    central_differences,
    flat,
    normal,
    pair,
    params_and_input,
)
from jax.flatten_util import ravel_pytree

import jprop
from jprop.models import _passes

ROADS = ["closed", "autodiff"]


def arguments(net, dtype, batch=4, seed=5):
    m, n = net.sizes[-1], net.sizes[0]
    return {
        "u": normal(10 * seed, (batch, m), dtype),
        "a": normal(10 * seed + 1, (batch, n), dtype),
        "v": normal(10 * seed + 2, (batch, n), dtype),
        "b": normal(10 * seed + 3, (batch, m), dtype),
    }


def energy_u(net, p, x, u, a):  # docs/math.md §3's autodiff reference, batch mean
    jtu = jax.vmap(lambda xi, ui: jax.vjp(lambda z: net(p, z), xi)[1](ui)[0])(x, u)
    return 0.5 * jnp.mean(jnp.sum((jtu - a) ** 2, -1))


def energy_v(net, p, x, v, b):
    jv = jax.vmap(lambda xi, vi: jax.jvp(lambda z: net(p, z), (xi,), (vi,))[1])(x, v)
    return 0.5 * jnp.mean(jnp.sum((jv - b) ** 2, -1))


@functools.partial(jax.jit, static_argnums=0)
def reference_u(net, params, x, u, a):
    return jax.value_and_grad(lambda p: energy_u(net, p, x, u, a))(params)


@functools.partial(jax.jit, static_argnums=0)
def reference_v(net, params, x, v, b):
    return jax.value_and_grad(lambda p: energy_v(net, p, x, v, b))(params)


def assert_result_close(result, reference, tol, what=""):
    (value, grads), (ref_value, ref_grads) = result, reference
    assert_close(value, ref_value, tol, f"{what} value")
    chex.assert_trees_all_equal_structs(grads, ref_grads)
    assert_close(flat(grads), flat(ref_grads), tol, f"{what} grads")


# The closed road in float64 on every architecture; in float32, and the autodiff road (jvp/vjp,
# close kin of the reference) in float64, on alternate ones.
JPROP_RUNS = [
    pytest.param(net, dtype, road, id=f"{name}-{road}-{dtype.__name__}")
    for i, (net, name) in enumerate(zip(ARCHITECTURES, ARCH_IDS))
    for road, dtype in [("closed", jnp.float64)]
    + ([("closed", jnp.float32)] if i % 4 == 0 else [])  # more dtypes: user_lane/test_differential
    + ([("autodiff", jnp.float64)] if i % 4 == 1 else [])  # also: RBF, test_citizen, pinn nets
]


@pytest.mark.parametrize("net, dtype, road", JPROP_RUNS)
def test_jprop_against_autodiff_references(net, dtype, road):
    params, x = params_and_input(net, dtype, seed=3, batch=(4,))
    u, a, v, b = (arguments(net, dtype)[k] for k in "uavb")

    def bilinear_reference(p):  # gᵀJr with g = u, r = v
        return jnp.mean(
            jax.vmap(lambda xi, gi, ri: gi @ jax.jvp(lambda z: net(p, z), (xi,), (ri,))[1])(x, u, v)
        )

    @jax.jit  # the three objectives and their references in one compiled program
    def results(params, x):
        return [
            (
                pair(jprop.jprop_u(net, method=road))(params, x, u, a),
                reference_u(net, params, x, u, a),
            ),
            (
                pair(jprop.jprop_v(net, method=road))(params, x, v, b),
                reference_v(net, params, x, v, b),
            ),
            (
                pair(jprop.bilinear(net, method=road))(params, x, u, v),
                pair(bilinear_reference)(params),
            ),
        ]

    for (got, expected), what in zip(results(params, x), ["E_u", "E_v", "bilinear"]):
        assert_result_close(got, expected, TOL_EXACT[dtype], what)


@pytest.mark.parametrize("road", ROADS)
@pytest.mark.parametrize("net", [WIDER_IN, LOGSIG], ids=["n>m", "n<m"])
def test_objectives_differentiate_in_their_data(net, road):
    # jax.grad and jax.jvp in x and in the per-example arguments, not only in the weights: the
    # data's tangent runs the value's own jvp, beside the passes' weight gradient
    params, x = params_and_input(net, jnp.float64, seed=6, batch=(4,))
    args = arguments(net, jnp.float64, seed=6)
    tangents = [normal(70 + i, a.shape, jnp.float64) for i, a in enumerate((x, *args.values()))]
    cases = [
        (jprop.jprop_u(net, method=road), energy_u, "ua"),
        (jprop.jprop_v(net, method=road), energy_v, "vb"),
    ]

    @jax.jit
    def run():
        out = []
        for energy, oracle, names in cases:
            data = (x, *(args[k] for k in names))
            plain = functools.partial(oracle, net)
            dx, d1, d2 = tangents[0], *(tangents[1 + "uavb".index(k)] for k in names)
            forward = [
                jax.jvp(lambda *d, e=e: e(params, *d), data, (dx, d1, d2))[1]
                for e in (energy, plain)
            ]
            grads = [jax.grad(e, argnums=(0, 1, 2, 3))(params, *data) for e in (energy, plain)]
            out.append((forward, grads))
        return out

    for (forward, grads), what in zip(run(), ["E_u", "E_v"]):
        assert_close(forward[0], forward[1], 1e-12, f"{what} jvp in the data")
        assert_close(flat(grads[0]), flat(grads[1]), 1e-12, f"{what} grad in weights and data")


@pytest.mark.parametrize("net", ARCHITECTURES[:5], ids=ARCH_IDS[:5])
def test_jprop_against_finite_differences(net):
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(3,))
    args = arguments(net, jnp.float64, batch=3)
    point, unravel = ravel_pytree(params)
    for transform, extra in [(jprop.jprop_u, ("u", "a")), (jprop.jprop_v, ("v", "b"))]:
        energy = transform(net)
        inputs = [args[k] for k in extra]
        fd = central_differences(lambda w: energy(unravel(w), x, *inputs), point)  # noqa: B023
        grads = jax.jit(jax.grad(energy))(params, x, *inputs)
        assert_close(flat(grads), fd, 1e-7, transform.__name__)


def one_unit(c, w, beta, d):
    return [
        {"W": jnp.full((1, 1), w), "b": jnp.full((1,), beta)},
        {"W": jnp.full((1, 1), c), "b": jnp.full((1,), d)},
    ]


@pytest.mark.parametrize("road", ROADS)
def test_one_hidden_unit_hand_values(road):
    # docs/math.md §7.3.
    net = jprop.MLP((1, 1, 1))
    x = jnp.full((1,), np.arctanh(0.5))
    E, g = pair(jprop.jprop_v(net, method=road))(
        one_unit(1.0, 1.0, 0.0, 0.0), x, jnp.ones(1), jnp.zeros(1)
    )
    np.testing.assert_allclose(E, 0.28125, rtol=1e-14)
    np.testing.assert_allclose(g[1]["W"][0, 0], 0.5625, rtol=1e-14)
    np.testing.assert_allclose(g[0]["W"][0, 0], 0.2535152938, rtol=1e-9)
    np.testing.assert_allclose(g[0]["b"][0], -0.5625, rtol=1e-14)
    assert g[1]["b"][0] == 0.0
    params, x = one_unit(2.0, 0.5, 0.1, 0.0), jnp.full((1,), 1.2)
    for transform in (jprop.jprop_v, jprop.jprop_u):  # in 1-D, E_u with u = v gives the same
        E, g = pair(transform(net, method=road))(params, x, jnp.ones(1), jnp.full((1,), 0.3))
        np.testing.assert_allclose(g[1]["W"][0, 0], 0.1062362350, rtol=1e-9)
        np.testing.assert_allclose(g[0]["W"][0, 0], 0.1167573055, rtol=1e-9)
        np.testing.assert_allclose(g[0]["b"][0], -0.2568230289, rtol=1e-9)


@pytest.mark.parametrize("road", ROADS)
def test_linear_network_formulas(road):
    # docs/math.md §7.2: e = W²W¹v − b, ∂W² = e (W¹v)ᵀ, ∂W¹ = W²ᵀ e vᵀ; ρ = W¹ᵀW²ᵀu − a,
    # ∂W¹ = (W²ᵀu) ρᵀ, ∂W² = u (W¹ρ)ᵀ; every bias gradient 0.
    net = jprop.MLP((3, 4, 2), activation="purelin")
    params, x = params_and_input(net, jnp.float64, seed=6)
    W1, W2 = (np.asarray(p["W"]) for p in params)
    v, b, u, a = (
        np.array([0.3, -1.0, 0.5]),
        np.array([0.2, 0.1]),
        np.array([1.5, -0.5]),
        np.array([0.1, 0.0, -0.2]),
    )
    _, g = pair(jprop.jprop_v(net, method=road))(params, x, jnp.asarray(v), jnp.asarray(b))
    e = W2 @ W1 @ v - b
    np.testing.assert_allclose(g[1]["W"], np.outer(e, W1 @ v), rtol=1e-12)
    np.testing.assert_allclose(g[0]["W"], np.outer(W2.T @ e, v), rtol=1e-12)
    _, g = pair(jprop.jprop_u(net, method=road))(params, x, jnp.asarray(u), jnp.asarray(a))
    rho = W1.T @ W2.T @ u - a
    np.testing.assert_allclose(g[0]["W"], np.outer(W2.T @ u, rho), rtol=1e-12)
    np.testing.assert_allclose(g[1]["W"], np.outer(u, W1 @ rho), rtol=1e-12)
    for layer in g:
        np.testing.assert_array_equal(layer["b"], 0.0)


LINEAR_OUTPUT = [(a, i) for a, i in zip(ARCHITECTURES, ARCH_IDS) if a.output == "linear"]


@pytest.mark.parametrize("net", [a for a, _ in LINEAR_OUTPUT], ids=[i for _, i in LINEAR_OUTPUT])
def test_output_bias_gradient_is_exactly_zero(net):
    # docs/math.md §7.4: with a linear output, nothing that depends only on J sees the output bias.
    # (A curved output's σ'(z^L) does depend on it, so those architectures are not in this list.)
    params, x = params_and_input(net, jnp.float64, seed=7, batch=(4,))
    args = arguments(net, jnp.float64)
    for _, g in (
        pair(jprop.jprop_u(net))(params, x, args["u"], args["a"]),
        pair(jprop.jprop_v(net))(params, x, args["v"], args["b"]),
    ):
        np.testing.assert_array_equal(g[-1]["b"], 0.0)


def test_trap_one_skipping_the_primal_backward_pass_is_wrong():
    # docs/math.md §3 trap 1, reproduced: inject e only into the R-backward output, no backward pass.
    net = WIDER_IN
    params, x = params_and_input(net, jnp.float64, seed=8, batch=(4,))
    args = arguments(net, jnp.float64)
    fwd = _passes.forward(net, params, x)
    rys, rzs = _passes.r_forward(net, params, fwd, args["v"])
    e = rys[-1] - args["b"]
    zeros = [jnp.zeros_like(y) for y in fwd.ys[1:]]
    rgzs, _ = _passes.r_backward(net, params, fwd, zeros, rys, rzs, rg_out=e)
    wrong = [{"W": rgz.T @ fwd.ys[l] / 4} for l, rgz in enumerate(rgzs)]  # noqa: E741
    _, right = pair(jprop.jprop_v(net))(params, x, args["v"], args["b"])
    err = jprop.relative_error(wrong[0]["W"], right[0]["W"])
    assert err > 0.05, f"the trap should give an O(1) error, got {err:.1e}"


@pytest.mark.parametrize("road", ROADS)
def test_double_backprop_and_trap_two(road):
    net = LOGSIG
    params, x = params_and_input(net, jnp.float64, seed=9, batch=(4,))
    t = arguments(net, jnp.float64)["b"]
    lam = 0.7

    def dense(p):  # slow formula: build J, then the penalty
        y = net(p, x)
        J = jax.vmap(jax.jacfwd(lambda xi: net(p, xi)))(x)
        dedx = jnp.einsum("bmn,bm->bn", J, y - t)
        return jnp.mean(0.5 * jnp.sum((y - t) ** 2, -1) + lam * 0.5 * jnp.sum(dedx**2, -1))

    got = pair(jprop.double_backprop(net, method=road))(params, x, t, lam)
    assert_result_close(got, jax.jit(jax.value_and_grad(dense))(params), 1e-11, "double backprop")
    # Trap 2 reproduced: treating u = y − t as a constant (plain E_u) misses the injection.
    u = net(params, x) - t
    _, constant_u = pair(jprop.jprop_u(net))(params, x, u, jnp.zeros_like(x))
    plain = jax.jit(jax.grad(lambda p: 0.5 * jnp.mean(jnp.sum((net(p, x) - t) ** 2, -1))))(params)
    penalty = jax.tree.map(lambda total, p: (total - p) / lam, got[1], plain)
    err = jprop.relative_error(flat(constant_u), flat(penalty))
    assert err > 0.01, f"the trap should give an O(1) error, got {err:.1e}"


def test_tangent_prop_against_dense_jacobian():
    net = DEEP
    params, x = params_and_input(net, jnp.float64, seed=10, batch=(3,))
    tangents = normal(1, (3, 2, 5), jnp.float64)
    targets = normal(2, (3, 2, 3), jnp.float64)

    def dense(p, targets):
        J = jax.vmap(jax.jacrev(lambda xi: net(p, xi)))(x)
        d = jnp.einsum("bmn,bpn->bpm", J, tangents) - targets
        return jnp.mean(jnp.sum(0.5 * jnp.sum(d**2, -1), -1))

    for tg in (targets, None):
        ref = jax.jit(jax.value_and_grad(dense))(
            params, jnp.zeros_like(targets) if tg is None else tg
        )
        assert_result_close(
            pair(jprop.tangent_prop(net))(params, x, tangents, tg), ref, 1e-12, "tangent prop"
        )


@pytest.mark.parametrize("net", [WIDER_IN, LOGSIG], ids=["n>m", "n<m"])
def test_derivative_targets_and_frobenius_penalty(net):
    params, x = params_and_input(net, jnp.float64, seed=11, batch=(3,))
    m, n = net.sizes[-1], net.sizes[0]
    y = normal(3, (3, m), jnp.float64)
    T = normal(4, (3, m, n), jnp.float64)
    jac = lambda p: jax.vmap(jax.jacfwd(lambda xi: net(p, xi)))(x)  # noqa: E731

    def sobolev(p):
        return jnp.mean(
            0.5 * 0.3 * jnp.sum((net(p, x) - y) ** 2, -1)
            + 0.5 * jnp.sum((jac(p) - T) ** 2, (-2, -1))
        )

    got = pair(jprop.derivative_targets(net, value_weight=0.3))(params, x, y, T)
    assert_result_close(got, jax.jit(jax.value_and_grad(sobolev))(params), 1e-12, "sobolev")
    # value_weight=0 as the docstring advises (a Python int was refused with a dtype error)
    derivatives_only = pair(jprop.derivative_targets(net, value_weight=0))(params, x, y, T)
    expected = pair(jprop.derivative_targets(net, value_weight=jnp.float64(0.0)))(params, x, y, T)
    assert_result_close(derivatives_only, expected, 0.0, "value_weight=0")
    frob = jax.jit(jax.value_and_grad(lambda p: jnp.mean(0.5 * jnp.sum(jac(p) ** 2, (-2, -1)))))(
        params
    )
    assert_result_close(pair(jprop.jacobian_penalty(net))(params, x), frob, 1e-12, "exact ‖J‖²")
    # The random-probe estimate is unbiased: with many probes it approaches the exact value, and
    # for the probes its key draws (as its docstring says) it is exactly ½ mean ‖J v_p‖².
    estimate, _ = pair(jprop.jacobian_penalty(net, num_probes=4000))(params, x, jax.random.key(0))
    np.testing.assert_allclose(estimate, frob[0], rtol=0.08)
    key, probes = jax.random.key(1), 3
    v = jax.random.normal(key, (3 * probes, n), jnp.float64).reshape(3, probes, n)

    def hutchinson(p):
        return jnp.mean(0.5 * jnp.sum(jnp.einsum("bmn,bpn->bpm", jac(p), v) ** 2, -1))

    got = pair(jprop.jacobian_penalty(net, num_probes=probes))(params, x, key)
    expected = jax.jit(jax.value_and_grad(hutchinson))(params)
    assert_result_close(got, expected, 1e-12, "fixed probes")


def test_objectives_compose_with_jit_and_grad():
    net = SCALAR_OUT
    params, x = params_and_input(net, jnp.float32, seed=12, batch=(4,))
    args = arguments(net, jnp.float32)
    fn = jax.jit(pair(jprop.jprop_v(net)))
    value, grads = fn(params, x, args["v"], args["b"])
    fn(jax.tree.map(lambda a: a * 1.1, params), x, args["v"], args["b"])  # no retrace
    # Summed with another loss, jax.grad adds the J-prop gradient to the other one's.
    other = lambda p: jnp.sum(p[0]["W"] ** 2)  # noqa: E731
    total = jax.jit(jax.grad(lambda p: jprop.jprop_v(net)(p, x, args["v"], args["b"]) + other(p)))(
        params
    )
    assert_close(flat(total), flat(grads) + flat(jax.jit(jax.grad(other))(params)), 2e-5)
    # vmap over independent problems (e.g. several targets b).
    bs = jnp.stack([args["b"], 2 * args["b"]])
    values, _ = jax.vmap(lambda b: pair(jprop.jprop_v(net))(params, x, args["v"], b))(bs)
    assert values.shape == (2,) and values[0] != values[1]


def test_generic_road_on_rbf_network():
    rbf = jprop.RBFNetwork(3, 5, 2)
    params = rbf.init(jax.random.key(1), jnp.float64)
    x = normal(2, (4, 3), jnp.float64)
    args = arguments(jprop.MLP((3, 2)), jnp.float64)
    assert_result_close(
        pair(jprop.jprop_v(rbf))(params, x, args["v"], args["b"]),
        reference_v(rbf, params, x, args["v"], args["b"]),
        1e-12,
    )
    assert_result_close(
        pair(jprop.jprop_u(rbf))(params, x, args["u"], args["a"]),
        reference_u(rbf, params, x, args["u"], args["a"]),
        1e-12,
    )


def test_bad_arguments_are_named():
    net = jprop.MLP((3, 5, 2))
    params = net.init(jax.random.key(0), jnp.float32)
    x = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(
        ValueError, match=r"`u` must have shape \(4, 2\); got \(4, 3\).*output space \(m = 2\)"
    ):
        pair(jprop.jprop_u(net))(params, x, jnp.ones((4, 3), jnp.float32), x)
    with pytest.raises(
        ValueError, match=r"`v` must have shape \(4, 3\); got \(3,\).*input space \(n = 3\)"
    ):
        pair(jprop.jprop_v(net))(params, x, jnp.ones(3, jnp.float32), jnp.ones((4, 2), jnp.float32))
    with pytest.raises(
        TypeError, match="`b` must have the dtype of `x` \\(float32\\); got float64"
    ):
        pair(jprop.jprop_v(net))(params, x, x, jnp.ones((4, 2), jnp.float64))
    with pytest.raises(TypeError, match=r"expected arguments \(params, x, v, b\)"):
        pair(jprop.jprop_v(net))(params, x, x)
    with pytest.raises(ValueError, match="num_probes=3 draws random probes and needs `key`"):
        pair(jprop.jacobian_penalty(net, num_probes=3))(params, x)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda net, p, x: pair(jprop.derivative_targets(net))(
                p, x, jnp.ones((4, 2)), jnp.ones((4, 3, 2))
            ),
            ValueError,
            r"derivative_targets: `T` must have shape \(4, 2, 3\); got \(4, 3, 2\)\. Expected \(B, m, n\)",
        ),
        (
            lambda net, p, x: pair(jprop.derivative_targets(net))(
                p, x, jnp.ones((4, 3)), jnp.ones((4, 2, 3))
            ),
            ValueError,
            r"derivative_targets: `y` must have shape \(4, 2\); got \(4, 3\)",
        ),
        (
            lambda net, p, x: pair(jprop.tangent_prop(net))(p, x, jnp.ones((4, 2, 5))),
            ValueError,
            r"tangent_prop: `tangents` must have shape \(4, 2, 3\); got \(4, 2, 5\)\. Expected \(B, P, n\)",
        ),
        (
            lambda net, p, x: pair(jprop.tangent_prop(net))(
                p, x, jnp.ones((4, 2, 3)), jnp.ones((4, 2, 3))
            ),
            ValueError,
            r"tangent_prop: `targets` must have shape \(4, 2, 2\); got \(4, 2, 3\)",
        ),
        (
            lambda net, p, x: pair(jprop.jacobian_penalty(net))(p, x[0]),
            ValueError,
            r"jacobian_penalty: needs x of shape \(B, n\).*got x of shape \(3,\)",
        ),
        (
            lambda net, p, x: pair(jprop.jacobian_penalty(net))(p, x.astype(jnp.int32)),
            TypeError,
            r"jacobian_penalty: `x` must have a floating dtype",
        ),
    ],
    ids=["T-transposed", "y-wrong", "tangents-n", "targets-m", "x-1d", "x-int"],
)
def test_composite_objectives_name_bad_arguments(call, error, match):
    net = jprop.MLP((3, 5, 2))
    params = net.init(jax.random.key(0), jnp.float64)
    with pytest.raises(error, match=match):
        call(net, params, jnp.ones((4, 3), jnp.float64))
