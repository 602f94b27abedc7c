"""Weight-space curvature: HVPs and the full Hessian against jax.hessian of the flattened loss and
float64 differences, Gauss-Newton against its dense definition, Becker–LeCun against the exact
diagonal where it is exact, eigenpairs against numpy.linalg.eigh, and clear errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TOL_EXACT, assert_close, cosines_like, flat, normal, params_and_input
from jax.flatten_util import ravel_pytree

import jprop

BATCH = 5

# (net, loss kind): squared error on several depths and outputs (softmax included), cross-entropy
# on both canonical outputs, a linear hidden layer.
CASES = [
    (jprop.MLP((3, 5, 2)), "squared"),
    (jprop.MLP((2, 4, 3, 1), output="logsig"), "squared"),
    (jprop.MLP((3, 4, 3), output="softmax"), "squared"),
    (jprop.MLP((2, 3, 3, 2), activation="purelin", output="tansig"), "squared"),
    (jprop.MLP((3, 4, 2), output="logsig"), "cross_entropy"),
    (jprop.MLP((2, 5, 4, 3), activation="logsig", output="softmax"), "cross_entropy"),
]
CASE_IDS = ["-".join(map(str, n.sizes)) + f"-{n.output}-{kind}" for n, kind in CASES]


def problem(net, kind, dtype, seed=0):
    params, x = params_and_input(net, dtype, seed=seed, batch=(BATCH,))
    m = net.n_outputs
    key = jax.random.key(seed + 100)
    if kind == "squared":
        loss, t = jprop.SquaredError(net), normal(seed + 100, (BATCH, m), dtype)
    elif net.output == "softmax":
        loss, t = jprop.CrossEntropy(net), jax.nn.one_hot(jnp.arange(BATCH) % m, m, dtype=dtype)
    else:
        loss, t = jprop.CrossEntropy(net), jax.random.bernoulli(key, 0.5, (BATCH, m)).astype(dtype)
    # each leaf from its own key: a test would see two equal-shaped layers' parts swapped
    return loss, params, x, t, optax.tree_utils.tree_random_like(jax.random.key(seed + 7), params)


@functools.partial(jax.jit, static_argnums=0)
def dense_hessian(loss, params, x, t):
    point, unravel = ravel_pytree(params)
    return jax.hessian(lambda w: loss(unravel(w), x, t))(point)


# The closed road on every case in float64, and on alternate cases in float32 and by autodiff.
HVP_RUNS = [
    pytest.param(net, kind, road, dtype, id=f"{road}-{dtype.__name__}-{name}")
    for i, ((net, kind), name) in enumerate(zip(CASES, CASE_IDS))
    for road, dtype in [("closed", jnp.float64)]
    + ([("closed", jnp.float32)] if i % 2 == 0 else [("autodiff", jnp.float64)])
]


@pytest.mark.parametrize("net, kind, road, dtype", HVP_RUNS)
def test_hvp_against_dense_hessian(net, kind, road, dtype):
    loss, params, x, t, v = problem(net, kind, dtype)
    hv = jprop.weight_hessian_vector_product(loss, method=road)(params, v, x, t)
    up = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float64), tree)  # noqa: E731
    expected = np.asarray(dense_hessian(loss, up(params), up(x), up(t))) @ flat(up(v))
    assert_close(flat(hv), expected, TOL_EXACT[dtype] * 10, f"{road} Hv")


@pytest.mark.parametrize(
    "net, kind",
    [(jprop.MLP((3, 6, 4, 2), output="tansig"), "squared"), (CASES[5][0], "cross_entropy")],
    ids=["tansig-squared", "softmax-cross_entropy"],
)
def test_hvp_against_float64_differences_of_the_gradient(net, kind):
    loss, params, x, t, v = problem(net, kind, jnp.float64, seed=3)
    eps = 1e-5
    grad = jax.jit(jax.grad(loss))
    shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, v)  # noqa: E731
    fd = (flat(grad(shift(1), x, t)) - flat(grad(shift(-1), x, t))) / (2 * eps)
    assert_close(
        flat(jprop.weight_hessian_vector_product(loss)(params, v, x, t)), fd, 1e-8, "Hv vs fd"
    )


def test_full_hessian_layout_symmetry_and_curvature_along():
    net = jprop.MLP((2, 4, 3, 2))
    loss, params, x, t, v = problem(net, "squared", jnp.float64, seed=1)
    H = jprop.weight_hessian(loss)(params, x, t)
    reference = dense_hessian(loss, params, x, t)
    assert_close(H, reference, 1e-12, "H")
    assert_close(H, H.T, 1e-12, "symmetry")
    layout = jprop.param_layout(params)
    assert layout[-1].stop == H.shape[0] == sum(p.size for p in jax.tree.leaves(params))
    second_w = next(s for s in layout if s.name == "[1]['W']")
    assert second_w.shape == (3, 4) and second_w.stop - second_w.start == 12
    block = H[second_w.start : second_w.stop, second_w.start : second_w.stop]  # ∂²E/∂W²∂W²
    W2 = params[1]["W"]

    def of_w2(w):
        return loss([params[0], {"W": w.reshape(W2.shape), "b": params[1]["b"]}, params[2]], x, t)

    assert_close(block, jax.jit(jax.hessian(of_w2))(W2.ravel()), 1e-12, "layer-2 block")
    along = jprop.curvature_along(loss)(params, v, x, t)
    assert_close(along, flat(v) @ reference @ flat(v) / (flat(v) @ flat(v)), 1e-12, "vᵀHv/vᵀv")


@functools.partial(jax.jit, static_argnums=0)
def dense_gauss_newton(loss, params, x, t):
    flat_p, unravel = ravel_pytree(params)
    net = loss.f
    if isinstance(loss, jprop.CrossEntropy):
        z = lambda w, xi: jprop.MLP(net.sizes, net.activation, "linear")(unravel(w), xi)  # noqa: E731
        y = net(params, x)
        if net.output == "softmax":
            h = jax.vmap(lambda yi: jnp.diag(yi) - jnp.outer(yi, yi))(y)
        else:
            h = jax.vmap(lambda yi: jnp.diag(yi * (1 - yi)))(y)
    else:
        z = lambda w, xi: net(unravel(w), xi)  # noqa: E731
        h = jnp.broadcast_to(jnp.eye(net.n_outputs), (BATCH, net.n_outputs, net.n_outputs))
    J = jax.vmap(lambda xi: jax.jacfwd(z)(flat_p, xi))(x)  # (B, m, P)
    return jnp.einsum("bkp,bkl,blq->pq", J, h, J) / BATCH


@pytest.mark.parametrize(
    "net, kind, road",
    [pytest.param(n, k, "closed", id=f"closed-{i}") for (n, k), i in zip(CASES, CASE_IDS)]
    + [pytest.param(n, k, "autodiff", id=f"autodiff-{i}") for (n, k), i in zip(CASES, CASE_IDS)][
        1::2
    ],
)
def test_gauss_newton_against_dense_definition(net, kind, road):
    loss, params, x, t, v = problem(net, kind, jnp.float64, seed=2)
    G = jprop.gauss_newton(loss, method=road)(params, x, t)
    expected = dense_gauss_newton(loss, params, x, t)
    assert_close(G, expected, 1e-11, f"{road} G")
    assert np.linalg.eigvalsh(np.asarray(G)).min() > -1e-10  # positive semi-definite
    gv = jprop.gauss_newton_vector_product(loss, method=road)(params, v, x, t)
    assert_close(flat(gv), expected @ flat(v), 1e-11, f"{road} Gv")


@pytest.mark.parametrize(
    "net, kind",
    [
        (jprop.MLP((3, 2), output="tansig"), "squared"),
        (jprop.MLP((4, 3), output="softmax"), "squared"),
        (jprop.MLP((3, 4), output="softmax"), "cross_entropy"),
        (jprop.MLP((2, 3), output="logsig"), "cross_entropy"),
    ],
    ids=["tansig-squared", "softmax-squared", "softmax-ce", "logsig-ce"],
)
def test_becker_lecun_is_exact_without_hidden_layers(net, kind):
    loss, params, x, t, _ = problem(net, kind, jnp.float64, seed=4)
    approx = jprop.weight_hessian_diagonal(loss)(params, x, t)
    exact = jprop.weight_hessian_diagonal(loss, exact=True)(params, x, t)
    assert_close(flat(approx), flat(exact), 1e-12, "one-layer diagonal")
    assert_close(flat(exact), jnp.diagonal(dense_hessian(loss, params, x, t)), 1e-12, "exact")


def test_becker_lecun_drops_off_diagonal_terms_in_deeper_nets():
    # One hidden layer under a linear squared-error output is still exact (H_z at the output is
    # I, so no off-diagonal terms exist to drop); two hidden layers are not.
    net = jprop.MLP((3, 6, 2))
    loss, params, x, t, _ = problem(net, "squared", jnp.float64, seed=5)
    approx = flat(jprop.weight_hessian_diagonal(loss)(params, x, t))
    assert_close(approx, jnp.diagonal(dense_hessian(loss, params, x, t)), 1e-12, "one hidden")
    net = jprop.MLP((3, 6, 4, 2))
    loss, params, x, t, _ = problem(net, "squared", jnp.float64, seed=5)
    approx = flat(jprop.weight_hessian_diagonal(loss)(params, x, t))
    exact = flat(jprop.weight_hessian_diagonal(loss, exact=True)(params, x, t))
    err = jprop.relative_error(approx, exact)
    assert 1e-6 < err < 1.0, err
    last = slice(-(2 * 4 + 2), None)  # the output layer's weights and biases are exact
    assert_close(approx[last], exact[last], 1e-12, "output layer")


def test_becker_lecun_stays_finite_for_huge_inputs():
    # float32, |x| = 1e19: x² overflows, and the saturated first layer's sensitivities are exact
    # zeros; the diagonal is 0 there (as the exact one is), not 0 · inf = NaN.
    net = jprop.MLP((2, 4, 1))
    params = net.init(jax.random.key(0), jnp.float32)
    x = jnp.asarray([[1e19, -1e19], [-3e19, 2e19]], jnp.float32)
    t = jnp.zeros((2, 1), jnp.float32)
    loss = jprop.SquaredError(net)
    approx = jprop.weight_hessian_diagonal(loss)(params, x, t)
    exact = jprop.weight_hessian_diagonal(loss, exact=True)(params, x, t)
    assert bool(jnp.all(jnp.isfinite(flat(approx))))
    assert_close(flat(approx), flat(exact), 1e-6, "saturated")


@pytest.mark.parametrize("operator", ["hessian", "gauss_newton"])
def test_top_eigenpairs_against_eigh(operator):
    net = jprop.MLP((2, 4, 3, 1))
    loss, params, x, t, _ = problem(net, "squared", jnp.float64, seed=6)
    dense = (
        dense_hessian(loss, params, x, t)
        if operator == "hessian"
        else dense_gauss_newton(loss, params, x, t)
    )
    values, vectors = np.linalg.eigh(np.asarray(dense))
    size = dense.shape[0]
    result = jprop.top_eigenpairs(loss, k=3, num_iterations=size, operator=operator)(
        params, x, t, key=jax.random.key(1)
    )
    assert result.iterations == size
    assert_close(result.eigenvalues, values[::-1][:3], 1e-9, "eigenvalues")
    found = jax.vmap(lambda tree: ravel_pytree(tree)[0])(result.eigenvectors)  # (3, P)
    overlap = np.abs(np.asarray(found) @ vectors[:, ::-1][:, :3])
    assert_close(np.diag(overlap), np.ones(3), 1e-6, "eigenvectors")
    assert float(jnp.max(result.residuals)) < 1e-8


def test_few_lanczos_steps_report_their_residuals():
    net = jprop.MLP((3, 6, 5, 2))
    loss, params, x, t, _ = problem(net, "squared", jnp.float64, seed=7)
    dense = np.asarray(dense_hessian(loss, params, x, t))
    values = np.linalg.eigvalsh(dense)
    result = jprop.top_eigenpairs(loss, k=1, num_iterations=4)(params, x, t)
    # The residual reported is ‖Hq − θq‖ of the unit Ritz vector q, and it bounds the Ritz value's
    # error (for symmetric operators).
    q = np.asarray(ravel_pytree(jax.tree.map(lambda v: v[0], result.eigenvectors))[0])
    theta = float(result.eigenvalues[0])
    assert_close(np.linalg.norm(q), 1.0, 1e-12, "unit Ritz vector")
    residual = np.linalg.norm(dense @ q - theta * q)
    assert residual > 1e-8  # not converged: the check below compares two non-zero numbers
    assert_close(result.residuals[0], residual, 1e-6, "residual")
    assert abs(theta - values[-1]) <= float(result.residuals[0]) + 1e-10


def test_top_eigenpairs_where_the_loss_has_no_curvature():
    # A loss linear in the weights: H = 0, so Lanczos's first product is exactly zero and the
    # iteration restarts from fresh directions. Every pair is (0, a unit vector), the vectors
    # orthonormal.
    net = jprop.MLP((2, 3, 1))
    params = net.init(jax.random.key(0), jnp.float64)
    x = normal(1, (BATCH, 2), jnp.float64)

    def linear(p, x, t):
        return jnp.sum(t) * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(p))

    result = jprop.top_eigenpairs(linear, k=3, num_iterations=5)(params, x, x[:, :1])
    vectors = np.asarray(jax.vmap(lambda tree: ravel_pytree(tree)[0])(result.eigenvectors))
    assert_close(result.eigenvalues, np.zeros(3), 0.0, "eigenvalues")
    assert_close(vectors @ vectors.T, np.eye(3), 1e-12, "orthonormal vectors")
    assert_close(result.residuals, np.zeros(3), 0.0, "residuals")


def test_any_callable_loss_takes_the_autodiff_road():
    rbf = jprop.RBFNetwork(2, 4, 1)
    params = rbf.init(jax.random.key(0), jnp.float64)
    x = normal(1, (BATCH, 2), jnp.float64)
    t = jnp.sin(x[:, :1])

    def energy(p, x, t):
        return jnp.mean((rbf(p, x) - t) ** 2) + 1e-3 * jnp.sum(p["W"] ** 2)

    v = jax.tree.map(jnp.ones_like, params)
    flat_p, unravel = ravel_pytree(params)
    dense = jax.jit(jax.hessian(lambda w: energy(unravel(w), x, t)))(flat_p)
    assert_close(
        flat(jprop.weight_hessian_vector_product(energy)(params, v, x, t)),
        dense @ flat(v),
        1e-12,
        "Hv",
    )
    assert_close(jprop.weight_hessian(energy)(params, x, t), dense, 1e-12, "H")
    rbf_loss = jprop.SquaredError(rbf)  # a SquaredError of a non-MLP: Gauss-Newton by autodiff
    G = jprop.gauss_newton(rbf_loss)(params, x, t)
    J = jax.jit(jax.vmap(lambda xi: jax.jacfwd(lambda w: rbf(unravel(w), xi))(flat_p)))(x)
    assert_close(G, jnp.einsum("bkp,bkq->pq", J, J) / BATCH, 1e-12, "rbf G")


def test_curvature_errors_say_what_was_expected():
    net = jprop.MLP((3, 4, 2))
    loss, params, x, t, v = problem(net, "squared", jnp.float32)
    hvp = jprop.weight_hessian_vector_product(loss)
    with pytest.raises(ValueError, match="`v` must be a pytree shaped like params"):
        hvp(params, v[:1], x, t)
    bad = [v[0], {"W": v[1]["W"].T, "b": v[1]["b"]}]
    with pytest.raises(ValueError, match=r"`v` at \[1\]\['W'\] must have shape \(2, 4\)"):
        hvp(params, bad, x, t)
    with pytest.raises(ValueError, match=r"`t` must have shape \(5, 2\); got \(5, 3\)"):
        hvp(params, v, x, jnp.zeros((BATCH, 3), jnp.float32))
    with pytest.raises(TypeError, match=r"`t` must have the dtype of `x` \(float32\); got float64"):
        hvp(params, v, x, t.astype(jnp.float64))
    with pytest.raises(TypeError, match=r"takes data \(x, t\) after params \(and v\); got 1 data"):
        hvp(params, v, x)
    with pytest.raises(ValueError, match=r"P = 26 parameters .* over max_bytes"):
        jprop.weight_hessian(loss, max_bytes=1000)(params, x, t)
    with pytest.raises(TypeError, match="Gauss-Newton needs the model and the loss apart"):
        jprop.gauss_newton_vector_product(lambda p, x, t: 0.0)
    with pytest.raises(ValueError, match="'sigmoid' or 'softmax' output.*output 'linear'"):
        jprop.CrossEntropy(net)
    with pytest.raises(ValueError, match="Becker–LeCun approximation needs"):
        jprop.weight_hessian_diagonal(lambda p, x, t: 0.0)
    with pytest.raises(ValueError, match="method='closed' needs jprop.SquaredError"):
        jprop.weight_hessian_vector_product(lambda p: 0.0, method="closed")
    with pytest.raises(ValueError, match="unknown operator 'fisher'"):
        jprop.top_eigenpairs(loss, operator="fisher")


def test_a_model_is_called_one_example_at_a_time():
    # f(params, x) is defined for x of shape (n,) only: called on the whole batch, sum(x²) would
    # mix the examples. Every curvature transform of its squared error must equal the explicit
    # per-example loss differentiated by JAX (one output, then a scalar output).
    x = jnp.asarray([[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0]])
    params = {"a": jnp.asarray(0.7), "b": jnp.asarray(-0.3)}
    v = {"a": jnp.asarray(1.0), "b": jnp.asarray(0.5)}
    for f, t in (
        (lambda p, xi: jnp.atleast_1d(p["a"] * jnp.sum(xi**2) + p["b"]), jnp.ones((3, 1))),
        (lambda p, xi: jnp.tanh(p["a"] * jnp.sum(xi**2)) + p["b"], jnp.ones(3)),
    ):

        def explicit(p, f=f, t=t):
            out = jax.vmap(lambda xi: jnp.atleast_1d(f(p, xi)))(x)
            return 0.5 * jnp.mean(jnp.sum((out - t.reshape(3, -1)) ** 2, axis=-1))

        @jax.jit  # the oracles, JAX's derivatives of the explicit loss, in one program
        def oracles(params, v, f=f, explicit=explicit):
            hv = jax.jvp(jax.grad(explicit), (params,), (v,))[1]
            w, unravel = ravel_pytree(params)
            hessian = jax.hessian(lambda w: explicit(unravel(w)))(w)
            jac = jax.vmap(lambda xi: jax.jacobian(lambda p: jnp.atleast_1d(f(p, xi)))(params))(x)
            rows = jnp.stack(
                [ravel_pytree(jax.tree.map(lambda a: a[b, 0], jac))[0] for b in range(3)]
            )
            return explicit(params), hv, hessian, rows.T @ rows / 3  # Jᵀ J / B: squared error

        value, hv, hessian, gn = oracles(params, v)
        loss = jprop.SquaredError(f)
        assert_close(loss(params, x, t), value, 1e-6, "value")
        assert_close(
            flat(jprop.weight_hessian_vector_product(loss)(params, v, x, t)),
            flat(hv),
            1e-5,
        )
        assert_close(jprop.weight_hessian(loss)(params, x, t), hessian, 1e-5, "weight_hessian")
        assert_close(jprop.gauss_newton(loss)(params, x, t), gn, 1e-5, "gauss_newton")
        gnv = flat(jprop.gauss_newton_vector_product(loss)(params, v, x, t))
        assert_close(gnv, np.asarray(gn) @ flat(v), 1e-5, "gauss_newton_vector_product")


@pytest.mark.parametrize("transform", [jprop.weight_hessian, jprop.gauss_newton])
def test_a_dense_curvature_matrix_is_the_only_p_by_p_array(transform):
    # The (P, P) result is filled in place: XLA's account of the compiled program holds no
    # second P × P array (an identity, or the stacked columns before a copy) beside it.
    net = jprop.MLP((10, 30, 30, 5))
    params, x = params_and_input(net, jnp.float32, seed=1, batch=(8,))
    size = flat(params).size
    compiled = (
        jax.jit(transform(jprop.SquaredError(net)))
        .lower(params, x, jnp.zeros((8, 5), jnp.float32))
        .compile()
    )
    account = compiled.memory_analysis()
    assert account is not None and account.output_size_in_bytes == size * size * 4
    assert account.temp_size_in_bytes < 0.25 * size * size * 4, account.temp_size_in_bytes


def test_top_eigenpairs_takes_every_option_by_keyword():
    with pytest.raises(TypeError, match="positional"):
        jprop.top_eigenpairs(jprop.SquaredError(jprop.MLP((2, 3, 1))), 2)


def test_a_curvature_transform_built_inline_compiles_once(compiles):
    net = jprop.MLP((3, 5, 2))
    params = net.init(jax.random.key(0), jnp.float64)
    x, t = jnp.ones((4, 3)), jnp.zeros((4, 2))
    before = compiles.count
    results = [
        jprop.weight_hessian_vector_product(jprop.SquaredError(net))(params, params, x, t)
        for _ in range(3)
    ]
    assert compiles.count - before == 1
    assert_close(flat(results[2]), flat(results[0]), 0.0, "the same program")
    before = compiles.count
    for _ in range(2):
        jprop.gauss_newton_vector_product(jprop.SquaredError(net))(params, params, x, t)
        jprop.weight_hessian_diagonal(jprop.SquaredError(net))(params, x, t)
    assert compiles.count - before == 2
    before = compiles.count  # vᵀHv / vᵀv and its check for v = 0 in one program
    along = [jprop.curvature_along(jprop.SquaredError(net))(params, params, x, t) for _ in range(3)]
    assert compiles.count - before == 1
    assert float(along[2]) == float(along[0])
    jprop.top_eigenpairs(jprop.SquaredError(net), k=2)(params, x, t)
    before = compiles.count  # Lanczos, built inline again: its program and start vector reused
    pairs = [jprop.top_eigenpairs(jprop.SquaredError(net), k=2)(params, x, t) for _ in range(2)]
    assert compiles.count == before
    assert_close(pairs[1].eigenvalues, pairs[0].eigenvalues, 0.0, "the same program")


@pytest.mark.parametrize("targets", ["masked", "weighted", "soft", "labels"])
def test_softmax_cross_entropy_curvature_holds_for_targets_that_do_not_sum_to_one(targets):
    # −Σ t log y has logit Hessian (Σ t)(diag y − y yᵀ); the closed road assumed Σ t = 1 and was
    # off by 0.6-1.4 (relative) for a masked row, a weighted one or unnormalised soft labels.
    net = jprop.MLP((3, 6, 4), output="softmax")
    params, x = params_and_input(net, jnp.float64, seed=3, batch=(4,))
    t = {
        "masked": jnp.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]),
        "weighted": jnp.array([[2.0, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 3]]),
        "soft": jnp.array([[0.3, 0.3, 0.1, 0.1], [0.5, 0, 0, 0.9], [0, 0.2, 0, 0], [1, 1, 1, 1.0]]),
        "labels": jnp.array([0, 3, 1, 4]),  # 4 is outside [0, 4): a masked example
    }[targets]
    loss = jprop.CrossEntropy(net)
    dense = jnp.asarray(t) if targets != "labels" else jax.nn.one_hot(t, 4, dtype=jnp.float64)
    assert_close(loss(params, x, t), loss(params, x, dense), 1e-15, "loss")
    v = cosines_like(params)
    flat_loss = lambda w: loss(unravel(w), x, dense)  # noqa: E731
    w, unravel = ravel_pytree(params)
    exact_hvp = jax.jit(lambda w, d: jax.jvp(jax.grad(flat_loss), (w,), (d,))[1])(w, flat(v))
    assert_close(
        flat(jprop.weight_hessian_vector_product(loss)(params, v, x, t)), exact_hvp, 1e-12, "Hv"
    )
    for name in ("gauss_newton_vector_product", "weight_hessian_vector_product"):
        closed = getattr(jprop, name)(loss, method="closed")(params, v, x, t)
        autodiff = getattr(jprop, name)(loss, method="autodiff")(params, v, x, dense)
        assert_close(flat(closed), flat(autodiff), 1e-12, name)
    closed = jprop.weight_hessian_diagonal(loss)(params, x, t)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(closed))


def test_cross_entropy_refuses_integer_targets_it_cannot_read():
    net = jprop.MLP((3, 6, 4), output="softmax")
    params, x = params_and_input(net, jnp.float32, batch=(4,))
    with pytest.raises(ValueError, match=r"class labels of shape \(B,\).*got shape \(4, 4\)"):
        jprop.CrossEntropy(net)(params, x, jnp.zeros((4, 4), jnp.int32))
    binary = jprop.MLP((3, 6, 2), output="logsig")
    params, x = params_and_input(binary, jnp.float32, batch=(4,))
    t = jnp.array([[0, 1], [1, 1], [0, 0], [1, 0]])
    assert_close(
        jprop.CrossEntropy(binary)(params, x, t),
        jprop.CrossEntropy(binary)(params, x, t.astype(jnp.float32)),
        1e-7,
        "0/1 labels",
    )
