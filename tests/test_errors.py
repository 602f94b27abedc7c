"""Bad input raises ValueError/TypeError at trace time, naming what was expected and what came."""

import re

import jax
import jax.numpy as jnp
import pytest

import jprop

NET = jprop.MLP((3, 5, 2))
PARAMS = NET.init(jax.random.key(0), jnp.float32)
X = jnp.ones(3, jnp.float32)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(sizes=(3,)), ValueError, r"at least two entries.*\(3,\)"),
        (dict(sizes=()), ValueError, "at least two entries"),
        (dict(sizes=(3, 0, 1)), ValueError, r"sizes\[1\].*at least 1; got 0"),
        (dict(sizes=(3, 2.5, 1)), TypeError, r"sizes\[1\].*must be an int; got 2.5"),
        (dict(sizes=(3, True)), TypeError, r"sizes\[1\].*must be an int"),
        (dict(sizes="32"), TypeError, "sequence of layer widths"),
        (dict(sizes=(3, 4), activation="relu"), ValueError, r"hidden activation 'relu'.*'tansig'"),
        (dict(sizes=(3, 4), activation="softmax"), ValueError, "hidden activation 'softmax'"),
        (
            dict(sizes=(3, 4), output="relu"),
            ValueError,
            r"output activation 'relu'.*'sigmoid'.*'softmax'",
        ),
        (dict(sizes=(3, 1), output="softmax"), ValueError, "softmax output needs at least 2"),
    ],
)
def test_bad_mlp_description(kwargs, error, match):
    with pytest.raises(error, match=match):
        jprop.MLP(**kwargs)


def test_bad_rbf_description():
    with pytest.raises(ValueError, match="n_centers.*at least 1; got 0"):
        jprop.RBFNetwork(2, 0, 1)


TRANSFORMS = [
    lambda f: f,
    jprop.jacobian,
    jprop.hessian,
    jprop.laplacian,
]
TRANSFORM_IDS = ["apply", "jacobian", "hessian", "laplacian"]


@pytest.mark.parametrize("wrap", [lambda g: g, jax.jit], ids=["eager", "jit"])
@pytest.mark.parametrize("transform", TRANSFORMS, ids=TRANSFORM_IDS)
def test_wrong_input_size_names_both_numbers(transform, wrap):
    with pytest.raises(
        ValueError, match=r"input size n = 3; got x of shape \(4, 5\) \(last axis 5\)"
    ):
        wrap(transform(NET))(PARAMS, jnp.ones((4, 5), jnp.float32))


@pytest.mark.parametrize("transform", TRANSFORMS, ids=TRANSFORM_IDS)
def test_integer_input_refused(transform):
    with pytest.raises(TypeError, match="floating dtype.*got int32.*astype"):
        transform(NET)(PARAMS, jnp.ones(3, jnp.int32))


@pytest.mark.parametrize("transform", TRANSFORMS, ids=TRANSFORM_IDS)
def test_scalar_input_refused(transform):
    with pytest.raises(ValueError, match=r"shape \(n,\).*got a scalar"):
        transform(NET)(PARAMS, jnp.float32(1.0))


@pytest.mark.parametrize("wrap", [lambda g: g, jax.jit], ids=["eager", "jit"])
def test_params_shape_mismatch_names_the_layer(wrap):
    bad = [dict(PARAMS[0]), dict(PARAMS[1])]
    bad[1]["W"] = jnp.zeros((5, 2), jnp.float32)
    with pytest.raises(ValueError, match=r"layer 2 W must have shape \(2, 5\).*got \(5, 2\)"):
        wrap(jprop.hessian(NET))(bad, X)


def test_params_wrong_structure():
    with pytest.raises(ValueError, match="params have 1 layers but the network"):
        NET(PARAMS[:1], X)
    with pytest.raises(
        ValueError, match="layer 1 must be a dict with keys 'W' and 'b'; got \\['W'\\]"
    ):
        NET([{"W": PARAMS[0]["W"]}, PARAMS[1]], X)
    with pytest.raises(TypeError, match="params must be a list"):
        NET({"W": 1}, X)
    with pytest.raises(TypeError, match=r"params\[0\]\['b'\].*floating dtype"):
        NET([{"W": PARAMS[0]["W"], "b": jnp.zeros(5, jnp.int32)}, PARAMS[1]], X)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'fast'; choose one of 'auto'"):
        jprop.hessian(NET, method="fast")


