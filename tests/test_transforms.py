"""jacobian, hessian, laplacian and R against JAX's own transforms and float64 finite differences."""

import functools
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ARCH_IDS,
    ARCHITECTURES,
    DEEP,
    FD_FLOOR,
    LOGSIG,
    SCALAR_OUT,
    SOFTMAX,
    TOL_EXACT,
    TOL_FD,
    WIDER_IN,
    assert_close,
    flat,
    normal,
    pair,
    params_and_input,
    swap_road,
)

import jprop

METHODS = ["closed", "autodiff"]  # "auto" picks one of them: see the test_auto_* tests below


# The oracles are JAX's own transforms, mapped over the batch (jitted: eager dispatch is slow).
@functools.partial(jax.jit, static_argnums=0)
def oracle_jacobian(f, params, x):
    return jax.vmap(jax.jacfwd(lambda xi: f(params, xi)))(x)


@functools.partial(jax.jit, static_argnums=0)
def oracle_hessian(f, params, x):
    return jax.vmap(jax.hessian(lambda xi: f(params, xi)))(x)


# The closed road in float64 on every architecture; in float32, and the autodiff road (JAX's own
# transforms underneath, so mostly plumbing) in float64, on alternate ones.
TRANSFORM_RUNS = [
    pytest.param(net, dtype, method, id=f"{name}-{tag}")
    for i, (net, name) in enumerate(zip(ARCHITECTURES, ARCH_IDS))
    for dtype, method, tag in [(jnp.float64, "closed", "f64-closed")]
    + ([(jnp.float64, "autodiff", "f64-autodiff")] if i % 2 == 0 else [])
    + ([(jnp.float32, "closed", "f32-closed")] if i % 4 == 1 else [])  # user_lane/test_differential
]


@pytest.mark.parametrize("net, dtype, method", TRANSFORM_RUNS)
def test_against_jax_and_finite_differences(net, dtype, method):
    params, x = params_and_input(net, dtype, seed=1, batch=(3,))
    with_fd = method == "closed" and dtype == jnp.float64  # the float64 oracle once per net

    @jax.jit  # the four transforms and their oracles in one compiled program
    def everything(params, x):
        ours = [
            getattr(jprop, q)(net, method=method)(params, x)
            for q in ("jacobian", "hessian", "laplacian", "hessian_diagonal")
        ]
        oracles = (oracle_jacobian(net, params, x), oracle_hessian(net, params, x))
        fd = (jprop.fd_jacobian(net)(params, x), jprop.fd_hessian(net)(params, x))
        return ours, oracles, fd if with_fd else None

    (J, H, L, D), (oracle_J, oracle_H), fd = everything(params, x)
    m, n = net.sizes[-1], net.sizes[0]
    chex.assert_shape([J, H, L, D], [(3, m, n), (3, m, n, n), (3, m), (3, m, n)])
    assert J.dtype == H.dtype == L.dtype == D.dtype == dtype
    diagonal = np.diagonal(oracle_H, axis1=-2, axis2=-1)
    assert_close(D, diagonal, TOL_EXACT[dtype], "diag vs jax.hessian")
    assert_close(J, oracle_J, TOL_EXACT[dtype], "J vs jacfwd")
    assert_close(H, oracle_H, TOL_EXACT[dtype], "H vs jax.hessian")
    assert_close(L, np.trace(oracle_H, axis1=-2, axis2=-1), TOL_EXACT[dtype], "L")
    if with_fd:
        assert_close(J, fd[0], TOL_FD[dtype], "J vs fd", FD_FLOOR)
        assert_close(H, fd[1], TOL_FD[dtype], "H vs fd", FD_FLOOR)
    np.testing.assert_allclose(
        H, np.swapaxes(H, -1, -2), rtol=0, atol=1e-6 if dtype == jnp.float32 else 1e-14
    )


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)], ids=["single", "batch", "batch2d"])
def test_batch_axes_are_mapped(batch):
    net = DEEP
    params, x = params_and_input(net, jnp.float64, batch=batch)
    H = jprop.hessian(net)(params, x)
    assert H.shape == batch + (3, 5, 5)
    flat = oracle_hessian(net, params, x.reshape(-1, 5)).reshape(H.shape)
    assert_close(H, flat, 1e-12)


