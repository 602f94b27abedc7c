"""The generic road's per-example rules: each input quantity of one example x (n,) from JAX's own
transforms (and folx's forward Laplacian), for any `f(params, x)`. `jax.vmap` maps them over a
batch; `jax.grad` differentiates them as it does any JAX code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import folx
import jax
import jax.numpy as jnp

from ..models._activations import primitive_activations

Function = Callable[[Any, jax.Array], jax.Array]


def jacobian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    # Forward mode costs n JVPs, reverse mode m VJPs: take the cheaper (docs/math.md §2).
    g = lambda x: f(params, x)  # noqa: E731
    return (jax.jacfwd if x.shape[-1] < jax.eval_shape(g, x).size else jax.jacrev)(g)(x)


def hessian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jax.hessian(lambda x: f(params, x))(x)


def laplacian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return folx_laplacian(lambda x: f(params, x), x)


def folx_laplacian(g: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """The Laplacian of g at one example x (n,), by folx's forward Laplacian.

    folx (Li et al. 2024) is the field's maintained library for it: one sweep over g's operations
    carrying the n input tangents and the running Laplacian, instead of the n × n Hessian that the
    trace would need; jax.grad, jax.jvp and jax.vmap go through it as through any JAX code. jprop's
    tanh, sigmoid, identity and sine units are traced as JAX's primitives, which folx reads as
    elementwise.

    folx's rules create some zeros in JAX's default float, float64 when x64 is on, so it runs under
    standard promotion (a user's strict setting would refuse folx's own mixing) and the result is
    cast back to the dtype g computes in."""
    with jax.numpy_dtype_promotion("standard"), primitive_activations():
        result = folx.forward_laplacian(g, sparsity_threshold=0)(x)
        dtype = jax.eval_shape(g, x).dtype
    return result.laplacian.astype(dtype)


def hessian_diagonal(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jnp.diagonal(hessian(f, params, x), axis1=-2, axis2=-1)


def hvp(f: Function, params: Any, x: jax.Array, g: jax.Array, r: jax.Array) -> jax.Array:
    # Forward over reverse: R_r{∇_x(gᵀf)} (docs/math.md §7.6).
    grad = jax.grad(lambda x: jnp.sum(g * f(params, x)))
    return jax.jvp(grad, (x,), (r,))[1]


def jacobian_vector_product(f: Function, params: Any, x: jax.Array, r: jax.Array) -> jax.Array:
    """J r, with any leading batch axes on x and r: one forward tangent."""
    return jax.jvp(lambda x: f(params, x), (x,), (r,))[1]
