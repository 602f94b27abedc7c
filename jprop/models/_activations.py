"""Activation functions with hand-derived `custom_jvp` rules, and their derivative table.

Every rule here is written in terms of the activation's *output* (docs/math.md §1). That makes it exact,
cheap, finite for any input (|x| = 1e4 included), and itself differentiable, so second and third
derivatives through `jax.custom_jvp` come out right. The closed-form passes (`_passes.py`) read
σ', σ'', σ''' from `derivatives`, so one place defines each activation's calculus.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["tansig", "logsig", "purelin", "softmax", "derivatives"]

# tanh, the sigmoid, the identity and the sine have JAX primitives whose derivative rules are as
# exact and as finite as ours (tanh's and the sigmoid's written in the output too). folx's forward
# Laplacian reads those primitives as elementwise, and takes a custom_jvp call for a general
# function of its whole input, whose second-order terms cost it more work and memory; JAX's own
# transforms of higher order run faster through our rules (the jax.hessian contenders of
# benchmarks.pinn_step). So these four take ours, except inside `primitive_activations`, which
# the generic road enters around folx.
_primitives_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jprop_primitive_activations", default=False
)


@contextlib.contextmanager
def primitive_activations():
    """Within this context, `tansig`, `logsig`, `purelin` and `sin` traced are JAX's primitives,
    without jprop's derivative rules: for folx's forward Laplacian, which reads those as
    elementwise operations."""
    token = _primitives_only.set(True)
    try:
        yield
    finally:
        _primitives_only.reset(token)


def tansig(x: jax.Array) -> jax.Array:
    r"""MATLAB's hyperbolic tangent sigmoid, $\mathrm{tansig}(x) = 2/(1+e^{-2x}) - 1 = \tanh x$.

    Evaluated with `jnp.tanh`: the literal formula overflows for large negative `x` and cancels
    near 0. Its derivative rule is written in the output $t$: $t' = 1 - t^2$.

    **Arguments:** `x`: an array of any shape (the *input*, not the output).

    **Returns:** an array of the same shape and dtype, with values in $(-1, 1)$.

    Examples:
        >>> import jprop, jax.numpy as jnp
        >>> float(jprop.tansig(jnp.arctanh(0.5)))
        0.5
    """
    return jnp.tanh(x) if _primitives_only.get() else _tansig(x)


@jax.custom_jvp
def _tansig(x: jax.Array) -> jax.Array:
    return jnp.tanh(x)


# d tansig = 1 - t²: exact, finite for any |x| (t → ±1 gives 0, never inf - inf), and
# differentiable again through this same rule, giving t'' = -2t(1-t²) and t''' = -2(1-t²)(1-3t²).
@_tansig.defjvp
def _tansig_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    t = tansig(x)
    return t, (1 - t * t) * dx


def logsig(x: jax.Array) -> jax.Array:
    r"""Logistic sigmoid, $\mathrm{logsig}(x) = 1/(1+e^{-x})$, with values in $(0, 1)$.

    Evaluated with `jax.nn.sigmoid` (stable for any sign of `x`); derivative rule
    $\sigma' = \sigma(1-\sigma)$ in the output $\sigma$.

    **Arguments:** `x`: an array of any shape (the input).

    **Returns:** an array of the same shape and dtype.

    Examples:
        >>> import jprop
        >>> float(jprop.logsig(0.0))
        0.5
    """
    return jax.nn.sigmoid(x) if _primitives_only.get() else _logsig(x)


@jax.custom_jvp
def _logsig(x: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(x)


# d logsig = σ(1-σ): in the output, so it is 0 (not NaN) when σ saturates at 0 or 1.
@_logsig.defjvp
def _logsig_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s = logsig(x)
    return s, s * (1 - s) * dx


def purelin(x: jax.Array) -> jax.Array:
    """The identity (MATLAB's `purelin`), the default output activation ("linear").

    Examples:
        >>> import jprop
        >>> float(jprop.purelin(3.0))
        3.0
    """
    return jnp.asarray(x) if _primitives_only.get() else _purelin(x)


@jax.custom_jvp
def _purelin(x: jax.Array) -> jax.Array:
    return x


@_purelin.defjvp
def _purelin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return purelin(x), dx


@jax.custom_jvp
def softmax(x: jax.Array) -> jax.Array:
    r"""Softmax over the last axis, $y_k = e^{x_k} / \sum_l e^{x_l}$; an output activation only.

    Derivative rule in the output (Bishop 8.34): $\partial y_k/\partial x_l = \delta_{kl} y_k - y_k y_l$,
    applied as $dy = y \circ (dx - \langle y, dx\rangle)$.

    **Arguments:** `x`: shape `(..., m)`.

    **Returns:** shape `(..., m)`, non-negative, summing to 1 over the last axis.


    Examples:
        >>> import jax.numpy as jnp, jprop
        >>> tuple(round(float(v), 4) for v in jprop.softmax(jnp.log(jnp.array([1.0, 3.0]))))
        (0.25, 0.75)
    """
    return jax.nn.softmax(x, axis=-1)


def softmax_jacobian_times(y: jax.Array, v: jax.Array) -> jax.Array:
    """The softmax Jacobian at output y applied to v over the last axis (Bishop 8.34:
    ∂y_k/∂x_l = δ_kl y_k − y_k y_l, symmetric): y ∘ (v − ⟨y, v⟩). y (..., m) broadcasts against v
    (..., m), so the rows of a matrix are taken at once. The one place every pass takes it from.

    v − ⟨y, v⟩ is formed as w − ⟨y, w⟩ with w = v − v_c, c the most probable class (equal, as
    Σy = 1): for a confident softmax (y_c → 1) the plain form cancels v_c against ⟨y, v⟩ ≈ v_c and
    loses the small classes' share, and with it every derivative of the dominant output."""
    shape = jnp.broadcast_shapes(y.shape, v.shape)
    c = jnp.broadcast_to(jnp.argmax(y, axis=-1, keepdims=True), shape[:-1] + (1,))
    w = v - jnp.take_along_axis(jnp.broadcast_to(v, shape), c, axis=-1)
    return y * (w - jnp.sum(y * w, axis=-1, keepdims=True))


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = softmax(x)
    return y, softmax_jacobian_times(y, dx)


def _normal_cdf(x):
    x = jnp.asarray(x)  # jax 0.8 passes a Python float or a constant array through custom_jvp
    return 0.5 * jax.lax.erfc(-x / jnp.sqrt(jnp.asarray(2.0, x.dtype)))


def _normal_pdf(x):
    x = jnp.asarray(x)
    return jnp.exp(-0.5 * x * x) / jnp.sqrt(jnp.asarray(2 * jnp.pi, x.dtype))


def sin(x: jax.Array) -> jax.Array:
    r"""The sine activation of SIREN-style networks, $\sin x$; its derivatives $\cos x$,
    $-\sin x$, $-\cos x$ are written in the input. In float32 the sine and cosine come from
    one shared argument reduction and two polynomials, within $2^{-22}$ of the exact values
    (see the Architectures guide).

    Examples:
        >>> import jprop
        >>> float(jprop.sin(0.0))
        0.0
    """
    return jnp.sin(x) if _primitives_only.get() else _sin(x)


@jax.custom_jvp
def _sin(x: jax.Array) -> jax.Array:
    return _sine(x)


@_sin.defjvp
def _sin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return sin(x), _cosine(x) * dx


def _sine(z):
    return sine_and_cosine(z)[0]


def _cosine(z):
    return sine_and_cosine(z)[1]


def sine_and_cosine(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sin z, cos z) elementwise, as the sine activation and the Fourier layers' jets read them.

    In float32, both come from one shared reduction of z by π/2 and two short polynomials:
    elementwise arithmetic that XLA vectorises on every backend, where its own sine and cosine
    need not be. Within 2⁻²² (two units in the last place at 1) of the exact values for
    |z| ≤ 1e5, where the spacing of float32 z itself is below 0.01; an array with any larger or
    non-finite entry takes `jnp.sin` and `jnp.cos` whole. Other dtypes,
    and tracing inside `primitive_activations` (for folx), take JAX's primitives. The derivative
    rule is (cos z · ż, −sin z · ż), exact at every order.
    """
    z = jnp.asarray(z)
    if _primitives_only.get() or z.dtype != jnp.float32:
        return jnp.sin(z), jnp.cos(z)
    return _sine_and_cosine(z)


# π/2 as a sum of four float32s (Cody & Waite's reduction): each of the first three has 8
# significant bits, so k·part is exact for |k| < 2^16, which |z| ≤ _REDUCED_RANGE keeps, whether
# or not the compiler fuses a product and its subtraction into one rounding.
_HALF_PI_PARTS = (1.5703125, 4.825592041015625e-4, 1.2665987014770508e-6, 9.920935184482005e-10)
_REDUCED_RANGE = 1e5
# Minimax polynomials on [−π/4, π/4] (Cephes' sinf and cosf), in r² from the highest power.
_SINE_POLYNOMIAL = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COSINE_POLYNOMIAL = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def _horner(coefficients: tuple[float, ...], x: jax.Array) -> jax.Array:
    out = jnp.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        out = out * x + c
    return out


def _reduced_sine_and_cosine(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sin z and cos z for |z| ≤ _REDUCED_RANGE: z = k·π/2 + r with |r| ≤ π/4, the polynomials
    at r, and the quadrant k mod 4 choosing which is which and its sign."""
    k = jnp.round(z * (2 / jnp.pi))
    r = z
    for part in _HALF_PI_PARTS:
        r = r - k * part
    r2 = r * r
    s = r + r * r2 * _horner(_SINE_POLYNOMIAL, r2)
    c = 1 - 0.5 * r2 + r2 * r2 * _horner(_COSINE_POLYNOMIAL, r2)
    quadrant = k.astype(jnp.int32) & 3
    odd = (quadrant & 1) == 1
    sine = jnp.where(odd, c, s)
    cosine = jnp.where(odd, s, c)
    sine = jnp.where(quadrant >= 2, -sine, sine)
    sine = jnp.where(z == 0, z, sine)  # sin(−0) = −0
    cosine = jnp.where((quadrant == 1) | (quadrant == 2), -cosine, cosine)
    return sine, cosine


@jax.custom_batching.custom_vmap
def _switched(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The reduced road when every |z| ≤ _REDUCED_RANGE, else JAX's sine and cosine: one switch
    for the whole array."""

    def exact(z):
        return jnp.sin(z), jnp.cos(z)

    # NaN in z fails the comparison and takes the exact branch, which returns NaN there.
    within = jnp.max(jnp.abs(z), initial=0.0) <= _REDUCED_RANGE
    return jax.lax.cond(within, _reduced_sine_and_cosine, exact, z)


@_switched.def_vmap
def _switched_vmap(axis_size, in_batched, z):
    """Under `jax.vmap` the mapped axis is more elements of one elementwise function: one switch
    over all of them. (JAX's own rule would turn a switch on a mapped condition into a selection
    that runs both roads.)"""
    (batched,) = in_batched
    return _switched(z), (batched, batched)


@jax.custom_jvp
def _sine_and_cosine(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _switched(z)


@_sine_and_cosine.defjvp
def _sine_and_cosine_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    s, c = _sine_and_cosine(z)
    return (s, c), (c * dz, -s * dz)


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    r"""$\mathrm{softplus}(x) = \log(1 + e^x)$, evaluated stably (`jax.nn.softplus`); its
    derivative is the logistic sigmoid, so every derivative is finite for any x.

    Examples:
        >>> import jprop
        >>> round(float(jprop.softplus(0.0)), 6)
        0.693147
    """
    return jax.nn.softplus(x)


# d softplus = σ(x), through logsig's own rule, so higher derivatives follow σ' = σ(1 − σ).
@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), logsig(x) * dx


@jax.custom_jvp
def silu(x: jax.Array) -> jax.Array:
    r"""SiLU (swish), $x\,\sigma(x)$; derivative $\sigma(x)(1 + x(1 - \sigma(x)))$.

    Examples:
        >>> import jprop
        >>> float(jprop.silu(0.0))
        0.0
    """
    return x * jax.nn.sigmoid(x)


# d silu = σ + xσ(1 − σ): finite at |x| = 1e4 (σ(1 − σ) is an exact 0 there, never inf · 0).
@silu.defjvp
def _silu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s = logsig(x)
    return silu(x), (s + x * s * (1 - s)) * dx


@jax.custom_jvp
def gelu(x: jax.Array) -> jax.Array:
    r"""GELU in its exact form, $x\,\Phi(x)$ with $\Phi$ the standard normal CDF (the erf form,
    not the tanh approximation that `jax.nn.gelu` uses by default); derivative
    $\Phi(x) + x\varphi(x)$.

    Examples:
        >>> import jprop
        >>> float(jprop.gelu(0.0))
        0.0
    """
    return x * _normal_cdf(x)


@gelu.defjvp
def _gelu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return gelu(x), (_normal_cdf(x) + x * _normal_pdf(x)) * dx


class Derivatives(NamedTuple):
    """The first three derivatives of an elementwise activation, each a function of one array: the
    activation's output y when `argument == "output"` (tanh, sigmoid, identity: exact and cheap
    that way), its input z when `argument == "input"` (sin, softplus, silu, gelu, which no output
    determines)."""

    d1: Callable[[jax.Array], jax.Array]
    d2: Callable[[jax.Array], jax.Array]
    d3: Callable[[jax.Array], jax.Array]
    argument: str = "output"


def _tansig_derivatives() -> Derivatives:
    # t' = 1 - t², t'' = -2t(1 - t²), t''' = -2(1 - t²)(1 - 3t²).
    return Derivatives(
        d1=lambda t: 1 - t * t,
        d2=lambda t: -2 * t * (1 - t * t),
        d3=lambda t: -2 * (1 - t * t) * (1 - 3 * t * t),
    )


def _logsig_derivatives() -> Derivatives:
    # σ' = σ(1-σ); σ'' = σ'(1-2σ); σ''' = σ'(1 - 6σ + 6σ²).
    return Derivatives(
        d1=lambda s: s * (1 - s),
        d2=lambda s: s * (1 - s) * (1 - 2 * s),
        d3=lambda s: s * (1 - s) * (1 - 6 * s + 6 * s * s),
    )


def _purelin_derivatives() -> Derivatives:
    return Derivatives(d1=jnp.ones_like, d2=jnp.zeros_like, d3=jnp.zeros_like)


def _sin_derivatives() -> Derivatives:
    return Derivatives(
        d1=_cosine, d2=lambda z: -_sine(z), d3=lambda z: -_cosine(z), argument="input"
    )


def _softplus_derivatives() -> Derivatives:
    # softplus' = σ, then σ's own derivatives; jax.nn.sigmoid is finite for any z.
    table, sigmoid = _logsig_derivatives(), jax.nn.sigmoid
    return Derivatives(
        d1=sigmoid,
        d2=lambda z: table.d1(sigmoid(z)),
        d3=lambda z: table.d2(sigmoid(z)),
        argument="input",
    )


def _silu_derivatives() -> Derivatives:
    # f = zσ: f' = σ + zσ', f'' = 2σ' + zσ'', f''' = 3σ'' + zσ''' (derivatives of the logistic σ).
    table, sigmoid = _logsig_derivatives(), jax.nn.sigmoid
    return Derivatives(
        d1=lambda z: sigmoid(z) + z * table.d1(sigmoid(z)),
        d2=lambda z: 2 * table.d1(sigmoid(z)) + z * table.d2(sigmoid(z)),
        d3=lambda z: 3 * table.d2(sigmoid(z)) + z * table.d3(sigmoid(z)),
        argument="input",
    )


def _gelu_derivatives() -> Derivatives:
    # f = zΦ(z): f' = Φ + zφ, f'' = φ(2 − z²), f''' = zφ(z² − 4), using φ' = −zφ. Where φ(z)
    # underflows to 0 the polynomial factors are evaluated at 0 instead of z: z² would overflow
    # (float16 from |z| = 256) and 0 · inf is NaN where the exact value is 0.
    def tail_safe(z):
        pdf = _normal_pdf(z)
        return pdf, jnp.where(pdf == 0, 0, z)

    def d2(z):
        pdf, z = tail_safe(z)
        return pdf * (2 - z * z)

    def d3(z):
        pdf, z = tail_safe(z)
        return z * pdf * (z * z - 4)

    return Derivatives(
        d1=lambda z: _normal_cdf(z) + z * _normal_pdf(z), d2=d2, d3=d3, argument="input"
    )


# canonical name -> (function, derivative table). Softmax is not elementwise, so it has no entry
# here; the closed forms treat it on its own.
_ELEMENTWISE: dict[str, tuple[Callable[[jax.Array], jax.Array], Derivatives]] = {
    "tanh": (tansig, _tansig_derivatives()),
    "sigmoid": (logsig, _logsig_derivatives()),
    "identity": (purelin, _purelin_derivatives()),
    "linear": (purelin, _purelin_derivatives()),
    "sin": (sin, _sin_derivatives()),
    "softplus": (softplus, _softplus_derivatives()),
    "silu": (silu, _silu_derivatives()),
    "gelu": (gelu, _gelu_derivatives()),
}

# Standard names and MATLAB's, each with the canonical (standard) name jprop keeps, so MLPs written
# either way are equal, hash alike and share compiled programs.
HIDDEN_ALIASES = {
    "tanh": "tanh",
    "tansig": "tanh",
    "sigmoid": "sigmoid",
    "logsig": "sigmoid",
    "identity": "identity",
    "linear": "identity",
    "purelin": "identity",
    "sin": "sin",
    "softplus": "softplus",
    "silu": "silu",
    "swish": "silu",
    "gelu": "gelu",
}
OUTPUT_ALIASES = {
    "linear": "linear",
    "identity": "linear",
    "purelin": "linear",
    "tanh": "tanh",
    "tansig": "tanh",
    "sigmoid": "sigmoid",
    "logsig": "sigmoid",
    "softmax": "softmax",
}
HIDDEN_ACTIVATIONS = tuple(HIDDEN_ALIASES)
OUTPUT_ACTIVATIONS = tuple(OUTPUT_ALIASES)


def is_linear(name: str) -> bool:
    """Whether the activation `name` (canonical) is the identity, read off its derivative table."""
    return name != "softmax" and _ELEMENTWISE[name][1].d2 is jnp.zeros_like


def activation_function(name: str) -> Callable[[jax.Array], jax.Array]:
    """The function for an activation name (validated by the caller)."""
    return softmax if name == "softmax" else _ELEMENTWISE[name][0]


# Activations whose slopes XLA's fusion pass takes for cheap although they are not: it recomputes
# JAX's sin and cos (which `sine_and_cosine` takes outside float32) inside every fused kernel
# that reads them, where one of each per layer suffices and a sine costs many times a tanh. A
# slope divided by a one computed at run time is a division, which fusion does not duplicate:
# each slope is then computed once per layer and read back (`benchmarks.pinn_step --activation
# sin` times the result). In float32 the switch of `sine_and_cosine` already computes each once.
_COMPUTED_ONCE = frozenset({"sin"})


def slopes(name: str, z: jax.Array, y: jax.Array, orders: int = 2) -> tuple[jax.Array, ...]:
    """The first `orders` derivatives of the activation `name` at net input z with output y, each
    read from the table in the argument it is written in: the one place every closed form takes
    an activation's calculus from."""
    table = _ELEMENTWISE[name][1]
    arg = y if table.argument == "output" else z
    values = tuple(d(arg) for d in (table.d1, table.d2, table.d3)[:orders])
    if name in _COMPUTED_ONCE:
        values = computed_once(z, *values)
    return values


def computed_once(z: jax.Array, *values: jax.Array) -> tuple[jax.Array, ...]:
    """`values`, functions of z elementwise, each divided by a one computed from z at run time,
    so that XLA computes each once and reads it back rather than again inside every fused kernel
    that reads it (see `_COMPUTED_ONCE`)."""
    if not z.ndim:
        return values
    # exactly 1 wherever z is finite; NaN where it is not, and there the sine is NaN already.
    # Elementwise: a one broadcast from fewer values becomes a reciprocal times v, a product,
    # which fusion duplicates again.
    one = 1 + 0 * z
    return tuple(v / one for v in values)


def derivatives(name: str) -> Derivatives:
    """The first three derivatives of the elementwise activation `name`, from the table every
    closed form reads.

    **Arguments:** `name`: a hidden or output activation name, standard or MATLAB's: `"tanh"`
    (`"tansig"`), `"sigmoid"` (`"logsig"`), `"identity"` (`"linear"`, `"purelin"`), `"sin"`,
    `"softplus"`, `"silu"` (`"swish"`), `"gelu"`.

    **Returns:** a `Derivatives(d1, d2, d3, argument)`: functions of the activation's *output* when
    `argument == "output"` (tanh, sigmoid, identity), of its *input* when `"input"`.

    Examples:
        >>> import jprop, jax.numpy as jnp
        >>> d = jprop.derivatives("tanh")
        >>> [float(g(jnp.asarray(0.5))) for g in d[:3]], d.argument
        ([0.75, -0.75, -0.375], 'output')
    """
    if not isinstance(name, str):
        raise TypeError(
            f"jprop.derivatives: `name` must be one activation's name, a str such as 'tanh'; got "
            f"{type(name).__name__} {name!r}."
        )
    canonical = HIDDEN_ALIASES.get(name)
    if canonical is None:
        known = ", ".join(repr(k) for k in HIDDEN_ALIASES)
        raise ValueError(
            f"jprop.derivatives: unknown elementwise activation {name!r}; known: {known}. "
            "(softmax is not elementwise and has no scalar derivative table.)"
        )
    return _ELEMENTWISE[canonical][1]