@pytest.mark.parametrize(  # float64 on every architecture, float32 on alternate ones
    "net, dtype",
    [
        pytest.param(net, dtype, id=f"{name}-{'f32' if dtype == jnp.float32 else 'f64'}")
        for i, (net, name) in enumerate(zip(ARCHITECTURES, ARCH_IDS))
        for dtype in ([jnp.float64] + ([jnp.float32] if i % 4 == 0 else []))
    ],
)
def test_input_hessian_vector_product(net, dtype):
    params, x = params_and_input(net, dtype, seed=8, batch=(3,))
    g = normal(10, (3, net.sizes[-1]), dtype)
    r = normal(11, x.shape, dtype)
    # Oracle (docs/math.md §7.6): jax.jvp(jax.grad(lambda x: g @ f(x)), (x,), (r,)).
    oracle = jax.jit(
        jax.vmap(
            lambda xi, gi, ri: jax.jvp(jax.grad(lambda v: gi @ net(params, v)), (xi,), (ri,))[1]
        )
    )(x, g, r)
    for method in METHODS:
        v = jprop.hessian_vector_product(net, method=method)(params, x, g, r)
        assert_close(v, oracle, TOL_EXACT[dtype], method)
    H = jprop.hessian(net)(params, x)
    dense = np.einsum("bk,bkij,bj->bi", *(np.asarray(a, np.float64) for a in (g, H, r)))
    assert_close(v, dense, TOL_EXACT[dtype], "vs dense H")


@pytest.mark.parametrize("transform", [jprop.jacobian, jprop.jprop_v], ids=lambda t: t.__name__)
def test_auto_takes_the_measured_faster_autodiff_road(transform, monkeypatch):
    # The Jacobian and E_v measured faster by JAX's composition: a broken closed form must not
    # reach "auto", and must reach "closed".
    from jprop import _program
    from jprop.quantities import _closed

    net = WIDER_IN
    params, x = params_and_input(net, jnp.float64, batch=(2,))
    args = () if transform is jprop.jacobian else (x, jnp.zeros((2, net.n_outputs)))
    run = transform if transform is jprop.jacobian else lambda *a, **k: pair(transform(*a, **k))
    right = run(net, method="auto")(params, x, *args)
    if transform is jprop.jacobian:
        monkeypatch.setattr(_closed, "jacobian", lambda *a: jnp.zeros((2, 2, 3)))
    else:
        broken_grads = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), params)
        swap_road(monkeypatch, "jprop_v", closed=lambda *a: (jnp.nan, broken_grads))
    _program.clear_caches()  # transforms are cached by construction: rebuild with the swap
    assert jprop.road(net, transform.__name__).road == "autodiff"
    fresh = run(net, method="auto")(params, x, *args)
    jax.tree.map(lambda a, b: assert_close(a, b, 0.0), fresh, right)
    broken = run(net, method="closed")(params, x, *args)
    assert not np.allclose(jax.tree.leaves(broken)[-1], jax.tree.leaves(right)[-1])


def test_auto_takes_autodiff_for_the_hessian_where_it_measured_faster(monkeypatch):
    from jprop.quantities import _closed

    # The closed form only with several outputs, a first width of 64 or more and n ≤ n₁/2.
    nets = {
        jprop.MLP((6, 4, 2)): False,
        jprop.MLP((33, 64, 2)): False,  # n > n₁/2
        jprop.MLP((32, 64, 2)): True,
        jprop.MLP((3, 48, 2)): False,  # a narrow first layer
        jprop.MLP((3, 64, 1)): False,  # one output
    }
    monkeypatch.setattr(_closed, "hessian", lambda *args: jnp.full((1, 2, 99, 99), jnp.nan))
    for net, expect_closed in nets.items():
        params, x = params_and_input(net, jnp.float64, batch=(1,))
        H = jprop.hessian(net)(params, x)
        assert (H.shape[-1] == 99) == expect_closed, net.sizes