def test_non_callable_f():
    with pytest.raises(TypeError, match="must be a callable"):
        jprop.jacobian("net")


def test_pytree_output_refused_with_hint():
    f = lambda p, x: {"y": x * 2}  # noqa: E731
    with pytest.raises(TypeError, match="single array.*returned a dict.*jprop.R"):
        jprop.jacobian(f)(None, X)


def test_integer_output_refused():
    f = lambda p, x: jnp.ones(2, jnp.int32)  # noqa: E731
    with pytest.raises(TypeError, match="must return floats"):
        jprop.hessian(f)(None, X)


def test_R_direction_checks():
    with pytest.raises(ValueError, match=r"`r` must have shape \(3,\); got \(2,\)"):
        jprop.R(NET)(PARAMS, X, jnp.ones(2, jnp.float32))
    with pytest.raises(
        TypeError, match="`r` must have the dtype of `x` \\(float32\\); got float64"
    ):
        jprop.R(NET)(PARAMS, X, jnp.ones(3, jnp.float64))


def test_check_refuses_unknown_transform():
    with pytest.raises(ValueError, match="no finite-difference oracle"):
        jprop.check(jprop.R, NET, PARAMS, X)


def test_init_refuses_integer_dtype():
    with pytest.raises(TypeError, match="floating dtype"):
        NET.init(jax.random.key(0), jnp.int32)


def test_closed_method_needs_an_mlp():
    rbf = jprop.RBFNetwork(3, 4, 2)
    with pytest.raises(ValueError, match="method='closed' needs a jprop.MLP.*got RBFNetwork"):
        jprop.hessian(rbf, method="closed")


def test_a_users_function_is_named_by_its_own_type():
    """Builders hold a user's function weakly; their messages name the function's type, as
    `jprop.road` does, not the wrapper's."""

    def loss(params, x):
        return jnp.mean(NET(params, x) ** 2)

    def f(params, x):
        return NET(params, x)

    x = jnp.ones((2, 3), jnp.float32)
    calls = {
        "laplacian": lambda: jprop.laplacian(f, method="closed")(PARAMS, x),
        "gauss_newton": lambda: jprop.gauss_newton(loss)(PARAMS, x),
        "weight_hessian": lambda: jprop.weight_hessian(loss, method="closed")(PARAMS, x),
        "diagonal": lambda: jprop.weight_hessian_diagonal(loss)(PARAMS, x),
    }
    for name, call in calls.items():
        with pytest.raises((TypeError, ValueError)) as raised:
            call()
        assert "got function" in str(raised.value) and "_Weak" not in str(raised.value), name
    assert "for this function" in jprop.road(f, "laplacian").reason
    with pytest.raises(ValueError, match="needs a jprop.MLP or a jprop.Network, whose structure"):
        jprop.laplacian(f, method="closed")(PARAMS, x)


def test_hessian_vector_product_argument_checks():
    hvp = jprop.hessian_vector_product(NET)
    with pytest.raises(ValueError, match=r"`g` must have shape \(2,\); got \(3,\)"):
        hvp(PARAMS, X, jnp.ones(3, jnp.float32), X)
    with pytest.raises(ValueError, match=r"`r` must have shape \(4, 3\); got \(3,\)"):
        hvp(PARAMS, jnp.ones((4, 3), jnp.float32), jnp.ones((4, 2), jnp.float32), X)
    with pytest.raises(TypeError, match=r"expected arguments \(params, x, g, r\)"):
        hvp(PARAMS, X)


