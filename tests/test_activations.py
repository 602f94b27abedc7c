"""Every activation: values, rules three ways, the derivative table, and saturation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import normal
from jax.test_util import check_grads

import jprop
from jprop.models._activations import activation_function

X = jnp.linspace(-3.0, 3.0, 13, dtype=jnp.float64)


def nth_derivative(fn, order):
    for _ in range(order):
        fn = jax.grad(fn)
    return jax.jit(jax.vmap(fn))  # one program (eagerly, each operation would compile one)


def test_tansig_reference_values():
    # docs/math.md §1: x = 0 → (0, 1, 0, -2); x = atanh ½ → (½, 0.75, -0.75, -0.375).
    for x, expected in [
        (0.0, (0.0, 1.0, 0.0, -2.0)),
        (np.arctanh(0.5), (0.5, 0.75, -0.75, -0.375)),
    ]:
        x = jnp.asarray([x], jnp.float64)
        got = [float(nth_derivative(lambda v: jprop.tansig(v), k)(x)[0]) for k in range(4)]
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)


def test_tansig_is_tanh_and_matlab_formula():
    x = jnp.linspace(-20.0, 20.0, 401, dtype=jnp.float64)
    np.testing.assert_array_equal(jprop.tansig(x), jnp.tanh(x))
    # XLA's tanh and numpy's differ by a few ulps: machine precision, not a formula error.
    np.testing.assert_allclose(jprop.tansig(x), np.tanh(np.asarray(x)), rtol=0, atol=4e-15)
    matlab = 2 / (1 + jnp.exp(-2 * x)) - 1  # MATLAB's definition, fine for moderate |x|
    np.testing.assert_allclose(jprop.tansig(x), matlab, atol=1e-15)


def test_max_second_derivative():
    # max |t''| = 4/(3√3) at t = ±1/√3.
    x = jnp.linspace(-3.0, 3.0, 200001, dtype=jnp.float64)
    second = nth_derivative(lambda v: jprop.tansig(v), 2)(x)
    np.testing.assert_allclose(np.max(np.abs(second)), 4 / (3 * np.sqrt(3)), rtol=1e-9)


@pytest.mark.parametrize(
    "fn", [jprop.tansig, jprop.logsig, jprop.purelin], ids=lambda f: f.__name__
)
def test_rules_against_finite_differences(fn):
    check_grads(fn, (X,), order=2, modes=("fwd", "rev"))


def test_softmax_rule_against_finite_differences():
    check_grads(jprop.softmax, (X[:5],), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize(
    "fn, naive",
    [
        (jprop.tansig, lambda v: 2 / (1 + jnp.exp(-2 * v)) - 1),
        (jprop.logsig, lambda v: 1 / (1 + jnp.exp(-v))),
        (jprop.softmax, lambda v: jnp.exp(v) / jnp.sum(jnp.exp(v))),
    ],
    ids=["tansig", "logsig", "softmax"],
)
def test_rules_against_autodiff_of_naive_formula(fn, naive):
    # Where the naive formula is stable (|x| <= 3) plain autodiff of it is an exact oracle.
    for order in (1, 2, 3):
        ours = jax.jacfwd if order > 0 else None
        a, b = fn, naive
        for _ in range(order):
            a, b = ours(a), ours(b)
        np.testing.assert_allclose(jax.jit(a)(X[:5]), jax.jit(b)(X[:5]), rtol=1e-12, atol=1e-12)


# The new activations, with an independent naive formula (plain jnp, differentiated by JAX).
NEW = {
    "sin": (jprop.sin, jnp.sin),
    "softplus": (jprop.softplus, lambda v: jnp.log1p(jnp.exp(v))),
    "silu": (jprop.silu, lambda v: v / (1 + jnp.exp(-v))),
    "gelu": (jprop.gelu, lambda v: v * 0.5 * (1 + jax.scipy.special.erf(v / jnp.sqrt(2.0)))),
}


@pytest.mark.parametrize("name", list(NEW))
def test_new_activations_three_ways(name):
    fn, naive = NEW[name]
    check_grads(fn, (X,), order=3, modes=("rev",))  # to third order (reverse checks the jvp rule)
    for order in range(4):  # against autodiff of the naive formula (stable for |x| <= 3)
        np.testing.assert_allclose(
            nth_derivative(fn, order)(X), nth_derivative(naive, order)(X), rtol=1e-11, atol=1e-12
        )
    # against float64 central differences of the table's previous entry
    table = jprop.derivatives(name)
    assert table.argument == "input"
    eps = 1e-6
    for lower, higher in zip((fn, table.d1, table.d2), table[:3]):
        fd = (lower(X + eps) - lower(X - eps)) / (2 * eps)
        np.testing.assert_allclose(higher(X), fd, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize(
    "name, fn",
    [("tansig", jprop.tansig), ("logsig", jprop.logsig), ("purelin", jprop.purelin)]
    + [("linear", jprop.purelin)]
    + [(k, v[0]) for k, v in NEW.items()],
)
def test_derivative_table_matches_autodiff(name, fn):
    table = jprop.derivatives(name)
    arg = fn(X) if table.argument == "output" else X
    for order, d in enumerate(table[:3], start=1):
        np.testing.assert_allclose(d(arg), nth_derivative(fn, order)(X), rtol=1e-12, atol=1e-14)


def test_standard_and_matlab_names_are_one_network():
    assert jprop.MLP((2, 3, 1), activation="tanh") == jprop.MLP((2, 3, 1), activation="tansig")
    assert jprop.MLP((2, 3, 1), "sigmoid", "identity") == jprop.MLP((2, 3, 1), "logsig")
    assert jprop.MLP((2, 3, 1), "swish", "purelin").activations() == ("silu", "linear")
    assert jprop.MLP((2, 3, 3, 1), ("sin", "sin")).activation == "sin"
    assert jprop.derivatives("tanh") is jprop.derivatives("tansig")


@pytest.mark.parametrize(
    "fn", [jprop.tansig, jprop.logsig, *(v[0] for v in NEW.values())], ids=lambda f: f.__name__
)
def test_derivatives_finite_when_saturated(fn):
    x = jnp.asarray([-1e4, -50.0, 50.0, 1e4], jnp.float64)
    for order in range(4):
        values = nth_derivative(fn, order)(x)
        assert np.all(np.isfinite(values)), (order, values)
    if fn in (jprop.tansig, jprop.logsig):  # saturated: every derivative is (numerically) 0
        for order in (1, 2, 3):
            np.testing.assert_allclose(
                nth_derivative(fn, order)(x[jnp.asarray([0, 3])]), 0.0, atol=1e-300
            )


def test_custom_rule_is_used(monkeypatch):
    x = jnp.asarray([0.3, -1.2], jnp.float64)
    right = jax.vmap(jax.grad(jprop.tansig))(x)

    def wrong(primals, tangents):  # deliberately 2× the true derivative
        (v,), (dv,) = primals, tangents
        t = jnp.tanh(v)
        return t, 2 * (1 - t * t) * dv

    from jprop.models import _activations

    monkeypatch.setattr(_activations._tansig, "jvp", wrong)  # the rule jprop.tansig applies
    doubled = jax.vmap(jax.grad(jprop.tansig))(x)
    np.testing.assert_allclose(doubled, 2 * right, rtol=1e-14)
    # The autodiff road differentiates the MLP through the same object, so its Jacobian changes too
    # (the closed road reads σ' from the derivative table instead, tested against autodiff above).
    net = jprop.MLP((2, 1), output="tansig")
    params = [{"W": jnp.eye(1, 2, dtype=jnp.float64), "b": jnp.zeros(1, jnp.float64)}]
    np.testing.assert_allclose(
        jprop.jacobian(net, method="autodiff")(params, x)[0, 0], 2 * right[0], rtol=1e-14
    )


def test_unknown_derivative_table_name():
    with pytest.raises(ValueError, match="unknown elementwise activation 'relu'.*'tanh'"):
        jprop.derivatives("relu")


def test_sine_slopes_are_the_table_and_computed_once():
    # `slopes` divides sin's by a one computed at run time, so that XLA computes each once per
    # layer: the values stay bitwise the table's, NaN only where the sine is, and the compiled
    # Laplacian training step evaluates far fewer sines and cosines than it did (11 of each on
    # this net; its 3 layers need 3).
    from jprop.models import _activations

    z = jnp.asarray([[0.3, -2.0, 7.5], [jnp.inf, 1.0, 2.0], [1e4, -1e4, 0.0]], jnp.float32)
    table = jprop.derivatives("sin")
    got = _activations.slopes("sin", z, jnp.sin(z), orders=3)
    for value, d in zip(got, table[:3]):
        value, expected = np.asarray(value), np.asarray(d(z))
        np.testing.assert_array_equal(value, expected)  # NaN where z = inf, on both sides
        assert np.isnan(value[1, 0]) and np.sum(np.isfinite(value)) == z.size - 1
    net = jprop.MLP((2, 16, 16, 16, 1), activation="sin")
    params, x = net.init(jax.random.key(0)), jnp.ones((8, 2))
    step = jax.grad(lambda p: jnp.mean(jprop.laplacian(net)(p, x) ** 2))
    text = jax.jit(step).lower(params).compile().as_text()
    assert text.count(" sine(") + text.count(" cosine(") <= 14, "sines recomputed per kernel"


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_every_derivative_table_is_finite_where_autodiff_is_at_each_dtypes_extremes(dtype):
    # gelu's φ(z)(2 − z²) was 0 · inf = NaN once z² overflowed (float16 from |z| = 256, float32
    # near 1.9e19), where the derivative is 0.
    big = float(jnp.finfo(dtype).max)
    magnitudes = np.array([0, 1, 10, 100, 256, 1e3, 6e4, 1e10, 1.9e19, 1e38, 1e300, big])
    magnitudes = magnitudes[magnitudes <= big]
    z = jnp.asarray(np.concatenate([magnitudes, -magnitudes]), dtype)
    tolerance = {jnp.float16: 1e-2, jnp.bfloat16: 3e-2, jnp.float32: 1e-5, jnp.float64: 1e-12}
    names = ("tanh", "sigmoid", "identity", "sin", "softplus", "silu", "gelu")

    @jax.jit
    def both(z):  # (the table's, autodiff's) three derivatives of every activation, one program
        out = {}
        for name in names:
            fn, table = activation_function(name), jprop.derivatives(name)
            arg = z if table.argument == "input" else fn(z)
            out[name] = [(d(arg), nth_derivative(fn, k)(z)) for k, d in enumerate(table[:3], 1)]
        return out

    for name, orders in both(z).items():
        for order, (ours, exact) in enumerate(orders, start=1):
            ours, exact = np.asarray(ours, np.float64), np.asarray(exact, np.float64)
            finite = np.isfinite(exact)
            assert np.all(np.isfinite(ours[finite])), (name, order, z[~np.isfinite(ours) & finite])
            error = np.abs(ours - exact)[finite] / np.maximum(1, np.abs(exact[finite]))
            assert error.max() <= tolerance[dtype], (name, order, error.max())


def test_folx_reads_jprops_units_as_elementwise():
    """The generic road traces jprop's tanh, sigmoid, identity and sine units (in its networks or
    in a user's f) as JAX's primitives (outside it they keep jprop's derivative rules), which
    folx's forward Laplacian reads as elementwise: its program for a jprop.MLP needs the
    temporaries of the same network in plain jnp, not those folx's general rule for a custom_jvp
    call needs, and gives the Hessian's trace."""
    import folx

    from jprop.models._activations import primitive_activations

    net = jprop.MLP((50, 64, 64, 2), activation=("tanh", "sin"), output="logsig")
    params = net.init(jax.random.key(0), jnp.float64)
    x = normal(1, (4, 50), jnp.float64)

    def plain(p, v):
        h = jnp.tanh(v @ p[0]["W"].T + p[0]["b"])
        h = jnp.sin(h @ p[1]["W"].T + p[1]["b"])
        return jax.nn.sigmoid(h @ p[2]["W"].T + p[2]["b"])

    def folx_of(f):
        one = lambda p, v: folx.forward_laplacian(lambda u: f(p, u), sparsity_threshold=0)(v)  # noqa: E731
        return lambda p, x: jax.vmap(lambda v: one(p, v).laplacian)(x)

    def temporaries(fn):
        return jax.jit(fn).lower(params, x).compile().memory_analysis().temp_size_in_bytes

    ours = jprop.laplacian(net, method="autodiff")
    mine, theirs = temporaries(ours), temporaries(folx_of(plain))
    assert mine <= 1.05 * theirs and 1.3 * mine < temporaries(folx_of(net)), (mine, theirs)
    hessians = jax.jit(jax.vmap(jax.hessian(lambda v: net(params, v))))(x)
    np.testing.assert_allclose(ours(params, x), jnp.trace(hessians, axis1=-2, axis2=-1), rtol=1e-12)
    traced = lambda: str(jax.make_jaxpr(lambda v: net(params, v))(x[0]))  # noqa: E731
    units = lambda v: jprop.tansig(v) * jprop.sin(v) + jprop.logsig(jprop.purelin(v))  # noqa: E731
    with primitive_activations():
        assert "custom_jvp_call" not in traced()
        assert "custom_jvp_call" not in str(jax.make_jaxpr(units)(x[0]))  # in a user's own f
    assert "custom_jvp_call" in traced()  # jprop's rules, for JAX's own transforms


def test_sine_and_cosine_in_float32_are_within_an_ulp_over_the_reduced_range():
    # One reduction by π/2 and two polynomials, against float64's sine and cosine: within two
    # ulps of 1 (2^-22) everywhere up to |z| = 1e5, the quadrants' edges included, and relatively
    # exact near zero; the array-level switch takes that road for every such array.
    from jprop.models._activations import _reduced_sine_and_cosine, sine_and_cosine

    rng = np.random.default_rng(0)
    z = np.concatenate(
        [
            rng.uniform(-1e5, 1e5, 200_000),
            10 * rng.standard_normal(100_000),
            np.arange(-4000, 4001) * np.pi / 4,
            [0.0, -0.0, 1e-30, -1e-37, 1e-3, 1e5, -1e5],
        ]
    ).astype(np.float32)
    got = jax.jit(sine_and_cosine)(z)
    for value, reduced in zip(got, jax.jit(_reduced_sine_and_cosine)(z)):
        # the same road; XLA versions may fuse its products differently by an ulp
        np.testing.assert_allclose(value, reduced, rtol=0, atol=2.0**-23)
    exact = z.astype(np.float64)
    for value, want in zip(got, (np.sin(exact), np.cos(exact))):
        assert np.max(np.abs(np.asarray(value, np.float64) - want)) <= 2.0**-22
    small = np.abs(z) < 1e-3
    sine = np.asarray(got[0], np.float64)[small]
    np.testing.assert_allclose(sine, np.sin(exact[small]), rtol=2.0**-23, atol=0)
    assert np.array_equal(np.signbit(np.asarray(got[0])[z == 0]), np.signbit(z[z == 0]))


def test_sine_and_cosine_are_jaxs_own_beyond_the_reduced_range_in_other_dtypes_and_for_folx():
    from jprop.models._activations import primitive_activations, sine_and_cosine

    z = np.array([0.5, 1.5e5, -3e7, 1e30, -3.4e38, np.inf, -np.inf, np.nan], np.float32)
    s, c = jax.jit(sine_and_cosine)(z)
    np.testing.assert_array_equal(s, jnp.sin(z))
    np.testing.assert_array_equal(c, jnp.cos(z))
    assert np.all(np.isfinite(s[:5])) and np.all(np.isfinite(c[:5]))
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float64):
        v = jnp.linspace(-30, 30, 61, dtype=dtype)
        s, c = sine_and_cosine(v)
        assert s.dtype == c.dtype == dtype
        np.testing.assert_array_equal(s, jnp.sin(v))
        np.testing.assert_array_equal(c, jnp.cos(v))
    with primitive_activations():
        text = str(jax.make_jaxpr(sine_and_cosine)(jnp.ones(3, jnp.float32)))
    assert " sin " in text and " cos " in text and "custom_jvp" not in text and "cond" not in text


