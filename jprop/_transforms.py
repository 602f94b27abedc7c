"""Derivatives with respect to the input: Jacobian, Hessian, Laplacian, Hessian diagonal, input-space
Hessian-vector product, and the R-operator.

Each transform takes `f(params, x)` and returns a function of `(params, x, ...)`, in the manner of
`jax.jacobian`. Two roads lead to every quantity (DESIGN.md principle 2): the generic autodiff road,
built from `jax.jvp`/`jax.vjp` compositions, which works for any `f`; and the closed-form road for a
`jprop.MLP` (`_closed.py`, built on the four passes of `_passes.py`). `method="auto"` picks the
closed form when it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from . import _closed
from ._batch import map_batches, map_examples
from ._dispatch import all_arrays, cached, choose, count_trace
from ._forward_laplacian import second_order, supports
from ._mlp import MLP
from ._validation import check_input, check_like, check_same_dtype, optional_size, prepare_call

Function = Callable[[Any, jax.Array], jax.Array]

# Quantities whose closed form is the forward Laplacian with its hand-written tangent pass
# (`_forward_laplacian.py`). `benchmarks/pinn_step.py` measured the same pass for the Hessian
# diagonal (a per-input λ) at 0.37-0.9× autodiff of the sum-over-units diagonal, which therefore
# keeps its closed form and JAX's derivative of it.
_TRAINED_THROUGH = ("laplacian",)


_EXTRA_HINTS = {
    "g": " `g` weights the outputs: shape (m,), with x's batch axes in front.",
    "r": " `r` is a direction in input space, shaped like x.",
}


def _validate(f: Any, params: Any, x: Any, others: tuple, extra: tuple[str, ...], where: str):
    """Check params, x and the extra arguments; return x and the checked extras (trace time)."""
    x, out = prepare_call(f, params, x, where)
    checked = []
    for name, value in zip(extra, others):
        shape = x.shape[:-1] + (out.shape if name == "g" else x.shape[-1:])
        value = check_like(value, name, shape, where, _EXTRA_HINTS[name])
        check_same_dtype(value, name, x, where)
        checked.append(value)
    return x, tuple(checked)


@cached
def _input_transform(
    quantity: str, f: Any, method: str, batch_size: Any, extra: tuple[str, ...] = ()
) -> Callable[..., jax.Array]:
    """Build `(params, x, *extra) -> result` by mapping a per-example rule over x's leading axes.

    On the closed road `_closed.<quantity>(net, params, x (B, n), *extra (B, ·))` computes a whole
    batch; on the autodiff road `_autodiff_<quantity>(f, params, x_i, *extra_i)` one example.
    `extra` names per-example arguments: "g" (shaped like the output) and "r" (like x).
    Validation runs when the program is traced, so an eager call costs one dispatch of the
    compiled program; the builder is cached, so rebuilding the transform reuses that program.
    """
    where = f"jprop.{quantity}"
    road = choose(f, quantity, method, where).road
    batch_size = optional_size(batch_size, "batch_size", where)
    closed, autodiff = getattr(_closed, quantity), _AUTODIFF[quantity]
    if road == "closed" and quantity in _TRAINED_THROUGH and supports(f):
        # The forward Laplacian, differentiated by its hand-written tangent pass.
        fast = second_order(f, None, quantity == "hessian_diagonal")
        closed = lambda net, params, x: fast(params, x)  # noqa: E731

    def plain(params, x, *others):
        if road == "closed":
            batch = lambda *args: closed(f, params, *args)  # noqa: E731
            return map_batches(batch, x, *others, batch_size=batch_size)
        one = lambda xi, *oi: autodiff(f, params, xi, *oi)  # noqa: E731
        return map_examples(one, x, *others, batch_size=batch_size)

    @jax.jit
    def compute(params, x, *others):
        count_trace(quantity)
        x, others = _validate(f, params, x, others, extra, where)
        return _vmap_is_the_batch(plain)(params, x, *others)

    def transformed(params: Any, x: jax.Array, *others: jax.Array) -> jax.Array:
        if len(others) != len(extra):
            expected = ", ".join(("params", "x") + extra)
            raise TypeError(f"{where}: expected arguments ({expected}); got {2 + len(others)}.")
        if not all_arrays(params, x, others):  # jit would refuse these with its own words
            _validate(f, params, x, others, extra, where)
        return compute(params, x, *others)

    return transformed


def _vmap_is_the_batch(plain: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`plain(params, x (..., n), *others)` with a batching rule: under a user's `jax.vmap` over
    x (and the per-example arguments) the mapped axis joins x's leading axes, so the closed form
    runs on the whole batch at once instead of being vectorised example by example (measured
    2.1-2.6× slower for the Hessian and the Laplacian). Mapped parameters (an ensemble) are
    vectorised as usual.

    `jax.custom_batching.custom_vmap` has no reverse mode, so it sits under a `jax.custom_jvp`
    whose rule is `plain`'s own derivative (the hand-written rules where `plain` has them)."""

    @jax.custom_batching.custom_vmap
    def batched(params, x, *others):
        return plain(params, x, *others)

    @batched.def_vmap
    def _rule(axis_size, in_batched, params, x, *others):
        params_batched, x_batched, *others_batched = in_batched
        if any(jax.tree.leaves(params_batched)):
            axes = (
                jax.tree.map(lambda b: 0 if b else None, params_batched),
                0 if x_batched else None,
                *(0 if b else None for b in others_batched),
            )
            return jax.vmap(plain, in_axes=axes)(params, x, *others), True
        count_trace("vmap joins the batch")
        # The mapped axis is in front of every batched argument: broadcast the others to it.
        x = x if x_batched else jnp.broadcast_to(x, (axis_size, *x.shape))
        others = [
            o if b else jnp.broadcast_to(o, (axis_size, *o.shape))
            for o, b in zip(others, others_batched)
        ]
        return plain(params, x, *others), True

    @jax.custom_jvp
    def differentiable(params, x, *others):
        return batched(params, x, *others)

    @differentiable.defjvp
    def _jvp(primals, tangents):
        return jax.jvp(plain, primals, tangents)

    return differentiable