BATCHED = {
    "jprop.hessian": lambda **kw: jprop.hessian(NET, **kw),
    "jprop.jprop_v": lambda **kw: jprop.jprop_v(NET, **kw),
    "jprop.tangent_prop": lambda **kw: jprop.tangent_prop(NET, **kw),
    "jprop.derivative_targets": lambda **kw: jprop.derivative_targets(NET, **kw),
    "jprop.jacobian_penalty": lambda **kw: jprop.jacobian_penalty(NET, **kw),
    "jprop.SpectralNorm": lambda **kw: jprop.SpectralNorm(NET, **kw),
    "jprop.log_abs_det_jacobian": lambda **kw: jprop.log_abs_det_jacobian(NET, **kw),
    "jprop.weight_hessian_vector_product": lambda **kw: jprop.weight_hessian_vector_product(
        jprop.SquaredError(NET), **kw
    ),
    "jprop.gauss_newton": lambda **kw: jprop.gauss_newton(jprop.SquaredError(NET), **kw),
    "jprop.weight_hessian_diagonal": lambda **kw: jprop.weight_hessian_diagonal(
        jprop.SquaredError(NET), **kw
    ),
    "jprop.curvature_along": lambda **kw: jprop.curvature_along(jprop.SquaredError(NET), **kw),
    "jprop.top_eigenpairs": lambda **kw: jprop.top_eigenpairs(jprop.SquaredError(NET), **kw),
}


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (2.0, TypeError)])
def test_bad_batch_size_is_named_by_the_transform_given_it(batch_size, error):
    for where, make in BATCHED.items():
        with pytest.raises(error, match=f"^{where}: `batch_size` must be"):
            make(batch_size=batch_size)


def test_an_empty_batch_is_refused_by_every_batch_mean():
    # One policy: the mean over no examples (or no tangents) is 0/0, so every batch-mean loss
    # refuses it when traced, instead of returning NaN.
    x = jnp.ones((0, 3), jnp.float32)
    g = t = jnp.ones((0, 2), jnp.float32)
    r = jnp.ones((0, 3), jnp.float32)
    losses = {
        "bilinear": lambda: jprop.bilinear(NET)(PARAMS, x, g, r),
        "jprop_v": lambda: jprop.jprop_v(NET)(PARAMS, x, r, g),
        "double_backprop": lambda: jprop.double_backprop(NET)(PARAMS, x, t, 0.1),
        "tangent_prop": lambda: jprop.tangent_prop(NET)(
            PARAMS, x, jnp.ones((0, 1, 3), jnp.float32)
        ),
        "derivative_targets": lambda: jprop.derivative_targets(NET)(
            PARAMS, x, g, jnp.ones((0, 2, 3), jnp.float32)
        ),
        "jacobian_penalty": lambda: jprop.jacobian_penalty(NET)(PARAMS, x),
        "SquaredError": lambda: jprop.SquaredError(NET)(PARAMS, x, t),
    }
    for name, call in losses.items():
        with pytest.raises(ValueError, match="empty"):
            call()
    with pytest.raises(ValueError, match="P = 0"):
        jprop.tangent_prop(NET)(
            PARAMS, jnp.ones((4, 3), jnp.float32), jnp.ones((4, 0, 3), jnp.float32)
        )


