"""jprop transforms behave like JAX functions: built once, traced once, losses that jax.grad and
optax take as they are, both differentiation modes, vmap over parameters, nesting; and the
hand-written derivative rules (Laplacian, Jacobian, Hessian, its diagonal, the Hessian-vector product)
against autodiff and float64 differences."""

import gc
import inspect
import re
import weakref

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import (
    ARCH_IDS,
    ARCHITECTURES,
    LOGSIG,
    SCALAR_OUT,
    WIDER_IN,
    assert_close,
    central_differences,
    first_tangents_by_slices,
    flat,
    normal,
    pair,
    params_and_input,
    swap_road,
)
from jax.flatten_util import ravel_pytree

import jprop
from jprop import _program
from jprop.quantities import _forward_laplacian, _trained_curvature, _trained_jacobian, _transforms

# ----------------------------------------------------------------------------------------------
# Built once, traced once


# One transform per kind of program: a closed form, the Laplacian's rule, a loss, a composite.
@pytest.mark.parametrize("quantity", ["hessian", "laplacian", "jprop_v", "tangent_prop"])
def test_rebuilding_a_transform_inline_compiles_it_once(quantity, compiles):
    # Rebuilding the transform per call, as a user writes it inline, and calling it eagerly must
    # reuse the program compiled by the first call: no XLA compilation after it. This fails if the
    # transform is rebuilt, retraced or recompiled.
    net = jprop.MLP((4, 32, 32, 2))
    params, x = params_and_input(net, jnp.float32, batch=(8,))
    args = {
        "jprop_v": (x, jnp.zeros((8, 2), jnp.float32)),
        "tangent_prop": (jnp.ones((8, 3, 4), jnp.float32),),
    }.get(quantity, ())
    others = [jax.tree.map(lambda a: scale * a, params) for scale in (1.5, 2.0, 3.0)]
    first = getattr(jprop, quantity)(net)(params, x, *args)
    assert compiles.count >= 1
    after_first = compiles.count
    again = [getattr(jprop, quantity)(net)(p, x, *args) for p in others]
    assert compiles.count == after_first
    for value in again:  # the new parameter values were used
        assert not np.allclose(np.asarray(value), np.asarray(first))
    assert_close(getattr(jprop, quantity)(net)(params, x, *args), first, 0.0)
    jitted = jax.jit(lambda p, x, *a: getattr(jprop, quantity)(net)(p, x, *a))(params, x, *args)
    assert_close(jitted, first, 1e-6)  # under a user's jit: the same function


def test_the_finite_difference_oracles_compile_once(compiles):
    """`fd_jacobian`, `fd_hessian` and `check`, rebuilt and called again with new parameters,
    reuse their float64 programs."""
    net = jprop.MLP((3, 8, 2))
    params, x = params_and_input(net, jnp.float32, batch=(4,))
    again = jax.tree.map(lambda a: 2.0 * a, params)
    first = [
        jprop.fd_jacobian(net)(params, x),
        jprop.fd_hessian(net)(params, x),
        jprop.check(jprop.laplacian, net, params, x),
    ]
    after_first = compiles.count
    second = [
        jprop.fd_jacobian(net)(again, x),
        jprop.fd_hessian(net)(again, x),
        jprop.check(jprop.laplacian, net, again, x),
    ]
    assert compiles.count == after_first
    assert first[0].dtype == second[1].dtype == jnp.float64
    assert not np.allclose(first[1], second[1])  # the new parameters were used
    assert first[2] < 1e-6 and second[2] < 1e-6