def _autodiff_jacobian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    # Forward mode costs n JVPs, reverse mode m VJPs: take the cheaper (MATH.md §2).
    g = lambda x: f(params, x)  # noqa: E731
    return (jax.jacfwd if x.shape[-1] < jax.eval_shape(g, x).size else jax.jacrev)(g)(x)


def _autodiff_hessian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jax.hessian(lambda x: f(params, x))(x)


def _autodiff_laplacian(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jnp.trace(_autodiff_hessian(f, params, x), axis1=-2, axis2=-1)


def _autodiff_hessian_diagonal(f: Function, params: Any, x: jax.Array) -> jax.Array:
    return jnp.diagonal(_autodiff_hessian(f, params, x), axis1=-2, axis2=-1)


def _autodiff_hvp(f: Function, params: Any, x: jax.Array, g: jax.Array, r: jax.Array) -> jax.Array:
    # Forward over reverse: R_r{∇_x(gᵀf)} (MATH.md §7.6).
    grad = jax.grad(lambda x: jnp.sum(g * f(params, x)))
    return jax.jvp(grad, (x,), (r,))[1]


_AUTODIFF = {
    "jacobian": _autodiff_jacobian,
    "hessian": _autodiff_hessian,
    "laplacian": _autodiff_laplacian,
    "hessian_diagonal": _autodiff_hessian_diagonal,
    "hessian_vector_product": _autodiff_hvp,
}


def jacobian(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Jacobian of `f` with respect to its input, $J_{kj} = \partial f_k / \partial x_j$.

    **Arguments:**
    - `f`: a `jprop.MLP` or any function `f(params, x)` taking `x` of shape `(n,)`.
    - `method`: `"auto"` (the autodiff road: measured as fast or faster than the closed form,
      which `"closed"` forces), `"closed"` or `"autodiff"`.
    - `batch_size`: map over the batch in chunks of this many examples (`jax.lax.map`) to bound
      memory; `None` (default) maps the whole batch at once with `jax.vmap`.

    **Returns:** a function `(params, x) -> J`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `J` has shape `(m, n)`; `x` of shape `(..., n)` gives `(..., m, n)`. Both roads propagate
    forwards when `n < m` and backwards otherwise (Bishop §8.1.5).

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.jacobian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2, 3)
    """
    return _input_transform("jacobian", f, method, batch_size)


def hessian(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The input Hessian of every output, $H_{kij} = \partial^2 f_k/\partial x_i \partial x_j$.

    For a `jprop.MLP`, the sum over hidden units (MATH.md §4); otherwise `jax.hessian`.

    **Arguments:** as for `jprop.jacobian`, except that `method="auto"` takes the closed form for a
    `jprop.MLP` unless it has more than half as many inputs as first-layer units (then
    `jax.hessian`, measured faster there).

    **Returns:** a function `(params, x) -> H`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `H` has shape `(m, n, n)`, symmetric in its last two axes; `x` of shape `(..., n)` gives
    `(..., m, n, n)`.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.hessian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2, 3, 3)
    """
    return _input_transform("hessian", f, method, batch_size)


def laplacian(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Laplacian of every output, $\Delta f_k = \sum_i \partial^2 f_k / \partial x_i^2$.

    For a `jprop.MLP` it never forms an $n \times n$ matrix (MATH.md §4).

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x) -> L`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `L` has shape `(m,)`; `x` of shape `(..., n)` gives `(..., m)`.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.laplacian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2,)
    """
    return _input_transform("laplacian", f, method, batch_size)


def hessian_diagonal(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The diagonal of every output's input Hessian, $D_{ki} = \partial^2 f_k / \partial x_i^2$.

    For a `jprop.MLP` it never forms an $n \times n$ matrix (MATH.md §4).

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x) -> D`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `D` has shape `(m, n)`; `x` of shape `(..., n)` gives `(..., m, n)`.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> jprop.hessian_diagonal(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
    (2, 3)
    """
    return _input_transform("hessian_diagonal", f, method, batch_size)


def hessian_vector_product(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    r"""The input-space Hessian-vector product $v = \sum_k g_k \nabla^2_x f_k\, r$.

    For a `jprop.MLP` this is the by-product of J-prop's R-backward pass (MATH.md §3): forward,
    backward with output weighting `g`, R-forward along `r`, R-backward; about two gradients' cost
    and no $n \times n$ matrix. Otherwise forward-over-reverse autodiff.

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x, g, r) -> v` with `g` of shape `(m,)`, `r` and `v` of shape
    `(n,)`; with batch axes, `x`, `r`, `v` of shape `(..., n)` and `g` of shape `(..., m)`.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> p = net.init(jax.random.key(0))
    >>> jprop.hessian_vector_product(net)(p, jnp.ones(3), jnp.ones(2), jnp.ones(3)).shape
    (3,)
    """
    return _input_transform("hessian_vector_product", f, method, batch_size, extra=("g", "r"))


def R(g: Callable[[Any, jax.Array], Any], *, method: str = "auto") -> Callable[..., Any]:
    r"""The input-space R-operator, $\mathcal{R}_r\{g\} = \partial_\varepsilon g(w, x + \varepsilon r)|_{\varepsilon=0}$.

    Perturbs the *input* and holds the weights (Flake & Pearlmutter 1999; MATH.md §3). For a network
    output, $\mathcal{R}_r\{f\} = J r$.

    **Arguments:**
    - `g`: any function `g(params, x)`; its output may be any pytree of arrays.
    - `method`: `"auto"`, `"closed"` (the R-forward pass; `g` must be a `jprop.MLP`) or
      `"autodiff"` (`jax.jvp`).

    **Returns:** a function `(params, x, r)`, with `r` of the same shape and dtype as `x`, returning
    a pytree shaped like `g(params, x)`. `g` sees `x` exactly as given, so a batch-aware `g` gets
    the whole batch.

    >>> import jax, jprop
    >>> net = jprop.MLP((3, 8, 2))
    >>> p, x = net.init(jax.random.key(0)), jax.numpy.ones(3)
    >>> jprop.R(net)(p, x, x).shape
    (2,)
    """
    return _r_operator(g, method)


@cached
def _r_operator(g: Any, method: str) -> Callable[..., Any]:
    where = "jprop.R"
    road = choose(g, "R", method, where).road

    def validate(params, x, r):
        if isinstance(g, MLP):
            g.check_params(params, where)
        x = check_input(x, where, g.n_inputs if isinstance(g, MLP) else None)
        r = check_like(r, "r", x.shape, where, _EXTRA_HINTS["r"])
        check_same_dtype(r, "r", x, where)
        return x, r

    @jax.jit
    def compute(params, x, r):
        count_trace("R")
        x, r = validate(params, x, r)
        if road == "closed":  # the R-forward pass; it takes any leading batch axes as they are
            return _closed.jacobian_vector_product(g, params, x, r)
        return jax.jvp(lambda x: g(params, x), (x,), (r,))[1]

    def r_fn(params: Any, x: jax.Array, r: jax.Array) -> Any:
        if not all_arrays(params, x, r):
            validate(params, x, r)
        return compute(params, x, r)

    return r_fn
