"""Derivatives with respect to the input: `jacobian`, `hessian`, `laplacian` and the R-operator.

Each transform takes `f(params, x)` and returns a function of `(params, x)`, in the manner of
`jax.jacobian`. Two roads lead to every quantity (DESIGN.md principle 2): the generic autodiff road,
built from `jax.jvp`/`jax.vjp` compositions, which works for any `f`; and the closed-form road for a
`jprop.MLP`. `method="auto"` picks the closed form when it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._batch import map_examples
from ._mlp import MLP
from ._validation import check_input, check_like, check_method, single_array_output

Function = Callable[[Any, jax.Array], jax.Array]
METHODS = ("auto", "autodiff")


def _resolve_method(f: Any, method: str, where: str) -> str:
    if not callable(f):
        raise TypeError(f"{where}: `f` must be a callable f(params, x); got {type(f).__name__}.")
    check_method(method, METHODS, where)
    return "autodiff"


def _prepare(f: Any, params: Any, x: Any, where: str) -> tuple[jax.Array, jax.ShapeDtypeStruct]:
    """Validate `x` (and params for an MLP) and return `x` with the abstract per-example output."""
    if isinstance(f, MLP):
        f.check_params(params, where)
        x = check_input(x, where, f.n_inputs)
    else:
        x = check_input(x, where)
    example = jax.ShapeDtypeStruct(x.shape[-1:], x.dtype)
    out = single_array_output(jax.eval_shape(lambda p, e: f(p, e), params, example), where)
    return x, out


def _autodiff_jacobian(f: Function, params: Any, x: jax.Array, out_size: int) -> jax.Array:
    # Forward mode costs n JVPs, reverse mode m VJPs: take the cheaper (MATH.md §2).
    g = lambda x: f(params, x)  # noqa: E731
    return (jax.jacfwd if x.shape[-1] < out_size else jax.jacrev)(g)(x)


def _autodiff_hessian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jax.hessian(lambda x: f(params, x))(x)


def _autodiff_laplacian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jnp.trace(_autodiff_hessian(f, params, x), axis1=-2, axis2=-1)


def jacobian(f: Function, *, method: str = "auto") -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Jacobian of `f` with respect to its input, $J_{kj} = \partial f_k / \partial x_j$.

    **Arguments:**
    - `f`: a `jprop.MLP` or any function `f(params, x)` taking `x` of shape `(n,)`.
    - `method`: `"auto"` (closed form for a `jprop.MLP`, else autodiff) or `"autodiff"`.

    **Returns:** a function `(params, x) -> J`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `J` has shape `(m, n)`; `x` of shape `(..., n)` gives `(..., m, n)`. The autodiff road
    uses forward mode when `n < m` and reverse mode otherwise.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.jacobian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2, 3)
    """
    where = "jprop.jacobian"
    _resolve_method(f, method, where)

    @jax.jit
    def compute(params, x):
        out_size = jax.eval_shape(f, params, x[..., 0, :] if x.ndim > 1 else x).size
        return map_examples(lambda xi: _autodiff_jacobian(f, params, xi, out_size), x)

    def jacobian_fn(params: Any, x: jax.Array) -> jax.Array:
        x, _ = _prepare(f, params, x, where)
        return compute(params, x)

    return jacobian_fn


def hessian(f: Function, *, method: str = "auto") -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Hessian of every output with respect to the input, $H_{kij} = \partial^2 f_k/\partial x_i \partial x_j$.

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x) -> H`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `H` has shape `(m, n, n)`, symmetric in its last two axes; `x` of shape `(..., n)` gives
    `(..., m, n, n)`.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.hessian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2, 3, 3)
    """
    where = "jprop.hessian"
    _resolve_method(f, method, where)

    @jax.jit
    def compute(params, x):
        return map_examples(lambda xi: _autodiff_hessian(f, params, xi), x)

    def hessian_fn(params: Any, x: jax.Array) -> jax.Array:
        x, _ = _prepare(f, params, x, where)
        return compute(params, x)

    return hessian_fn


def laplacian(f: Function, *, method: str = "auto") -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Laplacian of every output, $\Delta f_k = \sum_i \partial^2 f_k / \partial x_i^2$.

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x) -> L`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `L` has shape `(m,)`; `x` of shape `(..., n)` gives `(..., m)`.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.laplacian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2,)
    """
    where = "jprop.laplacian"
    _resolve_method(f, method, where)

    @jax.jit
    def compute(params, x):
        return map_examples(lambda xi: _autodiff_laplacian(f, params, xi), x)

    def laplacian_fn(params: Any, x: jax.Array) -> jax.Array:
        x, _ = _prepare(f, params, x, where)
        return compute(params, x)

    return laplacian_fn


def R(g: Callable[[Any, jax.Array], Any], *, method: str = "auto") -> Callable[..., Any]:
    r"""The input-space R-operator, $\mathcal{R}_r\{g\} = \partial_\varepsilon g(w, x + \varepsilon r)|_{\varepsilon=0}$.

    Perturbs the *input* and holds the weights (Flake & Pearlmutter 1999; MATH.md §3). For a network
    output, $\mathcal{R}_r\{f\} = J r$.

    **Arguments:**
    - `g`: any function `g(params, x)`; its output may be any pytree of arrays.
    - `method`: `"auto"` or `"autodiff"`.

    **Returns:** a function `(params, x, r)`, with `r` of the same shape and dtype as `x`, returning
    a pytree shaped like `g(params, x)`. `g` sees `x` exactly as given, so a batch-aware `g` gets the
    whole batch.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> p, x = net.init(jax.random.key(0)), jax.numpy.ones(3)
    >>> jprop.R(net)(p, x, x).shape
    (2,)
    """
    where = "jprop.R"
    _resolve_method(g, method, where)

    @jax.jit
    def compute(params, x, r):
        return jax.jvp(lambda x: g(params, x), (x,), (r,))[1]

    def r_fn(params: Any, x: jax.Array, r: jax.Array) -> Any:
        x = check_input(x, where, g.n_inputs if isinstance(g, MLP) else None)
        r = check_like(r, "r", x.shape, where, " `r` is a direction in input space, shaped like x.")
        if r.dtype != x.dtype:
            raise TypeError(f"{where}: `r` must have the dtype of `x` ({x.dtype}); got {r.dtype}.")
        return compute(params, x, r)

    return r_fn
