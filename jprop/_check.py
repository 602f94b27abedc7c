"""Float64 central differences (Bishop 8.35) and `check`, the comparison users and tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._batch import map_examples
from ._program import cached
from ._validation import check_input, positive_number
from .quantities._transforms import hessian, hessian_diagonal, jacobian, laplacian


def _to_float64(tree: Any) -> Any:
    return jax.tree.map(
        lambda a: (
            jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a
        ),
        tree,
    )


def _in_float64(one: Callable, where: str) -> Callable[[Any, jax.Array], jax.Array]:
    """`(params, x) -> one(params, x_i)` over x's examples, in float64 (in a `jax.enable_x64`
    context, whatever the dtypes given), as one program compiled once per argument shapes."""
    compiled = jax.jit(lambda p, x: map_examples(lambda xi: one(p, xi), x))

    def fd(params: Any, x: jax.Array) -> jax.Array:
        x = check_input(x, where)
        with jax.enable_x64(True):
            return compiled(_to_float64(params), _to_float64(x))

    return fd


@cached
def fd_jacobian(f: Callable, *, eps: float = 1e-5) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The input Jacobian by float64 central differences, $[f(x+\varepsilon e_i) - f(x-\varepsilon e_i)]/2\varepsilon$.

    Error $O(\varepsilon^2)$ (Bishop 8.35); costs $2n$ evaluations of `f` per example. Evaluated in
    float64 whatever the dtype of `params` and `x` (inside a `jax.enable_x64` context), so call it
    outside `jit`.

    **Arguments:** `f(params, x)`; `eps`: the step (1e-5 suits first derivatives in float64).

    **Returns:** a function `(params, x) -> J` of shape `(..., m, n)`, float64.


    Examples:
        >>> import jax.numpy as jnp, jprop
        >>> f = lambda p, x: jnp.stack([p * jnp.sum(x**2)])
        >>> jprop.fd_jacobian(f)(1.0, jnp.ones(2)).round(4).tolist()
        [[2.0, 2.0]]
    """

    eps = positive_number(eps, "eps", "jprop.fd_jacobian", example="1e-5")

    def one(p, xi):
        steps = eps * jnp.eye(xi.shape[-1], dtype=jnp.float64)
        g = jax.vmap(lambda e: f(p, xi + e))
        return jnp.moveaxis((g(steps) - g(-steps)) / (2 * eps), 0, -1)

    return _in_float64(one, "jprop.fd_jacobian")


@cached
def fd_hessian(f: Callable, *, eps: float = 1e-4) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The input Hessian by float64 central differences.

    $H_{ij} \approx [f(x+\varepsilon e_i+\varepsilon e_j) - f(x+\varepsilon e_i-\varepsilon e_j)
    - f(x-\varepsilon e_i+\varepsilon e_j) + f(x-\varepsilon e_i-\varepsilon e_j)] / 4\varepsilon^2$,
    error $O(\varepsilon^2)$, $4n^2$ evaluations per example: a slow oracle for small `n`.

    **Arguments:** `f(params, x)`; `eps`: the step (1e-4 suits second derivatives in float64).

    **Returns:** a function `(params, x) -> H` of shape `(..., m, n, n)`, float64.


    Examples:
        >>> import jax.numpy as jnp, jprop
        >>> f = lambda p, x: jnp.stack([p * jnp.sum(x**2)])
        >>> jprop.fd_hessian(f)(1.0, jnp.ones(2)).round(4).tolist()
        [[[2.0, 0.0], [0.0, 2.0]]]
    """

    eps = positive_number(eps, "eps", "jprop.fd_hessian", example="1e-4")

    def one(p, xi):
        steps = eps * jnp.eye(xi.shape[-1], dtype=jnp.float64)
        plus = steps[:, None, :] + steps[None, :, :]  # e_i + e_j
        minus = steps[:, None, :] - steps[None, :, :]  # e_i - e_j
        g = jax.vmap(jax.vmap(lambda e: f(p, xi + e)))
        h = (g(plus) - g(minus) - g(-minus) + g(-plus)) / (4 * eps * eps)
        return jnp.moveaxis(h, (0, 1), (-2, -1))

    return _in_float64(one, "jprop.fd_hessian")


def _fd_laplacian(f: Callable, dims=None, outputs=None) -> Callable[[Any, jax.Array], jax.Array]:
    def fd(params, x):
        diagonal = _fd_hessian_diagonal(f, dims, outputs)(params, x)
        with jax.enable_x64(True):
            return jnp.sum(diagonal, axis=-1)

    return fd


def _fd_hessian_diagonal(
    f: Callable, dims=None, outputs=None
) -> Callable[[Any, jax.Array], jax.Array]:
    """(..., m, k): the second derivatives along `dims` (all inputs by default), in that order,
    of the `outputs` (all by default), as the transforms' options select them."""

    def fd(params, x):
        with jax.enable_x64(True):
            diagonal = jnp.diagonal(fd_hessian(f)(params, x), axis1=-2, axis2=-1)
            if dims is not None:
                diagonal = diagonal[..., list(dims)]
            return diagonal if outputs is None else diagonal[..., list(outputs), :]

    return fd