def test_auto_picks_closed_form(monkeypatch):
    # Break the closed form on purpose: "auto" and "closed" must see it, "autodiff" must not.
    from jprop import _program
    from jprop.quantities import _closed

    net = jprop.MLP((3, 64, 2))  # several outputs, n₁ ≥ 64, n ≤ n₁/2: "auto" takes the closed form
    params, x = params_and_input(net, jnp.float64)
    right = jprop.hessian(net)(params, x)
    original = _closed.hessian
    monkeypatch.setattr(_closed, "hessian", lambda *args: 2 * original(*args))
    _program.clear_caches()  # transforms are cached by construction: rebuild with the swap
    assert_close(jprop.hessian(net, method="auto")(params, x), 2 * right, 1e-13)
    assert_close(jprop.hessian(net, method="closed")(params, x), 2 * right, 1e-13)
    assert_close(jprop.hessian(net, method="autodiff")(params, x), right, 1e-13)


@pytest.mark.parametrize(
    "batch, batch_size",
    [((2, 5), 4), ((2, 5), 7), ((11,), 4)],
    ids=["strided steps of 2", "strided steps of 5", "chunks and a remainder"],
)
@pytest.mark.parametrize("method", METHODS)
def test_chunked_batches_equal_plain(method, batch, batch_size):
    net = SOFTMAX
    params, x = params_and_input(net, jnp.float64, seed=12, batch=batch)
    transforms = [jprop.jacobian, jprop.hessian, jprop.laplacian, jprop.hessian_diagonal]

    @jax.jit  # whole and in chunks, every transform, in one compiled program
    def both(params, x):
        return [
            [
                transform(net, method=method, **chunks)(params, x)
                for chunks in ({}, {"batch_size": batch_size})
            ]
            for transform in transforms
        ]

    for transform, (plain, chunked) in zip(transforms, both(params, x)):
        assert_close(chunked, plain, 1e-14, transform.__name__)


def test_generic_road_on_rbf_network():
    rbf = jprop.RBFNetwork(3, 6, 2)
    params = rbf.init(jax.random.key(4), jnp.float64)
    x = normal(5, (4, 3), jnp.float64)
    assert_close(jprop.jacobian(rbf)(params, x), jprop.fd_jacobian(rbf)(params, x), 1e-8, "J")
    assert_close(jprop.hessian(rbf)(params, x), jprop.fd_hessian(rbf)(params, x), 1e-6, "H")
    assert jprop.check(jprop.laplacian, rbf, params, x) < 1e-6


def test_generic_road_on_user_function():
    # f(x) = (sum x², prod sin x): Hessians known in closed form.
    f = lambda p, x: jnp.stack([p * jnp.sum(x**2), jnp.prod(jnp.sin(x))])  # noqa: E731
    x = jnp.asarray([0.3, -0.7, 1.1])
    H = jprop.hessian(f)(2.0, x)
    np.testing.assert_allclose(H[0], 4.0 * np.eye(3), atol=1e-14)
    s, c = np.sin(np.asarray(x)), np.cos(np.asarray(x))
    expected = np.outer(c / s, c / s) * np.prod(s)
    np.fill_diagonal(expected, -np.prod(s))
    np.testing.assert_allclose(H[1], expected, rtol=1e-12)
    np.testing.assert_allclose(jprop.laplacian(f)(2.0, x), [12.0, -3 * np.prod(s)], rtol=1e-12)


def test_scalar_output_function():
    f = lambda p, x: jnp.sum(jnp.tanh(x)) * p  # noqa: E731
    x = jnp.asarray([0.1, 0.2])
    assert jprop.jacobian(f)(1.0, x).shape == (2,)
    assert jprop.hessian(f)(1.0, x).shape == (2, 2)
    assert jprop.laplacian(f)(1.0, x).shape == ()