def _with_data(make):
    x, y = jnp.ones((5, 3), jnp.float32), jnp.ones((5, 2), jnp.float32)
    return make(x, y, jnp.ones((5, 2, 3), jnp.float32))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda x, y, T: jprop.hessian(NET)(PARAMS, None),
            TypeError,
            r"jprop.hessian: `x` is None",
        ),
        (
            lambda x, y, T: jprop.derivative_targets(NET)(PARAMS, x, None, T),
            TypeError,
            r"jprop.derivative_targets: `y` is None",
        ),
        (
            lambda x, y, T: jprop.SpectralNorm(NET, method="x"),
            ValueError,
            r"jprop.SpectralNorm: unknown method 'x'",
        ),
        (
            lambda x, y, T: jprop.shard_batch(x, devices=[]),
            ValueError,
            r"jprop.shard_batch: `devices` is empty",
        ),
        (
            lambda x, y, T: jprop.derivatives(["tanh"]),
            TypeError,
            r"jprop.derivatives: `name` must be one activation's name, a str",
        ),
        (
            lambda x, y, T: jprop.gauss_newton_vector_product(jprop.SquaredError(NET))(
                PARAMS, PARAMS, x
            ),
            TypeError,
            r"jprop.gauss_newton_vector_product: .*takes data \(x, t\).*got 1 data argument\. Pass the targets",
        ),
        (
            lambda x, y, T: jprop.gauss_newton(jprop.SquaredError(NET))(PARAMS, x),
            TypeError,
            r"jprop.gauss_newton: .*takes data \(x, t\)",
        ),
        (
            lambda x, y, T: jprop.curvature_along(jprop.SquaredError(NET))(
                PARAMS, jax.tree.map(jnp.zeros_like, PARAMS), x, y
            ),
            ValueError,
            r"jprop.curvature_along: `v` is zero",
        ),
    ],
    ids=[
        "x None",
        "y None",
        "SpectralNorm method",
        "no devices",
        "derivatives of a list",
        "gauss_newton_vector_product without t",
        "gauss_newton without t",
        "curvature along zero",
    ],
)
def test_errors_name_the_function_and_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        _with_data(call)


@pytest.mark.parametrize(
    "build, given, expected",
    [
        (lambda: jprop.tangent_prop(NET), 2, "(params, x, tangents, targets=None)"),
        (lambda: jprop.tangent_prop(NET), 5, "(params, x, tangents, targets=None)"),
        (lambda: jprop.derivative_targets(NET), 3, "(params, x, y, T)"),
        (lambda: jprop.jacobian_penalty(NET), 1, "(params, x"),
        (lambda: jprop.weight_hessian_vector_product(_LOSS), 1, "(params, v, *data)"),
        (lambda: jprop.jprop_v(NET), 2, "(params, x, v, b)"),
    ],
    ids=["tangent_prop 2", "tangent_prop 5", "derivative_targets", "penalty", "whvp", "jprop_v"],
)
def test_a_wrong_number_of_arguments_names_the_expected_ones(build, given, expected):
    """Every objective and product says which arguments it takes, not Python's words about an
    inner function."""
    args = (PARAMS, *[jnp.ones((4, 3), jnp.float32)] * (given - 1))
    with pytest.raises(TypeError) as raised:
        build()(*args)
    message = str(raised.value)
    assert message.startswith("jprop.") and f"expected arguments {expected}" in message, message
    assert "<locals>" not in message and "positional argument" not in message, message


@pytest.mark.parametrize(
    "init, where",
    [
        (lambda key: NET.init(key), "MLP.init"),
        (lambda key: jprop.pirate_net(3, 1, width=4, blocks=1).init(key), "jprop.Network.init"),
        (lambda key: jprop.RBFNetwork(3, 4, 1).init(key), "jprop.RBFNetwork.init"),
        (
            lambda key: jprop.SpectralNorm(NET).init(PARAMS, jnp.ones((2, 3), jnp.float32), key),
            "jprop.SpectralNorm.init",
        ),
    ],
    ids=["MLP", "Network", "RBFNetwork", "SpectralNorm"],
)
def test_an_integer_seed_for_a_key_is_refused_with_the_fix(init, where):
    """A seed where a key belongs (as PyTorch takes one) is named, with jax.random.key as the fix;
    raw uint32 key data of the wrong shape too. Old-style keys still work (tests/test_models.py)."""
    with pytest.raises(
        TypeError,
        match=rf"{re.escape(where)}: `key` must be a JAX PRNG key, e\.g\. jax\.random\.key\(0\).*got int",
    ):
        init(0)
    with pytest.raises(
        TypeError,
        match=r"raw key data .* ending in shape \(2,\); got an array of dtype uint32 and shape \(3,\)",
    ):
        init(jnp.zeros(3, jnp.uint32))