_REFERENCES: dict[Callable, Callable] = {
    jacobian: fd_jacobian,
    hessian: fd_hessian,
    laplacian: _fd_laplacian,
    hessian_diagonal: _fd_hessian_diagonal,
}


def relative_error(computed: Any, reference: Any, floor: float = 0.0) -> float:
    r"""Normwise relative error $\max|a - b| / \max(\max|b|, \text{floor})$, in float64.

    `floor` keeps the measure meaningful when the reference is (numerically) zero, e.g. the Hessian
    of a linear network: differences are then measured against `floor` instead. With `floor = 0` and
    a zero reference the absolute difference is returned.


    Examples:
        >>> import jprop
        >>> jprop.relative_error([1.0, 2.0], [1.0, 2.5])
        0.2
    """
    a, b = np.asarray(computed, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"jprop.relative_error: shapes differ, {a.shape} against {b.shape}.")
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, floor)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    return diff / scale if scale > 0 else diff


def _named(value: Any) -> str:
    """A transform as a user wrote it: jprop's and JAX's by their public names (jprop.fit,
    jax.hessian), another function by its own, anything else by its repr."""
    name = getattr(value, "__name__", None)
    if name is None:
        return repr(value)
    package = (getattr(value, "__module__", None) or "").split(".")[0]
    return f"{package}.{name}" if package in ("jprop", "jax") else name


def check(transform: Callable, f: Callable, params: Any, x: jax.Array, **options: Any) -> float:
    r"""Compare a jprop transform of `f` with float64 finite differences; return the worst error.

    Computes `transform(f, **options)(params, x)` in the dtype of `params`/`x`, the matching
    central-difference oracle in float64, and returns their normwise relative error
    $\max|a - b| / \max(\max|b|, 10^{-3})$ — the floor because near-zero references are dominated by
    the finite differences' own rounding. The oracle's own error sets the floor: measured on small
    tanh nets, about 1e-7 in float32 (up to 6e-7), and in float64 about 1e-11 for the Jacobian but
    3e-8 to 1e-7 for the second derivatives (central second differences carry O(eps²)
    truncation): a float64 result near 1e-7 is exact, not a bug.

    **Arguments:**

    - `transform`: `jprop.jacobian`, `jprop.hessian`, `jprop.laplacian` or
      `jprop.hessian_diagonal`.
    - `f`, `params`, `x`: as for the transform; `x` of shape `(n,)` or `(..., n)`.
    - `options`: passed to the transform, e.g. `method="autodiff"`; `dims` and `outputs` (for
      `laplacian` and `hessian_diagonal`) select from the oracle alike.

    **Returns:** a Python float.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> jprop.check(jprop.hessian, net, net.init(jax.random.key(0)), jax.numpy.ones(3)) < 1e-4
        True
    """
    if transform not in _REFERENCES:
        names = ", ".join(f"jprop.{t.__name__}" for t in _REFERENCES)
        raise ValueError(
            f"jprop.check: no finite-difference oracle for {_named(transform)}; use one of {names}."
        )
    computed = transform(f, **options)(params, x)
    selection = {name: options[name] for name in ("dims", "outputs") if name in options}
    reference = _REFERENCES[transform](f, **selection)(params, x)
    return relative_error(computed, reference, floor=1e-3)