@pytest.mark.parametrize("which", [0, 1])
def test_sine_and_cosine_derivatives_are_each_others_at_every_order(which):
    # d/dz (sin, cos) = (cos, −sin): the rule's derivatives against JAX's own sine's, in float32,
    # in reverse mode under vmap and in forward mode.
    from jprop.models._activations import sine_and_cosine

    z = jnp.linspace(-40.0, 40.0, 81, dtype=jnp.float32)
    ours = lambda v: sine_and_cosine(v)[which]  # noqa: E731
    theirs = (jnp.sin, jnp.cos)[which]
    for order in range(4):
        np.testing.assert_allclose(
            nth_derivative(ours, order)(z), nth_derivative(theirs, order)(z), rtol=0, atol=3e-7
        )
    tangent = jax.jvp(jax.jit(ours), (z,), (2 * jnp.ones_like(z),))[1]
    np.testing.assert_allclose(tangent, 2 * jax.vmap(jax.grad(theirs))(z), rtol=0, atol=6e-7)


def _sines_outside_a_switch(jaxpr) -> list[str]:
    """The sin and cos primitives of a jaxpr (its sub-jaxprs' included) that no cond holds."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "cond":
            continue
        if eqn.primitive.name in ("sin", "cos"):
            found.append(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    found += _sines_outside_a_switch(sub)
    return found


def test_sine_and_cosine_under_vmap_switch_once_for_the_whole_batch():
    # Under jax.vmap (a user's map over examples, jax.hessian mapped over a batch) the mapped axis
    # is more elements of one elementwise function: one switch for all of them, as unmapped, not
    # a selection between the two roads that computes JAX's sine and cosine as well.
    from jprop.models._activations import sine_and_cosine

    z = jnp.linspace(-60.0, 60.0, 48, dtype=jnp.float32).reshape(2, 3, 8)
    far = z.at[1, 2, 5].set(3e5)  # one entry beyond the reduced range: JAX's own for the batch
    grad = jax.grad(lambda v: jnp.sum(sine_and_cosine(v)[0] * sine_and_cosine(v)[1]))
    for mapped in (jax.vmap(sine_and_cosine), jax.vmap(jax.vmap(sine_and_cosine))):
        assert _sines_outside_a_switch(jax.make_jaxpr(mapped)(z).jaxpr) == []
        for got, want in zip(jax.jit(mapped)(z), jax.jit(sine_and_cosine)(z)):
            np.testing.assert_allclose(got, want, rtol=0, atol=2.0**-23)
        for got, want in zip(jax.jit(mapped)(far), (jnp.sin(far), jnp.cos(far))):
            np.testing.assert_array_equal(got, want)
    mapped_grad = jax.vmap(jax.vmap(grad))
    assert _sines_outside_a_switch(jax.make_jaxpr(mapped_grad)(z).jaxpr) == []
    np.testing.assert_allclose(jax.jit(mapped_grad)(z), jnp.cos(2 * z), rtol=0, atol=1e-6)