def test_an_on_off_option_must_be_a_bool():
    """A string such as "no" is true to Python; an on/off option refuses it rather than read it
    as on."""
    calls = {
        "SpectralNorm": lambda: jprop.SpectralNorm(NET, squared="no"),
        "weight_hessian_diagonal": lambda: jprop.weight_hessian_diagonal(
            jprop.SquaredError(NET), exact="yes"
        ),
        "fit": lambda: jprop.fit(_LOSS, PARAMS, jnp.ones((2, 3), jnp.float32), progress="no"),
        "pirate_net": lambda: jprop.pirate_net(2, 1, factorised=0),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"jprop.{name}: `\w+` must be True or False; got"):
            call()


@pytest.mark.parametrize("oracle", [jprop.fd_jacobian, jprop.fd_hessian])
@pytest.mark.parametrize("eps", ["1e-4", 0.0, -1e-4, True])
def test_a_finite_difference_step_must_be_a_positive_number(oracle, eps):
    with pytest.raises(ValueError, match=r"`eps` must be a positive number such as 1e-[45]; got"):
        oracle(NET, eps=eps)


def test_a_loss_needs_a_model_and_lanczos_a_key():
    with pytest.raises(TypeError, match=r"jprop.SquaredError: `f` must be the model.*got int"):
        jprop.SquaredError(3)
    pairs = jprop.top_eigenpairs(jprop.SquaredError(NET), k=2)
    x, t = jnp.ones((4, 3), jnp.float32), jnp.ones((4, 2), jnp.float32)
    with pytest.raises(TypeError, match=r"jprop.top_eigenpairs: `key` must be a JAX PRNG key"):
        pairs(PARAMS, x, t, key=3)


def _LOSS(params, x):
    return jnp.mean(NET(params, x) ** 2)


_CURVATURE = {
    "jprop.weight_hessian_vector_product": lambda loss, x: jprop.weight_hessian_vector_product(
        loss
    )(PARAMS, PARAMS, x),
    "jprop.gauss_newton_vector_product": lambda loss, x: jprop.gauss_newton_vector_product(loss)(
        PARAMS, PARAMS, x, x
    ),
    "jprop.weight_hessian": lambda loss, x: jprop.weight_hessian(loss)(PARAMS, x),
    "jprop.weight_hessian_diagonal": lambda loss, x: jprop.weight_hessian_diagonal(loss)(PARAMS, x),
    "jprop.curvature_along": lambda loss, x: jprop.curvature_along(loss)(PARAMS, PARAMS, x),
    "jprop.top_eigenpairs": lambda loss, x: jprop.top_eigenpairs(loss, k=1)(
        PARAMS, x, key=jax.random.key(0)
    ),
    "jprop.road": lambda loss, x: jprop.road(loss, "weight_curvature"),
}


@pytest.mark.parametrize("where", list(_CURVATURE))
@pytest.mark.parametrize(
    "model, wrap",
    [
        (NET, r"jprop.SquaredError\(net\), or"),
        (jprop.MLP((3, 4, 2), output="softmax"), r"jprop.CrossEntropy\(net\) for its softmax"),
        (jprop.Network(3, [jprop.layers.Dense(4), jprop.layers.Dense(2, "identity")]), "Error"),
    ],
)
def test_weight_curvature_of_a_model_says_to_wrap_it_in_a_loss(where, model, wrap):
    # taken as a loss, a model would fail inside jax.grad ("Gradient only defined for
    # scalar-output functions"), naming neither the transform nor the fix
    x = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(TypeError, match=rf"{re.escape(where)}: .*scalar loss.*a model.*{wrap}"):
        _CURVATURE[where](model, x)


@pytest.mark.parametrize(
    "where", [w for w in _CURVATURE if "gauss" not in w and "diagonal" not in w and "road" not in w]
)
def test_weight_curvature_of_a_loss_that_is_not_a_scalar(where):
    x = jnp.ones((4, 3), jnp.float32)
    with pytest.raises(
        TypeError, match=rf"{re.escape(where)}: the loss must return a scalar.*\(4, 2\)"
    ):
        _CURVATURE[where](lambda p, x: NET(p, x), x)
    _CURVATURE[where](_LOSS, x)  # a scalar loss of the user's own is taken as it is