def test_arguments_by_name_equal_arguments_by_position_and_compile_once(compiles):
    """A transform's or objective's arguments may be passed by the names its error messages use
    (`key=`, `sigma=`, `b=`, `targets=`): the same numbers, and no second program."""
    net = jprop.MLP((3, 8, 1))
    params, x = params_and_input(net, jnp.float32, batch=(4,))
    key, sigma = jax.random.key(1), jnp.eye(3)[:, :2]
    estimate = jprop.laplacian(net, estimator="rademacher", probes=2)
    operator = jprop.hessian_trace(net, drift="given")
    tangents = jnp.ones((4, 1, 3), jnp.float32)
    objective = jprop.tangent_prop(net)
    by_position = [
        estimate(params, x, key),
        operator(params, x, sigma, x),
        objective(params, x, tangents, jnp.zeros((4, 1, 1), x.dtype)),
    ]
    compiled = compiles.count
    by_name = [
        estimate(params, x, key=key),
        operator(params, x, b=x, sigma=sigma),
        objective(params, x, targets=jnp.zeros((4, 1, 1), x.dtype), tangents=tangents),
    ]
    assert compiles.count == compiled
    for a, b in zip(jax.tree.leaves(by_position), jax.tree.leaves(by_name)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(by_position[0], estimate(params, x, jax.random.key(2)))  # key is used
    assert str(inspect.signature(operator)) == "(params, x, sigma, b)"  # what help() shows


def test_the_compile_counter_sees_a_transform_built_anew(compiles):
    # The counter behind the tests above: with the transform caches emptied between two calls, the
    # second call builds a new jitted program, and the counter must see it compile.
    net = jprop.MLP((4, 32, 32, 2))
    params, x = params_and_input(net, jnp.float32, batch=(8,))
    jprop.hessian(net)(params, x)
    compiled = compiles.count
    _program.clear_caches()
    jprop.hessian(net)(params, x)
    assert compiles.count > compiled


def test_a_generic_model_is_traced_once_per_shape(empty_caches):
    calls = {"f": 0}

    def f(params, x):  # counts how often jprop traces the user's model
        calls["f"] += 1
        return jnp.tanh(params * x)

    params, x = jnp.arange(3.0), jnp.ones((5, 3))
    jprop.hessian(f)(params, x)
    traced = calls["f"]
    for _ in range(3):
        jprop.hessian(f)(params, x)
        jprop.hessian(f)(params + 1.0, x + 2.0)
    assert calls["f"] == traced
    jprop.hessian(f)(params, jnp.ones((7, 3)))  # a new shape is a new program
    assert calls["f"] > traced


def test_a_function_reads_its_closure_when_traced_as_jax_jit_does(empty_caches):
    # JAX's jit semantics, documented (docs/howto/models.md, jprop.road): a closed-over value is
    # fixed when the program is traced; what changes belongs in params or the data.
    scale = 1.0
    f = lambda p, x: scale * jnp.sum(jnp.sin(p * x))  # noqa: E731
    params, x = jnp.ones(3), jnp.ones((2, 3))
    first = jprop.laplacian(f)(params, x)
    scale = 2.0
    assert_close(jprop.laplacian(f)(params, x), first, 0.0)
    g = lambda p, x: p[0] * jnp.sum(jnp.sin(p[1:] * x))  # noqa: E731
    values = [jprop.laplacian(g)(jnp.r_[s, params], x) for s in (1.0, 2.0)]
    assert_close(values[1], 2 * values[0], 1e-6)


def test_transforms_built_on_a_function_are_freed_with_it(empty_caches):
    # The cache held up to 512 closures and their programs: 12 inline lambdas closing over 25 MiB
    # each grew the process by 511 MiB. A transform now lives as long as its function.
    x = jnp.ones((2, 3))
    alive = []
    for i in range(4):
        big = jnp.full((1000,), float(i))
        f = lambda p, x, big=big: jnp.sum(jnp.sin(x)) * big[0]  # noqa: E731
        transform = jprop.laplacian(f)
        transform(None, x)
        assert jprop.laplacian(f)(None, x) is not None and jprop.laplacian(f).model is f
        alive.append((weakref.ref(f), weakref.ref(big)))
        if i == 3:
            kept = transform  # a transform in the user's hands keeps its function
        del f, big, transform
    gc.collect()
    assert [f() is None for f, _ in alive] == [True, True, True, False]
    assert [b() is None for _, b in alive] == [True, True, True, False]
    assert_close(kept(None, x), -3.0 * jnp.sin(x).sum(-1), 1e-6)


def test_transforms_built_alike_are_the_same_function():
    net = jprop.MLP((3, 8, 1))
    assert jprop.laplacian(net) is jprop.laplacian(jprop.MLP((3, 8, 1)))
    assert jprop.laplacian(net) is not jprop.laplacian(net, batch_size=4)
    assert jprop.jprop_u(net) is jprop.jprop_u(net, method="auto")


# ----------------------------------------------------------------------------------------------
# Objectives are losses


def test_objectives_are_scalar_losses_that_add_and_train_with_optax():
    net = WIDER_IN
    params, x = params_and_input(net, jnp.float64, seed=2, batch=(6,))
    v = normal(3, x.shape, jnp.float64)
    t = jnp.zeros((6, net.n_outputs), jnp.float64)
    e_v = jprop.jprop_v(net, method="closed")
    penalty = jprop.jacobian_penalty(net)

    def data_loss(p):
        return 0.5 * jnp.mean(jnp.sum((net(p, x) - t) ** 2, -1))

    def total(p):
        return data_loss(p) + 0.3 * e_v(p, x, v, t) + 0.1 * penalty(p, x)

    assert e_v(params, x, v, t).shape == ()
    value, grads = jax.value_and_grad(total)(params)
    reference = jax.jit(  # the oracle compiled; the objective above is called as users call it
        jax.value_and_grad(
            lambda p: (
                data_loss(p)
                + 0.3 * jprop.jprop_v(net, method="autodiff")(p, x, v, t)
                + 0.1
                * 0.5
                * jnp.mean(jnp.sum(jax.vmap(jax.jacfwd(lambda z: net(p, z)))(x) ** 2, (1, 2)))
            )
        )
    )(params)
    assert_close(value, reference[0], 1e-12, "value")
    assert_close(flat(grads), flat(reference[1]), 1e-11, "grads")
    # optax takes the loss as it is (optax mixes Python floats and int32 step counts, which the
    # suite's strict promotion refuses; users run standard promotion).
    optimizer = optax.adam(1e-2)
    with jax.numpy_dtype_promotion("standard"):
        state = optimizer.init(params)
        updates, state = optimizer.update(grads, state, params)
    assert float(total(optax.apply_updates(params, updates))) < float(value)


def test_jax_grad_of_an_objective_runs_the_passes(monkeypatch):
    # Swap the passes for a wrong rule: jax.grad of the loss must change, its value must not.
    net = SCALAR_OUT
    params, x = params_and_input(net, jnp.float64, batch=(3,))
    u, a = jnp.ones((3, 1)), jnp.zeros_like(x)
    right_value, right = pair(jprop.jprop_u(net))(params, x, u, a)
    original = jprop._dispatch.REGISTRY["jprop_u"].closed

    def doubled(*args):
        value, grads = original(*args)
        return value, jax.tree.map(lambda g: 2 * g, grads)

    swap_road(monkeypatch, "jprop_u", closed=doubled)
    value, wrong = pair(jprop.jprop_u(net))(params, x, u, a)
    assert_close(value, right_value, 0.0)
    assert_close(flat(wrong), 2 * flat(right), 1e-14)


# E_u (the four passes) and Double Backpropagation (with the output injection); E_v and the
# bilinear primitive run the same engine and are held to the autodiff road in test_jprop.py.
@pytest.mark.parametrize("name", ["jprop_u", "double_backprop"])
def test_forward_mode_and_second_order_through_objectives(name):
    # jax.jvp, jax.jacfwd and jax.hessian with respect to the weights; jax.grad w.r.t. x; vmap over
    # stacked parameters: the closed road gives the autodiff road's numbers.
    net = jprop.MLP((3, 4, 2))
    params, x = params_and_input(net, jnp.float64, seed=7, batch=(3,))
    m_side = normal(8, (3, 2), jnp.float64)
    args = {
        "jprop_u": (m_side, x),
        "jprop_v": (x, m_side),
        "bilinear": (m_side, x),
        "double_backprop": (m_side, 0.5),
    }[name]
    closed = getattr(jprop, name)(net, method="closed")
    auto = getattr(jprop, name)(net, method="autodiff")
    direction = jax.tree.map(lambda p: jnp.cos(p), params)

    def modes(e):
        return (
            jax.jvp(lambda p: e(p, x, *args), (params,), (direction,))[1],
            jax.jacfwd(lambda p: e(p, x, *args))(params),
            jax.hessian(lambda p: e(p, x, *args))(params),
            jax.grad(lambda z: e(params, z, *args))(x),
            jax.vmap(lambda p: jax.grad(e)(p, x, *args))(
                jax.tree.map(lambda p: jnp.stack([p, 1.5 * p]), params)
            ),
        )

    got, expected = jax.jit(lambda: (modes(closed), modes(auto)))()  # one compiled program
    chex.assert_trees_all_close(got, expected, rtol=1e-10, atol=1e-12)


def test_fit_takes_a_loss_and_refuses_the_old_pair_form():
    loss = lambda p, x: jnp.sum((p - x) ** 2)  # noqa: E731
    result = jprop.fit(loss, jnp.zeros(3), jnp.ones(3), optimizer=optax.sgd(0.25), progress=False)
    assert bool(jnp.allclose(result.params, 1.0))
    with pytest.raises(TypeError, match="must return a scalar loss.*old form"):
        jprop.fit(jax.value_and_grad(loss), jnp.zeros(3), jnp.ones(3), progress=False)


# ----------------------------------------------------------------------------------------------
# Training through an input derivative: the hand-written tangent passes

# Each quantity with a hand-written rule.
TRAINED = ["laplacian", "jacobian", "hessian", "hessian_diagonal", "hessian_vector_product"]
HVP = "hessian_vector_product"


def _hvp_arguments(net, x):
    """A fixed output weighting g and direction r for x's batch (constants of the loss)."""
    batch = x.shape[0]
    g = np.cos(1.0 + np.arange(batch * net.n_outputs)).reshape(batch, -1).astype(x.dtype)
    r = np.sin(2.0 + np.arange(x.size)).reshape(x.shape).astype(x.dtype)
    return jax.device_put(g), jax.device_put(r)


def _pinn_loss(transform, net, quantity=None):
    q = transform(net)
    if quantity == HVP:
        return lambda p, x: jnp.mean(jnp.sin(q(p, x, *_hvp_arguments(net, x))) ** 2)
    return lambda p, x: jnp.mean(jnp.sin(q(p, x)) ** 2)


def _trained_loss(quantity, net, method="auto"):
    return _pinn_loss(lambda f: getattr(jprop, quantity)(f, method=method), net, quantity)


# The curvature rules share one forward pass; they run on the nets that cover its branches (a
# linear or curved output, several hidden layers, none, a linear hidden layer).
CURVATURE_NETS = {(4, 6, 5, 1), (2, 7, 3), (5, 4, 4, 4, 3), (4, 3), (2, 3, 3, 2)}


def _rules_on(net):
    return [q for q in TRAINED if q in ("laplacian", "jacobian") or net.sizes in CURVATURE_NETS]


# Two of the architectures: rows (WIDER_IN) and columns (LOGSIG) for the Jacobian. Random
# architectures (depth 0-3), activations and dtypes hold the same rules to the autodiff road in
# user_lane/test_differential.py.
TRAINED_NETS = [WIDER_IN, LOGSIG]


@pytest.mark.parametrize(
    "net", TRAINED_NETS, ids=[ARCH_IDS[ARCHITECTURES.index(a)] for a in TRAINED_NETS]
)
def test_trained_rules_against_autodiff(net):
    # The Jacobian's nets cover both of its passes: rows (m < n) and columns (n <= m). Every rule
    # on this net and both roads run in one jitted program (one compile per net).
    params, x = params_and_input(net, jnp.float64, seed=11, batch=(5,))
    direction = jax.tree.map(np.sin, params)

    @jax.jit
    def grad_and_jvp(params, x):
        return {
            quantity: [
                (
                    jax.grad(loss, (0, 1))(params, x),
                    jax.jvp(lambda p: loss(p, x), (params,), (direction,))[1],  # noqa: B023
                )
                for loss in (_trained_loss(quantity, net, m) for m in ("closed", "autodiff"))
            ]
            for quantity in _rules_on(net)
        }

    results = grad_and_jvp(params, x)
    assert len(results) == (5 if net.sizes in CURVATURE_NETS else 2)
    for quantity, ((got, got_jvp), (expected, expected_jvp)) in results.items():
        assert_close(flat(got[0]), flat(expected[0]), 1e-12, f"{quantity}: grad in the weights")
        assert_close(flat(got[1]), flat(expected[1]), 1e-12, f"{quantity}: grad in the input")
        assert_close(got_jvp, expected_jvp, 1e-12, f"{quantity}: jvp")


@pytest.mark.parametrize(
    "sizes, batch, wide_first, loops",
    [
        ((5, 6, 4, 3), 16, False, True),  # strided chunks of 8, the first layer's outer products
        ((5, 6, 4, 3), 13, True, True),  # a prime batch (contiguous chunks), W¹'s rows per example
        ((4, 7, 2), 24, False, True),  # one hidden layer, a curved output, three strided chunks
        ((5, 6, 4, 3), 16, False, False),  # the whole batch at once, as on JAX before 0.10
    ],
)
def test_the_hessian_rule_in_chunks(monkeypatch, sizes, batch, wide_first, loops):
    """The Hessian's rule over batches its contraction splits into chunks (strided, or contiguous
    when the batch has no even split), or over the whole batch where JAX cannot transpose a loop
    in a rule, with the first layer's part formed batch-wide or, past `MAX_FIRST_LAYER_PRODUCTS`,
    among every example's rows: jax.grad in (params, x) and jax.jvp against the autodiff road, and
    the weight gradient against float64 central differences."""
    from jprop.quantities import _closed

    if wide_first:
        monkeypatch.setattr(_closed, "MAX_FIRST_LAYER_PRODUCTS", 0)
    if not loops:
        monkeypatch.setattr(_closed, "RULES_MAY_LOOP", False)
    net = jprop.MLP(sizes, output="tansig" if len(sizes) == 3 else "purelin")
    params, x = params_and_input(net, jnp.float64, seed=14, batch=(batch,))
    steps = {16: 2, 13: None, 24: 3}[batch]  # the chunking each case reaches
    assert _closed.strided_steps(batch, _closed.CONTRACTION_CHUNK) == steps
    direction = jax.tree.map(np.cos, params)
    losses = [_trained_loss("hessian", net, m) for m in ("closed", "autodiff")]

    @jax.jit
    def both(params, x):
        return [
            (
                jax.grad(loss, (0, 1))(params, x),
                jax.jvp(lambda p: loss(p, x), (params,), (direction,))[1],  # noqa: B023
            )
            for loss in losses
        ]

    (got, got_jvp), (expected, expected_jvp) = both(params, x)
    assert_close(flat(got[0]), flat(expected[0]), 1e-12, "grad in the weights")
    assert_close(got[1], expected[1], 1e-12, "grad in the input")
    assert_close(got_jvp, expected_jvp, 1e-12, "jvp")
    w, unravel = ravel_pytree(params)
    loss = jax.jit(lambda w: losses[0](unravel(w), x))
    assert_close(flat(got[0]), central_differences(loss, w), 1e-7, "weights vs differences")


@pytest.mark.parametrize(
    "quantity, sizes, recomputed",
    [
        ("laplacian", (10, 12, 5, 1), False),  # h₁ ≥ n: along the 10 inputs, not h₁ directions
        ("laplacian", (10, 11, 5, 2), True),  # the first layer's T¹ formed again, by slices
        ("hessian_diagonal", (10, 6, 5, 1), False),  # one output: the closed value's reduction
        ("hessian", (10, 6, 5, 1), False),
        ("jacobian", (10, 6, 12), False),
    ],
)
def test_the_rules_with_more_inputs_than_they_unroll(monkeypatch, quantity, sizes, recomputed):
    # Above UNROLLED_TANGENTS inputs the tangent sums are reductions and the per-tangent scaling a
    # broadcast: the other branch of the same rules (and of the closed values), against autodiff
    # (value, grad in weights and x, jvp) and float64 central differences in the weights. With
    # `recomputed`, the Laplacian's rule forms T¹ dWᵀ + Ṫ¹ Wᵀ from T¹'s and Ṫ¹'s factors, in slices
    # of the batch (five examples: two slices of two and the rest), as it does for a large T¹.
    net = jprop.MLP(sizes, output="tansig" if len(sizes) == 3 else "purelin")
    assert net.sizes[0] > _forward_laplacian.UNROLLED_TANGENTS
    slices, sliced = first_tangents_by_slices(monkeypatch) if recomputed else ([], False)
    params, x = params_and_input(net, jnp.float64, seed=13, batch=(5,) if recomputed else (3,))
    direction = jax.tree.map(np.cos, params)
    losses = [_trained_loss(quantity, net, m) for m in ("closed", "autodiff")]
    assert_close(*(jax.jit(loss)(params, x) for loss in losses), 1e-12, "value")
    (got, got_x), (expected, expected_x) = (
        jax.jit(jax.grad(loss, (0, 1)))(params, x) for loss in losses
    )
    assert_close(flat(got), flat(expected), 1e-12, "grad in the weights")
    assert_close(got_x, expected_x, 1e-12, "grad in the input")
    pushed, expected_pushed = (
        jax.jit(lambda p, loss=loss: jax.jvp(lambda q: loss(q, x), (p,), (direction,))[1])(params)
        for loss in losses
    )
    assert_close(pushed, expected_pushed, 1e-12, "jvp")
    w, unravel = ravel_pytree(params)
    fd = central_differences(lambda w: losses[0](unravel(w), x), w)
    assert_close(flat(got), fd, 1e-7, "weights vs differences")
    assert bool(slices) == sliced and all(shape == (5, 11) for shape in slices)


@pytest.mark.parametrize(
    "quantity, sizes",
    [
        ("laplacian", (3, 6, 5, 2)),
        ("jacobian", (3, 6, 5, 2)),
        ("jacobian", (2, 5, 3)),
        ("hessian", (3, 6, 5, 2)),
        ("hessian_diagonal", (3, 6, 5, 2)),  # the forward Laplacian's pass, per tangent
        ("hessian_diagonal", (6, 5, 4, 2)),  # the sum over units differentiated
        (HVP, (3, 6, 5, 2)),
    ],
)
def test_trained_rules_against_float64_differences(quantity, sizes):
    net = jprop.MLP(sizes, activation="logsig", output="tansig")
    params, x = params_and_input(net, jnp.float64, seed=12, batch=(4,))
    loss = _trained_loss(quantity, net, "closed")
    w, unravel = ravel_pytree(params)
    grads = jax.jit(jax.grad(loss, (0, 1)))(params, x)
    fd = central_differences(lambda w: loss(unravel(w), x), w)
    assert_close(flat(grads[0]), fd, 1e-7, "weights")
    fdx = central_differences(lambda z: loss(params, z.reshape(x.shape)), x.ravel())
    assert_close(grads[1].ravel(), fdx, 1e-7, "input")


@pytest.mark.parametrize("quantity", ["laplacian", "jacobian", "hessian_diagonal", HVP])
def test_trained_rules_second_order_vmap_and_nesting(quantity):
    net = jprop.MLP((2, 3, 3, 1))
    params, x = params_and_input(net, jnp.float64, seed=13, batch=(3,))
    stacked = jax.tree.map(lambda p: np.stack([p, 0.5 * p, -p]), params)  # an ensemble

    @jax.jit
    def hessian_and_ensemble(params, x):
        return [
            (jax.hessian(loss)(params, x), jax.vmap(jax.grad(loss), (0, None))(stacked, x))
            for loss in (_trained_loss(quantity, net, m) for m in ("closed", "autodiff"))
        ]

    ours, theirs = hessian_and_ensemble(params, x)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-10, atol=1e-12)
    if quantity == "laplacian":  # the biharmonic Δ²f: the Laplacian of a jprop.laplacian
        inner = jprop.laplacian(net)
        biharmonic = jprop.laplacian(lambda p, z: inner(p, z))(params, x)
        reference = jprop.laplacian(
            lambda p, z: jnp.trace(jax.hessian(lambda v: net(p, v))(z), axis1=-2, axis2=-1)
        )(params, x)
        assert_close(biharmonic, reference, 1e-10, "biharmonic")
    elif quantity == "jacobian":  # the input Hessian as the Jacobian of a function calling it
        inner = jprop.jacobian(net, method="closed")
        nested = jprop.jacobian(lambda p, z: inner(p, z)[0])(params, x)
        assert_close(
            nested, jprop.hessian(net, method="autodiff")(params, x)[:, 0], 1e-10, "nested"
        )


