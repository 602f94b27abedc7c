"""Activation functions with hand-derived `custom_jvp` rules, and their derivative table.

Every rule here is written in terms of the activation's *output* (MATH.md §1). That makes it exact,
cheap, finite for any input (|x| = 1e4 included), and itself differentiable, so second and third
derivatives through `jax.custom_jvp` come out right. The closed-form passes (`_passes.py`) read
σ', σ'', σ''' from `derivatives`, so one place defines each activation's calculus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["tansig", "logsig", "purelin", "softmax", "derivatives"]


@jax.custom_jvp
def tansig(x: jax.Array) -> jax.Array:
    r"""MATLAB's hyperbolic tangent sigmoid, $\mathrm{tansig}(x) = 2/(1+e^{-2x}) - 1 = \tanh x$.

    Evaluated with `jnp.tanh`: the literal formula overflows for large negative `x` and cancels
    near 0. Its derivative rule is written in the output $t$: $t' = 1 - t^2$.

    **Arguments:** `x`: an array of any shape (the *input*, not the output).

    **Returns:** an array of the same shape and dtype, with values in $(-1, 1)$.

    >>> import jprop, jax.numpy as jnp
    >>> float(jprop.tansig(jnp.arctanh(0.5)))
    0.5
    """
    return jnp.tanh(x)


# d tansig = 1 - t²: exact, finite for any |x| (t → ±1 gives 0, never inf - inf), and
# differentiable again through this same rule, giving t'' = -2t(1-t²) and t''' = -2(1-t²)(1-3t²).
@tansig.defjvp
def _tansig_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    t = tansig(x)
    return t, (1 - t * t) * dx


@jax.custom_jvp
def logsig(x: jax.Array) -> jax.Array:
    r"""Logistic sigmoid, $\mathrm{logsig}(x) = 1/(1+e^{-x})$, with values in $(0, 1)$.

    Evaluated with `jax.nn.sigmoid` (stable for any sign of `x`); derivative rule
    $\sigma' = \sigma(1-\sigma)$ in the output $\sigma$.

    **Arguments:** `x`: an array of any shape (the input).

    **Returns:** an array of the same shape and dtype.

    >>> import jprop
    >>> float(jprop.logsig(0.0))
    0.5
    """
    return jax.nn.sigmoid(x)


# d logsig = σ(1-σ): in the output, so it is 0 (not NaN) when σ saturates at 0 or 1.
@logsig.defjvp
def _logsig_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s = logsig(x)
    return s, s * (1 - s) * dx


@jax.custom_jvp
def purelin(x: jax.Array) -> jax.Array:
    """The identity (MATLAB's `purelin`), the default output activation ("linear").

    >>> import jprop
    >>> float(jprop.purelin(3.0))
    3.0
    """
    return x


@purelin.defjvp
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
    """
    return jax.nn.softmax(x, axis=-1)


@softmax.defjvp
def _softmax_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = softmax(x)
    return y, y * (dx - jnp.sum(y * dx, axis=-1, keepdims=True))


class Derivatives(NamedTuple):
    """σ', σ'', σ''' of an elementwise activation, each written as a function of the output y."""

    d1: Callable[[jax.Array], jax.Array]
    d2: Callable[[jax.Array], jax.Array]
    d3: Callable[[jax.Array], jax.Array]


def _tansig_derivatives() -> Derivatives:
    # MATH.md §1: t' = 1 - t², t'' = -2t(1 - t²), t''' = -2(1 - t²)(1 - 3t²).
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


# name -> (function, derivative table). "linear" is purelin's output-layer name. Softmax is not
# elementwise, so it has no entry in this table; the closed forms treat it on its own.
_ELEMENTWISE: dict[str, tuple[Callable[[jax.Array], jax.Array], Derivatives]] = {
    "tansig": (tansig, _tansig_derivatives()),
    "logsig": (logsig, _logsig_derivatives()),
    "purelin": (purelin, _purelin_derivatives()),
    "linear": (purelin, _purelin_derivatives()),
}

HIDDEN_ACTIVATIONS = ("tansig", "logsig", "purelin")
OUTPUT_ACTIVATIONS = ("linear", "tansig", "logsig", "softmax")


def activation_function(name: str) -> Callable[[jax.Array], jax.Array]:
    """The function for an activation name (validated by the caller)."""
    return softmax if name == "softmax" else _ELEMENTWISE[name][0]


def derivatives(name: str) -> Derivatives:
    """σ', σ'', σ''' of the elementwise activation `name`, each a function of its *output*.

    **Arguments:** `name`: one of `"tansig"`, `"logsig"`, `"purelin"`, `"linear"`.

    **Returns:** a `Derivatives(d1, d2, d3)` of functions of the output array.

    >>> import jprop, jax.numpy as jnp
    >>> d = jprop.derivatives("tansig")
    >>> [float(g(jnp.asarray(0.5))) for g in d]
    [0.75, -0.75, -0.375]
    """
    if name not in _ELEMENTWISE:
        known = ", ".join(repr(k) for k in _ELEMENTWISE)
        raise ValueError(
            f"derivatives: unknown elementwise activation {name!r}; known: {known}. "
            "(softmax is not elementwise and has no scalar derivative table.)"
        )
    return _ELEMENTWISE[name][1]