_MODEL_TAKERS = {
    "jprop.jacobian": lambda f: jprop.jacobian(f),
    "jprop.hessian": lambda f: jprop.hessian(f),
    "jprop.laplacian": lambda f: jprop.laplacian(f),
    "jprop.hessian_diagonal": lambda f: jprop.hessian_diagonal(f),
    "jprop.hessian_vector_product": lambda f: jprop.hessian_vector_product(f),
    "jprop.hessian_trace": lambda f: jprop.hessian_trace(f),
    "jprop.R": lambda f: jprop.R(f),
    "jprop.jprop_u": lambda f: jprop.jprop_u(f),
    "jprop.jprop_v": lambda f: jprop.jprop_v(f),
    "jprop.bilinear": lambda f: jprop.bilinear(f),
    "jprop.double_backprop": lambda f: jprop.double_backprop(f),
    "jprop.tangent_prop": lambda f: jprop.tangent_prop(f),
    "jprop.derivative_targets": lambda f: jprop.derivative_targets(f),
    "jprop.jacobian_penalty": lambda f: jprop.jacobian_penalty(f),
    "jprop.SpectralNorm": lambda f: jprop.SpectralNorm(f),
    "jprop.log_abs_det_jacobian": lambda f: jprop.log_abs_det_jacobian(f),
    "jprop.road": lambda f: jprop.road(f, "laplacian"),
}


@pytest.mark.parametrize("where", list(_MODEL_TAKERS))
@pytest.mark.parametrize("loss", [jprop.SquaredError, jprop.CrossEntropy])
def test_a_loss_given_for_a_model_says_to_pass_its_model(where, loss):
    # a loss takes (params, x, t): taken as a model it would fail on the missing t, deep inside
    net = jprop.MLP((3, 4, 2), output="softmax") if loss is jprop.CrossEntropy else NET
    name = loss.__name__
    with pytest.raises(TypeError, match=rf"{re.escape(where)}: `f` must be a model.*jprop.{name}"):
        _MODEL_TAKERS[where](loss(net))


@pytest.mark.parametrize(
    "model",
    [NET, jprop.modified_mlp(3, 2, width=4, depth=1), jprop.RBFNetwork(3, 4, 2)],
    ids=["MLP", "Network", "RBFNetwork"],
)
def test_swapped_params_and_x_are_named(model):
    params, x = model.init(jax.random.key(0)), jnp.ones((4, 3), jnp.float32)
    expected = r"got an array of shape \(4, 3\) \(float32\)\. The arguments are \(params, x\)"
    for call in (lambda: model(x, params), lambda: jprop.laplacian(model)(x, params)):
        with pytest.raises(TypeError, match=expected):  # a wrong type, as for any argument
            call()
    # the right type with the wrong contents is a ValueError: a layer short, or a key missing
    short = params[:-1] if isinstance(params, list) else dict(list(params.items())[:-1])
    with pytest.raises(ValueError, match=r"params (must be a|have 1 layers but)"):
        model(short, x)


_INITS = {
    "MLP.init": lambda dtype: NET.init(jax.random.key(0), dtype),
    "jprop.Network.init": lambda dtype: jprop.modified_mlp(3, 1, width=4, depth=1).init(
        jax.random.key(0), dtype
    ),
    "jprop.RBFNetwork.init": lambda dtype: jprop.RBFNetwork(3, 4, 2).init(jax.random.key(0), dtype),
    "jprop.fourier_features": lambda dtype: jprop.fourier_features(
        jax.random.key(0), 3, 4, dtype=dtype
    ),
}


@pytest.mark.parametrize("where", list(_INITS))
@pytest.mark.parametrize(
    "dtype, got",
    [(jnp.int32, "int32"), (jnp.complex64, "complex64"), ("banana", "'banana', which is no dtype")],
)
def test_new_parameters_need_a_floating_dtype(where, dtype, got):
    with pytest.raises(
        TypeError, match=rf"{re.escape(where)}: `dtype` must be a floating.*got {got}"
    ):
        _INITS[where](dtype)