def _tripled_parts(original):
    # (Ċ, C, A, Ȧ) per layer: tripling Ċ and Ȧ triples the tangent and leaves the value.
    return lambda *args: [(3 * cd, c, a, 3 * ad) for cd, c, a, ad in original(*args)]


def _tripled(original):
    return lambda *args: 3 * original(*args)


@pytest.mark.parametrize(
    "quantity, module, name, wrong",
    [
        ("laplacian", _forward_laplacian, "_tangent", _tripled),
        ("jacobian", _trained_jacobian, "_rows_tangent", _tripled),
        ("jacobian", _trained_jacobian, "_columns_tangent", _tripled),
        ("hessian", _trained_curvature, "_tangent", _tripled_parts),
        ("hessian_diagonal", _forward_laplacian, "_tangent", _tripled),  # n = 3: per tangent
        ("hessian_diagonal", _trained_curvature, "_tangent", _tripled_parts),  # n = 6
        (HVP, _trained_curvature, "_hvp_tangent", _tripled),
    ],
)
def test_trained_rules_are_used(monkeypatch, quantity, module, name, wrong):
    # A deliberately wrong tangent pass changes jax.grad (and only the derivative), on a net whose
    # layers are sin, softplus and a sigmoid output (every slope the rule reads; the tanh nets of
    # the other tests train through the same rule).
    n, m = (2, 3) if name == "_columns_tangent" else (3, 1)
    if quantity == "hessian_diagonal" and module is _trained_curvature:
        n = _trained_curvature.PER_TANGENT_DIAGONAL_INPUTS + 2
    nets = [jprop.MLP((n, 6, 5, m), activation=("sin", "softplus"), output="logsig")]
    data = [params_and_input(net, jnp.float64, batch=(4,)) for net in nets]

    def values_and_grads():
        _program.clear_caches()
        return [
            jax.jit(jax.value_and_grad(_trained_loss(quantity, net, "closed")))(params, x)
            for net, (params, x) in zip(nets, data)
        ]

    right = values_and_grads()
    monkeypatch.setattr(module, name, wrong(getattr(module, name)))
    for (value, wrong_grad), (right_value, right_grad) in zip(values_and_grads(), right):
        assert_close(value, right_value, 0.0)
        assert_close(flat(wrong_grad), 3 * flat(right_grad), 1e-13)