@pytest.mark.parametrize("net", ARCHITECTURES[:5], ids=ARCH_IDS[:5])
def test_R_is_jacobian_vector_product(net):
    params, x = params_and_input(net, jnp.float64, seed=2, batch=(3,))
    r = normal(9, x.shape, jnp.float64)
    Jr = jprop.R(net)(params, x, r)
    J = jprop.jacobian(net)(params, x)
    assert_close(Jr, jnp.einsum("bmn,bn->bm", J, r), 1e-12)
    # R is linear in r and R{x} = r, R{w} = 0.
    assert_close(jprop.R(net)(params, x, 2.5 * r), 2.5 * Jr, 1e-13)
    np.testing.assert_allclose(jprop.R(lambda p, x: x)(params, x, r), r)
    np.testing.assert_allclose(jprop.R(lambda p, x: p[0]["W"])(params, x, r), 0.0)


def test_R_of_pytree_output_and_of_gradient():
    # R of ∇_x(gᵀf) is the input Hessian-vector product Σ_k g_k ∇²f_k r (docs/math.md §7.6).
    net = SCALAR_OUT
    params, x = params_and_input(net, jnp.float64, seed=3)
    g = jnp.asarray([0.7])
    r = jnp.asarray([0.1, -0.2, 0.3, 0.4])
    both = lambda p, x: {"y": net(p, x), "grad": jax.grad(lambda x: g @ net(p, x))(x)}  # noqa: E731
    out = jprop.R(both)(params, x, r)
    H = jprop.hessian(net)(params, x)
    assert_close(out["grad"], jnp.einsum("k,kij,j->i", g, H, r), 1e-12)
    assert_close(out["y"], jprop.jacobian(net)(params, x) @ r, 1e-12)


# The composition matrix: each transform under jit, vmap and grad, and no retracing.
TRANSFORMS = [jprop.jacobian, jprop.hessian, jprop.laplacian, jprop.hessian_diagonal]
ORACLES = {
    jprop.jacobian: oracle_jacobian,
    jprop.hessian: oracle_hessian,
    jprop.laplacian: lambda f, p, x: jnp.trace(oracle_hessian(f, p, x), axis1=-2, axis2=-1),
    jprop.hessian_diagonal: lambda f, p, x: jnp.diagonal(
        oracle_hessian(f, p, x), axis1=-2, axis2=-1
    ),
}


@functools.cache
def _composition_oracle(transform):
    """The oracle's value and the gradient of Σ sin(oracle) in the parameters on LOGSIG, for
    `test_composition_jit_vmap_grad`: computed once per transform, shared by its three cases."""
    params, x = params_and_input(LOGSIG, jnp.float64, seed=4, batch=(5,))
    reference = lambda p: jnp.sum(jnp.sin(ORACLES[transform](LOGSIG, p, x)))  # noqa: E731
    return ORACLES[transform](LOGSIG, params, x), jax.jit(jax.grad(reference))(params)


# Eager and jitted on the closed road; the autodiff road is JAX's own transforms, jitted once.
@pytest.mark.parametrize(
    "wrap, method",
    [(lambda f: f, "closed"), (jax.jit, "closed"), (jax.jit, "autodiff")],
    ids=["eager-closed", "jit-closed", "jit-autodiff"],
)
@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.__name__)
def test_composition_jit_vmap_grad(transform, wrap, method):
    params, x = params_and_input(LOGSIG, jnp.float64, seed=4, batch=(5,))
    fn = wrap(transform(LOGSIG, method=method))
    expected, expected_grad = _composition_oracle(transform)
    assert_close(fn(params, x), expected, 1e-12, "plain")
    assert_close(jax.vmap(fn, in_axes=(None, 0))(params, x), expected, 1e-12, "vmap")
    loss = lambda p: jnp.sum(jnp.sin(fn(p, x)))  # noqa: E731
    chex.assert_trees_all_close(wrap(jax.grad(loss))(params), expected_grad, rtol=1e-11)