@pytest.mark.parametrize("where", list(_INITS))
def test_new_parameters_default_to_jaxs_float_type(where):
    # float64 under the suite's jax_enable_x64, as JAX's own default float type
    assert {leaf.dtype for leaf in jax.tree.leaves(_INITS[where](None))} == {jnp.zeros(0).dtype}
    assert {leaf.dtype for leaf in jax.tree.leaves(_INITS[where]("float32"))} == {
        jnp.dtype("float32")
    }


@pytest.mark.parametrize(
    "transform, named",
    [(jprop.fit, "jprop.fit"), (jax.hessian, "jax.hessian"), ("laplacian", "'laplacian'")],
)
def test_check_names_a_transform_it_has_no_oracle_for(transform, named):
    with pytest.raises(ValueError, match=rf"jprop.check: no finite-difference oracle for {named};"):
        jprop.check(transform, NET, PARAMS, X)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: jprop.laplacian(NET)(PARAMS, X, key=jax.random.key(0)),
            r"jprop.laplacian: got an unexpected keyword argument 'key'; "
            r"the arguments are \(params, x\)\.",
        ),
        (
            lambda: jprop.laplacian(NET, estimator="sparse", probes=2)(PARAMS, X, seed=0),
            r"jprop.laplacian: got an unexpected keyword argument 'seed'; "
            r"the arguments are \(params, x, key\)\.",
        ),
        (
            lambda: jprop.hessian_trace(NET)(PARAMS, X, jnp.eye(3), sigma=jnp.eye(3)),
            r"jprop.hessian_trace: multiple values for argument 'sigma'",
        ),
        (
            lambda: jprop.tangent_prop(NET)(PARAMS, X, target=X),
            r"jprop.tangent_prop: got an unexpected keyword argument 'target'; the arguments are "
            r"\(params, x, tangents, targets=None\)\.",
        ),
    ],
    ids=["a key to an exact transform", "a misnamed key", "sigma twice", "a misnamed objective"],
)
def test_an_argument_by_a_wrong_name_is_named_with_the_right_ones(call, match):
    with pytest.raises(TypeError, match=match) as raised:
        call()
    assert "<locals>" not in str(raised.value)


def test_an_objective_called_with_too_few_arguments_says_how_many_came():
    with pytest.raises(
        TypeError,
        match=r"jprop.double_backprop: expected arguments "
        r"\(params, x, t, lam\); got 3\.",
    ):
        jprop.double_backprop(NET)(PARAMS, X, X)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: jprop.laplacian(a),
        lambda a: jprop.SquaredError(a),
        lambda a: jprop.weight_hessian_vector_product(a),
        lambda a: jprop.fit(a, PARAMS, X, steps=1, progress=False),
        lambda a: jprop.equinox_function(a),
        lambda a: jprop.unbiased_square(a, jax.random.key(0)),
    ],
    ids=[
        "laplacian",
        "SquaredError",
        "weight_hessian_vector_product",
        "fit",
        "equinox",
        "unbiased",
    ],
)
def test_an_array_given_for_a_function_is_named_by_its_shape(call):
    # its type's name (ArrayImpl) would say nothing to its user; typically a value computed early
    with pytest.raises(TypeError, match=r"got an array of shape \(3,\) \(float32\)\."):
        call(jnp.ones(3, jnp.float32))


def test_unbiased_square_needs_a_key():
    estimate = jprop.laplacian(NET, estimator="sparse", probes=2)
    with pytest.raises(TypeError, match=r"jprop.unbiased_square: `key` must be a JAX PRNG key"):
        jprop.unbiased_square(lambda k: estimate(PARAMS, X, k), 3)


def test_road_says_why_a_loss_takes_autodiff():
    network = jprop.Network(3, [jprop.layers.Dense(4), jprop.layers.Dense(2, "identity")])
    assert jprop.road(jprop.SquaredError(NET), "weight_curvature").road == "closed"
    chosen = jprop.road(jprop.SquaredError(network), "weight_curvature")
    assert chosen.road == "autodiff"
    assert "of a jprop.MLP; this SquaredError's model is a Network" in chosen.reason
    assert "for this function" in jprop.road(_LOSS, "weight_curvature").reason