@pytest.mark.parametrize("dims", [(0, 4), (0, 1, 2, 3, 5)])
def test_the_diagonal_rule_follows_the_number_of_chosen_inputs(monkeypatch, dims):
    # On a 6-input net, two chosen inputs train through the per-tangent pass and five through the
    # sum over units: each against autodiff, and tripling that rule's tangent triples the grad.
    net = jprop.MLP((6, 5, 4, 2), activation="softplus")
    params, x = params_and_input(net, jnp.float64, seed=7, batch=(4,))

    def loss(method):
        return _pinn_loss(lambda f: jprop.hessian_diagonal(f, method=method, dims=dims), net)

    ours, theirs = (jax.jit(jax.grad(loss(m), (0, 1)))(params, x) for m in ("closed", "autodiff"))
    assert_close(flat(ours), flat(theirs), 1e-12, f"grad in (params, x), dims {dims}")
    per_tangent = len(dims) <= _trained_curvature.PER_TANGENT_DIAGONAL_INPUTS
    module, wrong = (
        (_forward_laplacian, _tripled) if per_tangent else (_trained_curvature, _tripled_parts)
    )
    monkeypatch.setattr(module, "_tangent", wrong(module._tangent))
    _program.clear_caches()
    assert_close(
        flat(jax.jit(jax.grad(loss("closed")))(params, x)), 3 * flat(ours[0]), 1e-13, "rule used"
    )