@pytest.mark.parametrize("transform", TRANSFORMS + [jprop.R], ids=lambda t: t.__name__)
def test_no_recompiling_on_second_call(transform, compiles):
    # Eager calls of a transform built anew each time, no outer jit: the second call, with new
    # parameter values, must run the program the first one compiled.
    net = WIDER_IN
    params, x = params_and_input(net, jnp.float32, seed=5, batch=(4,))
    args = (params, x, x) if transform is jprop.R else (params, x)
    params2 = jax.tree.map(lambda a: a * 1.5, params)
    first = transform(net)(*args)
    compiled = compiles.count
    assert compiled >= 1
    second = transform(net)(params2, *args[1:])
    assert compiles.count == compiled
    assert not np.allclose(first, second)  # the second call really used the new values


def test_check_detects_a_wrong_transform():
    net = WIDER_IN
    params, x = params_and_input(net, jnp.float64, seed=6)
    assert jprop.check(jprop.hessian, net, params, x) < 1e-7
    assert jprop.check(jprop.jacobian, net, params, x, method="autodiff") < 1e-9
    # A Jacobian scaled by 1.001 is reported as a 1e-3 relative error.
    bad = lambda p, x: 1.001 * net(p, x)  # noqa: E731
    assert (
        abs(
            jprop.relative_error(jprop.jacobian(bad)(params, x), jprop.fd_jacobian(net)(params, x))
            - 1e-3
        )
        < 1e-6
    )