def test_curvature_along_a_zero_direction_under_jit_is_nan_not_a_number():
    # Under jit v's values are unknown when traced: 0/0 stays NaN (documented), never a number.
    x, y = jnp.ones((5, 3), jnp.float32), jnp.ones((5, 2), jnp.float32)
    along = jax.jit(jprop.curvature_along(jprop.SquaredError(NET)))
    assert bool(jnp.isnan(along(PARAMS, jax.tree.map(jnp.zeros_like, PARAMS), x, y)))


def test_running_out_of_memory_points_at_batch_size():
    # An eager call whose compiled program exhausts the device: jprop's MemoryError names the
    # transform and batch_size, with XLA's error as its cause.
    from jprop import _program

    def exhausted(*args):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9 GiB")

    with pytest.raises(
        MemoryError, match=r"jprop.hessian: the device ran out of memory.*batch_size"
    ):
        _program.run_compiled(exhausted, "jprop.hessian", PARAMS, jnp.ones((5, 3), jnp.float32))
    # ...and every kind of eager entry point goes through it, served by one program wrapper: a
    # transform, an estimate, an objective, a regulariser, log|det J| and weight curvature.
    original, square = _program.run_compiled, jprop.MLP((3, 4, 3))
    x, t = jnp.ones((5, 3), jnp.float32), jnp.ones((5, 2), jnp.float32)
    loss = jprop.SquaredError(NET)
    for where, call in [
        ("jprop.hessian", lambda: jprop.hessian(NET)(PARAMS, X)),
        (
            "jprop.laplacian",
            lambda: jprop.laplacian(NET, estimator="sparse", probes=2)(
                PARAMS, X, jax.random.key(0)
            ),
        ),
        ("jprop.jprop_v", lambda: jprop.jprop_v(NET)(PARAMS, X[None], X[None], jnp.ones((1, 2)))),
        ("jprop.tangent_prop", lambda: jprop.tangent_prop(NET)(PARAMS, X[None], X[None, None])),
        (
            "jprop.log_abs_det_jacobian",
            lambda: jprop.log_abs_det_jacobian(square)(square.init(jax.random.key(0)), X[None]),
        ),
        (
            "jprop.weight_hessian_vector_product",
            lambda: jprop.weight_hessian_vector_product(loss)(PARAMS, PARAMS, x, t),
        ),
        ("jprop.weight_hessian", lambda: jprop.weight_hessian(loss)(PARAMS, x, t)),
        (
            "jprop.weight_hessian_diagonal",
            lambda: jprop.weight_hessian_diagonal(loss)(PARAMS, x, t),
        ),
    ]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(
                _program,
                "run_compiled",
                lambda compute, where, *args: original(exhausted, where, *args),
            )
            with pytest.raises(MemoryError, match=rf"{where}: the device ran out of memory"):
                call()
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):  # other errors pass through
        _program.run_compiled(
            lambda *a: (_ for _ in ()).throw(jax.errors.JaxRuntimeError("INTERNAL: other")),
            "jprop.hessian",
        )


def test_devices_that_are_not_devices():
    """An array (a batch passed where the devices go) or a list of other things is refused by
    name, before JAX's mesh would complain about its dimensions."""
    with pytest.raises(
        TypeError, match=r"list of JAX devices .* got an array of shape \(4, 3\).*shard_batch"
    ):
        jprop.batch_sharding(jnp.ones((4, 3)))
    with pytest.raises(TypeError, match="must hold JAX devices.*got str"):
        jprop.shard_batch(jnp.ones((4, 3)), devices=["cpu:0"])
    with pytest.raises(ValueError, match="`devices` is empty"):
        jprop.batch_sharding([])
    with pytest.raises(ValueError, match="lists .* more than once; each device takes one part"):
        jprop.shard_batch(jnp.ones((4, 3)), devices=[jax.devices()[0]] * 2)
    with pytest.raises(ValueError, match="argument 1 is a scalar; it has no batch axis"):
        jprop.shard_batch(jnp.ones((4, 3)), jnp.ones(()))
    assert jprop.batch_sharding(jax.devices()[:1]).device_set == {jax.devices()[0]}