@pytest.mark.parametrize("net", [jprop.MLP((3, 6, 5, 2)), jprop.MLP((2, 4, 3), output="tansig")])
def test_hessian_vector_product_rule_in_its_weighting_and_direction(net):
    # g and r are arguments too: the rule's tangents ġ and ṙ against autodiff's.
    params, x = params_and_input(net, jnp.float64, seed=5, batch=(4,))
    g, r = _hvp_arguments(net, x)
    losses = [
        lambda p, x, g, r, hvp=jprop.hessian_vector_product(net, method=m): jnp.sum(
            jnp.sin(hvp(p, x, g, r)) ** 2
        )
        for m in ("closed", "autodiff")
    ]
    ours, theirs = (jax.jit(jax.grad(loss, (0, 1, 2, 3)))(params, x, g, r) for loss in losses)
    assert_close(flat(ours), flat(theirs), 1e-12, "grad in (params, x, g, r)")
    tangents = (jax.tree.map(np.cos, params), np.cos(x), np.sin(g), np.cos(r))
    ours, theirs = (
        jax.jit(lambda *a, loss=loss: jax.jvp(loss, a, tangents)[1])(params, x, g, r)
        for loss in losses
    )
    assert_close(ours, theirs, 1e-12, "jvp in (params, x, g, r)")