def test_finite_differences_work_without_global_x64():
    # The suite enables x64 globally, so run a user's script, with JAX's defaults, in a subprocess:
    # fd_* must switch float64 on locally and still agree with the float32 Jacobian.
    script = """
import jax, jax.numpy as jnp, jprop
assert not jax.config.read("jax_enable_x64")
net = jprop.MLP((3, 5, 2))
params, x = net.init(jax.random.key(7)), jnp.linspace(-1.0, 1.0, 3)
J = jprop.fd_jacobian(net)(params, x)
assert J.dtype == jnp.float64, J.dtype
H = jprop.fd_hessian(net)(params, x)
assert H.dtype == jnp.float64, H.dtype
assert jprop.relative_error(jprop.jacobian(net)(params, x), J) < 2e-5
assert jprop.check(jprop.hessian, net, params, x) < 1e-4
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("net", ARCHITECTURES[::2], ids=ARCH_IDS[::2])
def test_closed_form_branch_for_wide_inputs(net, monkeypatch):
    # Very wide inputs fold the first layer into the per-example contraction; at these test sizes
    # the branch does not trigger, so lower the threshold to reach it. 19 examples are one full
    # chunk of the contraction and a remainder.
    from jprop.quantities import _closed

    params, x = params_and_input(net, jnp.float64, seed=13, batch=(19,))
    expected = {t: t(net, method="autodiff")(params, x) for t in TRANSFORMS[1:]}
    monkeypatch.setattr(_closed, "MAX_FIRST_LAYER_PRODUCTS", 0)
    for transform, value in expected.items():
        assert_close(transform(net, method="closed")(params, x), value, 1e-12, transform.__name__)


def test_scalar_outputs_everywhere():
    # One rule: an f returning () per example is accepted by every transform and objective, as
    # the same network with one output, its output axis dropped from results and arguments. The
    # scalar f below indexes its output, so it is also only right when called per example.
    net = jprop.MLP((3, 6, 5, 1), output="tansig")
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(5,))
    f = lambda p, xi: net(p, xi)[0]  # noqa: E731
    y, u, t = (normal(20 + k, (5,)) for k in range(3))
    v, T = x[::-1], normal(23, (5, 3))
    tangents = jnp.stack([x, jnp.cos(x)], axis=1)  # (B, P = 2, n)
    # objective -> (arguments for the scalar f, the same for the net with its output axis)
    objectives = {
        jprop.bilinear: ((u, v), (u[:, None], v)),
        jprop.jprop_u: ((u, v), (u[:, None], v)),
        jprop.jprop_v: ((v, y), (v, y[:, None])),
        jprop.double_backprop: ((t, 0.3), (t[:, None], 0.3)),
        jprop.tangent_prop: ((tangents, tangents[..., 0]), (tangents, tangents[..., :1])),
        jprop.derivative_targets: ((y, T), (y[:, None], T[:, None])),
        jprop.jacobian_penalty: ((), ()),
    }

    @jax.jit  # what -> (scalar f's result, the net's), for everything, in one compiled program
    def pairs(params):
        out = {
            name: (getattr(jprop, name)(f)(params, x), getattr(jprop, name)(net)(params, x)[:, 0])
            for name in ("jacobian", "hessian", "laplacian", "hessian_diagonal")
        }
        through = [  # and through jax.grad, as a physics-informed loss on a scalar model
            jax.jit(jax.grad(lambda p, g=g: jnp.mean(jprop.laplacian(g)(p, x).reshape(5) ** 2)))(
                params
            )
            for g in (f, net)
        ]
        out["grad"] = tuple(through)
        hvp = jprop.hessian_vector_product
        out["hvp"] = (hvp(f)(params, x, y, v), hvp(net)(params, x, y[:, None], v))
        for objective, (scalar, vector) in objectives.items():
            ours = jax.jit(jax.value_and_grad(objective(f)))(params, x, *scalar)
            theirs = jax.jit(jax.value_and_grad(objective(net)))(params, x, *vector)
            out[objective.__name__] = (ours, theirs)
        return out

    for what, (ours, theirs) in pairs(params).items():
        assert_close(flat(ours), flat(theirs), 1e-12, what)
    square = jprop.MLP((1, 4, 1))  # log|det J| and the spectral norm of a 1 × 1 Jacobian
    p1, x1 = params_and_input(square, jnp.float64, seed=6, batch=(4,))
    g = lambda p, xi: square(p, xi)[0]  # noqa: E731
    assert_close(
        jprop.log_abs_det_jacobian(g)(p1, x1), jprop.log_abs_det_jacobian(square)(p1, x1), 1e-12
    )
    norm, scalar_norm = jprop.SpectralNorm(square), jprop.SpectralNorm(g)
    state = norm.init(p1, x1, jax.random.key(0))
    assert scalar_norm.init(p1, x1, jax.random.key(0)).u.shape == (4, 1)
    assert_close(scalar_norm(p1, x1, state)[0], norm(p1, x1, state)[0], 1e-12, "SpectralNorm")
    # (curvature losses on a scalar f: tests/test_weight_curvature.py)
    with pytest.raises(ValueError, match="no output axis"):
        jprop.jprop_v(f)(params, x, v, y[:, None])


def test_closed_forms_with_the_weights_as_constants_of_a_jitted_program():
    # Weights closed over by a user's jit are constants XLA may fold: the Hessian's first-layer
    # outer products once compiled to wrong numbers that way (jax 0.8.0), right when eager.
    net = jprop.MLP((3, 6, 5, 2))
    params, x = params_and_input(net, jnp.float64, seed=21, batch=(6,))
    expected = oracle_hessian(net, params, x)
    for name in ("hessian", "hessian_diagonal", "laplacian"):
        got = jax.jit(lambda z, name=name: getattr(jprop, name)(net)(params, z))(x)
        want = {
            "hessian": expected,
            "hessian_diagonal": jnp.diagonal(expected, axis1=-2, axis2=-1),
            "laplacian": jnp.trace(expected, axis1=-2, axis2=-1),
        }[name]
        assert_close(got, want, 1e-12, name)


@pytest.mark.parametrize(
    "lead, batch_size", [((0,), None), ((2, 0), 2)], ids=["B=0", "2x0-chunked"]
)
def test_an_empty_batch_gives_empty_results_on_both_roads(lead, batch_size):
    # The closed Hessian raised ZeroDivisionError ("integer modulo by zero") on x of shape (0, n).
    net = jprop.MLP((3, 64, 64, 2))
    params, _ = params_and_input(net, jnp.float32)
    x = jnp.zeros(lead + (3,))
    for name, tail in [
        ("hessian", (2, 3, 3)),
        ("laplacian", (2,)),
        ("hessian_diagonal", (2, 3)),
        ("jacobian", (2, 3)),
    ]:
        for method in ("closed", "autodiff"):
            got = getattr(jprop, name)(net, method=method, batch_size=batch_size)(params, x)
            assert got.shape == lead + tail, (name, method, got.shape)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jprop.hessian(net, method="closed")(p, x))))(params)
    assert all(not bool(jnp.any(leaf)) for leaf in jax.tree.leaves(grads))


def test_check_selects_from_its_oracle_what_the_options_select():
    # check passed dims/outputs to the transform but not to its oracle: 0.40 for a correct
    # Laplacian over dims (0, 2), a crash ("shapes differ") with outputs.
    net = jprop.MLP((3, 8, 3))
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(4,))
    for transform, options in [
        (jprop.laplacian, {"dims": (0, 2)}),
        (jprop.hessian_diagonal, {"dims": (2, 1, 0)}),
        (jprop.laplacian, {"outputs": (1,)}),
        (jprop.hessian_diagonal, {"outputs": (2, 0), "dims": (1,)}),
    ]:
        assert jprop.check(transform, net, params, x, **options) < 1e-6, options


def test_dims_must_be_static_ints_and_x_may_be_a_list():
    net = jprop.MLP((3, 8, 2))
    params, _ = params_and_input(net, jnp.float32)
    with pytest.raises(TypeError, match=r"must be static Python ints \(a tuple\).*dims=\(0, 2\)"):
        jprop.laplacian(net, dims=jnp.array([0, 2]))
    with pytest.raises(TypeError, match=r"traced array.*static_argnums"):
        jax.jit(lambda d: jprop.laplacian(net, dims=d))(jnp.array([0, 2]))
    rows = [[0.1, 0.2, 0.3], [0.0, -1.0, 2.0]]
    for name in ("laplacian", "jacobian", "hessian"):
        got = getattr(jprop, name)(net)(params, rows)
        assert_close(got, getattr(jprop, name)(net)(params, jnp.asarray(rows)), 0.0, name)
    assert_close(
        jprop.R(net)(params, rows[0], rows[1]),
        jprop.R(net)(params, jnp.asarray(rows[0]), jnp.asarray(rows[1])),
        0.0,
        "R",
    )
    with pytest.raises(TypeError, match="`x` must be an array of floats; got a list"):
        jprop.laplacian(net)(params, [[1.0, 2.0], [3.0]])


@pytest.mark.parametrize("method", ["closed", "autodiff"])
def test_a_confident_softmax_keeps_its_small_classes_share(method):
    # y = softmax(z) with z_2 − z_1 ≈ 42: y_2 = 1 in float64, and v − ⟨y, v⟩ cancelled the small
    # class's share, so the dominant output's Hessian came out with the wrong sign (+7.2e-20 where
    # it is −1.0e-19 = −H_1, as Σ_k y_k = 1 makes Σ_k H_k = 0).
    net = jprop.MLP((1, 2), output="softmax")
    params = [{"W": jnp.array([[0.3457], [0.8218]]), "b": jnp.array([0.1652, -0.6514])}]
    x = jnp.array([[90.5]])
    z = jnp.float64(90.5) * (0.8218 - 0.3457) - 0.6514 - 0.1652
    small = jnp.exp(-z) * (0.8218 - 0.3457) ** 2  # H_1 = y_1 (1 − y_1)(1 − 2y_1) Δw² ≈ e^{−z} Δw²
    H = jprop.hessian(net, method=method)(params, x)[0, :, 0, 0]
    assert_close(H, jnp.array([small, -small]), 1e-12)
    L = jprop.laplacian(net, method=method)(params, x)[0]
    assert_close(L, jnp.array([small, -small]), 1e-12)