@pytest.mark.parametrize(
    "quantity, sizes",
    [("laplacian", (2, 8, 8, 1)), ("jacobian", (2, 8, 8, 3)), ("hessian_diagonal", (2, 8, 8, 2))],
)
def test_training_in_chunks_equals_the_whole_batch(quantity, sizes):
    net = jprop.MLP(sizes)
    params, x = params_and_input(net, jnp.float64, seed=3, batch=(11,))
    transform = getattr(jprop, quantity)
    whole = jax.jit(jax.grad(_pinn_loss(lambda f: transform(f, method="closed"), net)))(params, x)
    chunked = jax.jit(
        jax.grad(_pinn_loss(lambda f: transform(f, method="closed", batch_size=4), net))
    )(params, x)
    assert_close(flat(chunked), flat(whole), 1e-13)


# ----------------------------------------------------------------------------------------------
# jax.vmap is the batch


def _counting(calls: list, function):
    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return counted


def test_a_users_vmap_runs_the_batched_closed_form(monkeypatch):
    join_the_batch = _transforms._join_the_batch
    net = jprop.MLP((3, 6, 5, 2))
    params, x = params_and_input(net, jnp.float64, seed=4, batch=(4, 5))
    g = normal(5, (4, 5, 2), jnp.float64)
    for name in ("hessian", "laplacian", "jacobian", "hessian_diagonal"):
        transform = getattr(jprop, name)(net, method="closed")
        joined = []
        monkeypatch.setattr(_transforms, "_join_the_batch", _counting(joined, join_the_batch))
        mapped = jax.vmap(jax.vmap(lambda xi: transform(params, xi)))(x)  # nested vmaps
        assert joined, name  # the batching rule ran the whole batch, not example by example
        assert_close(mapped, transform(params, x), 1e-13, name)
        swapped = jax.vmap(lambda xi: transform(params, xi), in_axes=1, out_axes=1)(x)
        assert_close(swapped, transform(params, x), 1e-13, f"{name} in_axes=1")
    hvp = jprop.hessian_vector_product(net)
    r = jnp.ones(3, jnp.float64)  # shared by every example: not mapped
    mapped = jax.vmap(lambda xi, gi: hvp(params, xi, gi, r))(x[0], g[0])
    assert_close(mapped, hvp(params, x[0], g[0], jnp.broadcast_to(r, (5, 3))), 1e-13, "hvp")
    # vmap over stacked parameters (an ensemble) and jax.grad under vmap still work.
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), params)
    lap = jprop.laplacian(net)
    ensemble = jax.vmap(lambda p: lap(p, x[0]))(stacked)
    assert_close(ensemble[1], lap(jax.tree.map(lambda p: 2 * p, params), x[0]), 1e-13)
    grads = jax.vmap(jax.grad(lambda xi: jnp.sum(lap(params, xi))))(x[0])
    expected = jax.grad(lambda z: jnp.sum(lap(params, z)))(x[0])
    assert_close(grads, expected, 1e-13, "grad under vmap")
    diagonal = jprop.hessian_diagonal(net)  # 3 inputs: the per-tangent rule
    grads = jax.vmap(jax.grad(lambda xi: jnp.sum(diagonal(params, xi))))(x[0])
    expected = jax.grad(lambda z: jnp.sum(diagonal(params, z)))(x[0])
    assert_close(grads, expected, 1e-13, "diagonal: grad under vmap")


# ----------------------------------------------------------------------------------------------
# One dispatch layer


def test_road_says_which_road_auto_takes_and_why():
    net = jprop.MLP((2, 64, 1))
    assert jprop.road(net, "laplacian").road == "closed"
    assert "forward Laplacian" in jprop.road(net, "laplacian").reason
    hessian_roads = {  # sizes -> (road, a word of the reason)
        (64, 64, 2): ("autodiff", "inputs"),
        (3, 64, 1): ("autodiff", "one output"),
        (4, 32, 2): ("autodiff", "width"),
        (8, 128, 4): ("closed", "sum over hidden units"),
        (3, 2): ("closed", "no hidden layer"),
    }
    for sizes, (expected, word) in hessian_roads.items():
        chosen = jprop.road(jprop.MLP(sizes), "hessian")
        assert chosen.road == expected and word in chosen.reason, (sizes, chosen)
    assert jprop.road(net, "jacobian").road == "autodiff"  # m < n: jacrev
    assert jprop.road(jprop.MLP((2, 8, 3)), "jacobian").road == "closed"  # n <= m: columns
    assert jprop.road(net, "jprop_v", method="closed").road == "closed"
    rbf = jprop.RBFNetwork(2, 3, 1)
    assert jprop.road(rbf, "laplacian").road == "autodiff"
    assert jprop.road(jprop.SquaredError(net), "weight_curvature").road == "closed"
    assert jprop.road(lambda p, x, t: 0.0, "weight_curvature").road == "autodiff"
    with pytest.raises(ValueError, match="unknown quantity 'laplacien'.*'laplacian'"):
        jprop.road(net, "laplacien")
    with pytest.raises(ValueError, match="method='closed' needs a jprop.MLP"):
        jprop.road(rbf, "hessian", method="closed")


# Every transform and objective jprop exports that takes a method, by its road() name.
ROAD_NAMES = (
    "jacobian", "hessian", "laplacian", "hessian_diagonal", "hessian_vector_product", "R",
    "bilinear", "jprop_u", "jprop_v", "double_backprop", "tangent_prop", "derivative_targets",
    "jacobian_penalty", "SpectralNorm", "log_abs_det_jacobian", "hessian_trace",
)  # fmt: skip


@pytest.mark.parametrize("sizes", [(3, 6, 2), (2, 5, 4), (3, 4, 3)])
def test_road_answers_for_everything_jprop_exports_in_words(sizes):
    import inspect

    takes_method = {
        name
        for name in dir(jprop)
        if callable(getattr(jprop, name))
        and "method" in inspect.signature(getattr(jprop, name)).parameters
    }
    # the weight-curvature transforms share one road, "weight_curvature" (tested below)
    curvature = {n for n in takes_method if "gauss" in n or "weight" in n or "curvature" in n}
    assert takes_method - {"road", "top_eigenpairs"} - curvature == set(ROAD_NAMES)
    for output in ("linear", "softmax"):
        net = jprop.MLP(sizes, output=output)
        for name in ROAD_NAMES:
            for method in ("auto", "closed", "autodiff"):
                chosen = jprop.road(net, name, method=method)
                assert chosen.road in ("closed", "autodiff"), (name, chosen)
                # a rule and its reason in words: no measured ratio or timing
                assert not re.search(r"\d\s*(×|ms\b|µs|%)", chosen.reason), (name, chosen)
        assert jprop.road(net, "tangent_prop").road == jprop.road(net, "jprop_v").road
    rbf = jprop.RBFNetwork(2, 3, 1)
    assert {jprop.road(rbf, name).road for name in ROAD_NAMES} == {"autodiff"}


def test_road_names_the_rule_a_softmax_laplacian_runs(monkeypatch):
    # The forward Laplacian's rule does not cover a softmax output: road() must not name it, and
    # the transform must not run it.
    net = jprop.MLP((3, 6, 3), output="softmax")
    reason = jprop.road(net, "laplacian").reason
    assert "sum over hidden units" in reason and "forward Laplacian" not in reason

    def refuse(*args):
        raise AssertionError("the forward Laplacian ran for a softmax output")

    swap_road(monkeypatch, "laplacian", trained=refuse)
    params, x = params_and_input(net, jnp.float64, seed=3, batch=(4,))
    expected = jprop.laplacian(net, method="autodiff")(params, x)
    assert_close(jprop.laplacian(net)(params, x), expected, 1e-12)
    plain = jprop.MLP((3, 6, 3))
    with pytest.raises(AssertionError, match="forward Laplacian ran"):
        jprop.laplacian(plain)(plain.init(jax.random.key(0), jnp.float64), x)


@pytest.mark.parametrize("sizes", [(3, 6, 5, 2), (2, 5, 4)])  # rows pass, columns pass
def test_jacobian_rules_over_chosen_inputs(sizes):
    # The passes take the inputs `dims` (the transforms' building block for selected columns).
    net = jprop.MLP(sizes)
    params, x = params_and_input(net, jnp.float64, seed=14, batch=(4,))
    dims = (sizes[0] - 1, 0)
    ours = _trained_jacobian.jacobian(net, dims)
    full = jprop.jacobian(net, method="autodiff")
    picked = lambda p, z: full(p, z)[..., list(dims)]  # noqa: E731
    loss = lambda f: lambda p, z: jnp.sum(jnp.sin(f(p, z)))  # noqa: E731
    values, got, expected = jax.jit(  # values and gradients in one compiled program
        lambda: (
            (ours(params, x), picked(params, x)),
            *(jax.grad(loss(f), (0, 1))(params, x) for f in (ours, picked)),
        )
    )()
    assert_close(*values, 1e-12, "value")
    for argnums in (0, 1):
        assert_close(flat(got[argnums]), flat(expected[argnums]), 1e-12, f"grad {argnums}")


@pytest.mark.parametrize("sizes", [(3, 6, 2), (2, 5, 4)])  # m < n, n < m
def test_each_composite_runs_the_primitive_road_names(sizes, monkeypatch):
    # Swap the closed rule of the primitive road() names for one whose gradients are doubled: the
    # composite's gradient must change exactly when road() says it takes the closed road.
    from jprop import _dispatch

    net = jprop.MLP(sizes)
    n, m = sizes[0], sizes[-1]
    params, x = params_and_input(net, jnp.float64, seed=21, batch=(3,))
    calls = {
        "tangent_prop": lambda p, o: jprop.tangent_prop(net, **o)(p, x, normal(220, (3, 2, n))),
        "derivative_targets": lambda p, o: jprop.derivative_targets(net, **o)(
            p, x, jnp.zeros((3, m), jnp.float64), normal(221, (3, m, n))
        ),
        "jacobian_penalty": lambda p, o: jprop.jacobian_penalty(net, **o)(p, x),
    }
    if n == m:
        calls["log_abs_det_jacobian"] = lambda p, o: jprop.log_abs_det_jacobian(net, **o)(p, x)
    sn_state = jprop.SpectralNorm(net).init(params, x, jax.random.key(22))
    calls["SpectralNorm"] = lambda p, o: jprop.SpectralNorm(net, num_iterations=3, **o)(
        p, x, sn_state
    )[0]
    for name, call in calls.items():
        chosen = jprop.road(net, name)
        primitive = re.search(r"through jprop\.(\w+)", chosen.reason).group(1)
        record = _dispatch.REGISTRY[primitive]

        def doubled(*args, original=record.closed):
            value, grads = original(*args)
            return value, jax.tree.map(lambda g: 2 * g, grads)

        with pytest.MonkeyPatch.context() as patch:
            swap_road(patch, primitive, closed=doubled)
            auto = flat(jax.jit(jax.grad(lambda p: call(p, {})))(params))
            reference = flat(jax.jit(jax.grad(lambda p: call(p, {"method": "autodiff"})))(params))
        _program.clear_caches()
        changed = not np.allclose(auto, reference, rtol=1e-9, atol=1e-12)
        assert changed == (chosen.road == "closed"), (name, chosen)


# ----------------------------------------------------------------------------------------------
# A user's JAX configuration


def test_jprop_runs_under_a_users_strict_rank_promotion():
    """Under `jax_numpy_rank_promotion="raise"` (a user's setting that refuses implicit
    broadcasting) models, transforms, estimators, objectives and weight-curvature products run,
    each traced afresh under it, and so do the hand-derived rules when an eager `jax.grad` traces
    them outside any jprop program: jprop allows its own broadcasting where it traces."""
    key = jax.random.key(0)
    mlp = jprop.MLP((3, 6, 6, 2))
    pirate, rbf = jprop.pirate_net(3, 1, width=6, blocks=1), jprop.RBFNetwork(3, 5, 1)
    x, y = normal(1, (4, 3), jnp.float32), jnp.ones((4, 2), jnp.float32)

    def programs(params, net):
        ones = jnp.ones((x.shape[0], net(params, x).shape[-1]), x.dtype)
        out = [
            net(params, x[0]),
            jprop.laplacian(net)(params, x),
            jax.grad(jprop.jprop_v(net))(params, x, jnp.ones_like(x), ones),
        ]
        if net is mlp:
            out += [
                jprop.laplacian(net, estimator="rademacher", probes=2, drift="x")(params, x, key),
                jprop.jacobian(net)(params, x),
                jprop.hessian_diagonal(net)(params, x),
            ]
        return out

    def rules(params):  # the MLP's Laplacian, estimate, Hessian diagonal and Hessian rules
        estimate = jprop.laplacian(mlp, estimator="sparse", probes=2)(params, x, key)
        diagonal = jprop.hessian_diagonal(mlp)(params, x)
        hessian = jprop.hessian(mlp)(params, x)
        lap = jprop.laplacian(mlp)(params, x)
        return jnp.sum(jnp.sin(lap) + estimate) + jnp.sum(diagonal**2) + jnp.sum(jnp.cos(hessian))

    @jax.jit
    def curvature(params):
        loss = jprop.SquaredError(mlp)
        return [
            jprop.weight_hessian_vector_product(loss)(params, params, x, y),
            jprop.gauss_newton_vector_product(loss)(params, params, x, y),
        ]

    with jax.numpy_rank_promotion("raise"):
        for net in (mlp, pirate):
            out = jax.jit(programs, static_argnums=1)(net.init(key, jnp.float32), net)
            assert np.all(np.isfinite(flat(out)))
        assert np.all(np.isfinite(rbf(rbf.init(key, jnp.float32), x)))
        params = mlp.init(key, jnp.float32)
        assert np.all(np.isfinite(flat(jax.grad(rules)(params))))
        assert np.all(np.isfinite(flat(curvature(params))))
        pairs = jprop.top_eigenpairs(jprop.SquaredError(mlp), k=1)(params, x, y)
        assert np.all(np.isfinite(pairs.eigenvalues))
