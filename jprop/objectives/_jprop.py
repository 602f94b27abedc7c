"""J-prop (Flake & Pearlmutter 1999): exact weight-gradients of functions of the input Jacobian.

Every objective reduces to the bilinear primitive (docs/math.md §3): for fixed g ∈ ℝ^m and r ∈ ℝ^n,

    ∇_w (gᵀ J r) = R_r{∇_w (gᵀ f)},

computed for a `jprop.MLP` by the paper's four passes (`models/_passes.py`), for a `jprop.Network` from
its layers' tangent steps under `jax.value_and_grad`, and for any other `f` by `jax.jvp`/`jax.vjp`
compositions under `jax.value_and_grad`. Holding the residual fixed turns
E_u = ½‖uᵀJ − a‖² into the primitive with (g, r) = (u, Jᵀu − a), and E_v = ½‖Jv − b‖² into (Jv − b, v).

Over a batch x of shape (B, n), with every per-example argument batched alike, values and gradients
are batch means.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._batch import mean_over_batch
from .._dispatch import REGISTRY, choose, computed_as
from .._program import broadcasting, cached, program
from .._validation import (
    as_float_array,
    check_extra,
    check_not_empty,
    in_dtype,
    optional_size,
    prepare_call,
    vector_output,
)
from ..layers import Network
from ..models._mlp import MLP

Result = tuple[jax.Array, Any]


# ----------------------------------------------------------------------------------------------
# The loss engine: a batch-mean scalar whose derivative rule runs the passes.


def _leaves(tree):
    return jax.tree.leaves(tree, is_leaf=lambda t: isinstance(t, SymbolicZero))


def _is_zero(tangent) -> bool:
    return all(isinstance(t, SymbolicZero) for t in _leaves(tangent))


def mean_loss(
    value_sums: Callable[..., jax.Array],
    rule_sums: Callable[..., Result],
    batch_size: int | None,
) -> Callable[..., jax.Array]:
    """A batch-mean loss `(params, x (B, n), *args (B, ·), *shared) -> scalar` whose derivative is
    hand-made.

    `value_sums(params, x, *args, *shared)` gives Σ over the examples it is handed;
    `rule_sums(...)` gives (that sum, Σ of its weight gradients) — the passes on the closed road.
    `shared` arguments are scalars common to every chunk; their count is what `args` leaves over.

    The loss is a `jax.custom_jvp` whose tangent is ⟨∇_w E, dw⟩ with ∇_w E from `rule_sums`. Reverse
    mode transposes that inner product, so `jax.grad` returns exactly the passes' gradient and
    never differentiates through them; forward mode (`jax.jvp`, `jax.jacfwd`, `jax.hessian` as
    jacfwd of jacrev) works because the passes are plain `jnp` code that JAX can push tangents
    through. Tangents of the data (x, targets) take `jax.jvp` of the value. With `batch_size`, both
    run over chunks under a `jax.lax.scan` with running sums (bounded memory).
    """

    def split(args, x):
        per_example = [a for a in args if jnp.ndim(a) and a.shape[0] == x.shape[0]]
        return per_example, list(args[len(per_example) :])

    def mean_value(params, x, *args):
        per_example, shared = split(args, x)
        return mean_over_batch(
            lambda *chunk: value_sums(params, *chunk, *shared),
            x,
            *per_example,
            batch_size=batch_size,
        )

    @jax.custom_jvp
    def loss(params, x, *args):
        return mean_value(params, x, *args)

    def rule(primals, tangents):
        params, x, *args = primals
        dparams, *ddata = tangents
        per_example, shared = split(args, x)
        value, grads = mean_over_batch(
            lambda *chunk: rule_sums(params, *chunk, *shared),
            x,
            *per_example,
            batch_size=batch_size,
        )
        value = jnp.asarray(value)
        tangent = jnp.zeros_like(value)
        for g, d in zip(_leaves(grads), _leaves(dparams)):
            if not isinstance(d, SymbolicZero):
                tangent = tangent + jnp.vdot(g, d).astype(value.dtype)
        if not _is_zero(ddata):  # a derivative in the data: the value's own jvp
            data = (x, *args)
            filled = [
                jnp.zeros_like(a) if isinstance(d, SymbolicZero) else d for a, d in zip(data, ddata)
            ]
            tangent = tangent + jax.jvp(
                lambda *data: mean_value(params, *data), tuple(data), tuple(filled)
            )[1].astype(value.dtype)
        return value, tangent

    loss.defjvp(broadcasting(rule), symbolic_zeros=True)
    return loss


def _in_computation_dtype(closed: Callable, net: MLP) -> Callable[..., Result]:
    """The closed passes with params in x's dtype (the promoted one), so every product runs at
    that precision; the gradients come back in the params' own dtypes, as `jax.grad` gives them."""

    def rule_sums(params, x, *args):
        value, grads = closed(net, in_dtype(params, x.dtype), x, *args)
        return value, jax.tree.map(lambda g, p: g.astype(jnp.result_type(p)), grads, params)

    return rule_sums


def autodiff_rule(value_sums: Callable[..., jax.Array]) -> Callable[..., Result]:
    return lambda params, *data: jax.value_and_grad(value_sums)(params, *data)


@cached
def _objective(quantity: str, f: Any, method: str, batch_size: Any) -> Callable[..., jax.Array]:
    """Build `(params, x, *arguments, *scalars) -> batch-mean loss` for a primitive objective,
    from its record (`_dispatch.py`; the roads themselves are in `_roads.py`).

    `arguments` pair a name with the space it lives in ("m": output, "n": input); each must have
    x's batch axes in front. `x` may be (n,) or (..., n); leading axes are flattened to one batch.
    """
    where = f"jprop.{quantity}"
    record = REGISTRY[quantity]
    arguments, scalars = record.arguments, record.scalars
    road = choose(f, quantity, method, where).road
    batch_size = optional_size(batch_size, "batch_size", where)
    value_sums = _sum_of(record.autodiff, vector_output(f))
    computing = computed_as(f, road)
    if road == "closed" and isinstance(computing, Network):  # each layer's tangent step (layers/)
        value_sums = functools.partial(record.layers, computing)
        rule_sums = autodiff_rule(value_sums)
    elif road == "closed":
        rule_sums = _in_computation_dtype(record.closed, computing)
    else:
        rule_sums = autodiff_rule(value_sums)
    loss = mean_loss(value_sums, rule_sums, batch_size)
    names = tuple(name for name, _ in arguments) + scalars

    def validate(params, x, args):
        x, out, given = prepare_call(f, params, x, where)
        if len(out.shape) > 1:
            raise TypeError(
                f"{where}: f(params, x) must return a vector of shape (m,) or a scalar for x of "
                f"shape (n,); it returned shape {out.shape}."
            )
        lead = x.shape[:-1]
        check_not_empty(lead, where)
        sizes = {"m": out.shape[0] if out.shape else 1, "n": x.shape[-1]}
        arrays = []
        for (name, space), value in zip(arguments, args):
            # An output-space argument of a scalar f has no output axis, like f's value.
            axis = () if space == "m" and not out.shape else (sizes[space],)
            hint = (
                f" `{name}` lives in the {'output' if space == 'm' else 'input'} space "
                f"({space} = {sizes[space]}{'; f is scalar, so no output axis' if not axis else ''}),"
                f" with x's batch axes {lead} in front."
            )
            value = check_extra(value, name, lead + axis, given, x.dtype, where, hint)
            arrays.append(value.reshape(-1, sizes[space]))
        shared = []
        for name, value in zip(scalars, args[len(arguments) :]):
            value = as_float_array(value, name, where)
            if value.ndim:
                raise ValueError(f"{where}: `{name}` must be a scalar; got shape {value.shape}.")
            shared.append(value.astype(x.dtype))
        return x.reshape(-1, sizes["n"]), arrays, shared

    def compute(params, x, *args):
        x, arrays, shared = validate(params, x, args)
        return loss(params, x, *arrays, *shared)

    return program(
        where, compute, lambda params, x, *args: validate(params, x, args), ("params", "x", *names)
    )


def _sum_of(per_example: Callable, f: Any) -> Callable[..., jax.Array]:
    """Σ over a batch of `per_example(f, params, x_i, *args_i, *shared)`."""

    def sums(params, x, *args):
        batched = [a for a in args if jnp.ndim(a)]
        shared = list(args[len(batched) :])
        one = lambda xi, *ai: per_example(f, params, xi, *ai, *shared)  # noqa: E731
        return jnp.sum(jax.vmap(one)(x, *batched))

    return sums


def bilinear(f: Any, *, method: str = "auto", batch_size: int | None = None) -> Callable[..., Any]:
    r"""The bilinear primitive $g^\top J r$ as a loss, with g and r held fixed by its gradient.

    Every J-prop objective reduces to this (docs/math.md §3): $\nabla_w(g^\top J r)$ is what the passes
    compute. It is also the gradient of a spectral norm (top singular pair held fixed) and of
    log|det J| ($u_i = J^{-\top} e_i$ held fixed).

    **Arguments:** `f`: a `jprop.MLP` (four passes) or any `f(params, x)` (autodiff);
    `method`: "auto", "closed" or "autodiff" (`jprop.road(f, "bilinear")` says which runs);
    `batch_size`: run the batch in chunks of this many examples (`jax.lax.scan`) with running
    sums, so memory is bounded by one chunk.

    **Returns:** a loss `(params, x, g, r) -> value`, `x` and `r` of shape `(n,)` or `(B, n)`, `g`
    of shape `(m,)` or `(B, m)`; `value` a scalar, the batch mean. `jax.grad` of it (or of any sum
    it is part of) runs the passes; `jax.value_and_grad` gives the pair.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 8, 2)); p = net.init(jax.random.key(0))
        >>> grads = jax.grad(jprop.bilinear(net))(p, jnp.ones(3), jnp.ones(2), jnp.ones(3))
        >>> first_layer = grads[0]
        >>> first_layer["W"].shape
        (8, 3)
    """
    return _objective("bilinear", f, method, batch_size)


def jprop_u(f: Any, *, method: str = "auto", batch_size: int | None = None) -> Callable[..., Any]:
    r"""$E_u = \tfrac12\|u^\top J - a\|^2$ as a loss whose gradient is J-prop's.

    Closed road (a `jprop.MLP`): `jax.grad` runs forward, backward with u (gives $J^\top u$),
    R-forward along $\rho = J^\top u - a$, R-backward — about twice the cost of a plain gradient.

    **Arguments:** `f`, `method`, `batch_size` as for `jprop.bilinear`.

    **Returns:** a loss `(params, x, u, a) -> E_u`; `x` and `a` of shape `(n,)` or `(B, n)`, `u` of
    shape `(m,)` or `(B, m)`. With a batch, `E_u` is the batch mean.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 8, 2)); p = net.init(jax.random.key(0))
        >>> x, u, a = jnp.ones((5, 3)), jnp.ones((5, 2)), jnp.zeros((5, 3))
        >>> E, grads = jax.value_and_grad(jprop.jprop_u(net))(p, x, u, a)
        >>> output_layer = grads[1]
        >>> E.shape, output_layer["b"].shape
        ((), (2,))
    """
    return _objective("jprop_u", f, method, batch_size)


def jprop_v(f: Any, *, method: str = "auto", batch_size: int | None = None) -> Callable[..., Any]:
    r"""$E_v = \tfrac12\|J v - b\|^2$ as a loss whose gradient is J-prop's.

    Closed road (`method="closed"`): `jax.grad` runs forward, R-forward along v (gives $Jv$),
    backward with $e = Jv - b$, R-backward — about twice the cost of a plain gradient. `"auto"`
    takes the autodiff road (`jax.grad` of the jvp), which compiles to the same products.

    **Arguments:** `f`, `method`, `batch_size` as for `jprop.bilinear`.

    **Returns:** a loss `(params, x, v, b) -> E_v`; `x` and `v` of shape `(n,)` or `(B, n)`, `b` of
    shape `(m,)` or `(B, m)`. With a batch, `E_v` is the batch mean.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((1, 10, 1)); p = net.init(jax.random.key(0))
        >>> x, v, b = jnp.zeros((4, 1)), jnp.ones((4, 1)), jnp.ones((4, 1))
        >>> grads = jax.grad(jprop.jprop_v(net, method="closed"))(p, x, v, b)
        >>> output_layer = grads[1]
        >>> float(output_layer["b"].sum())  # no derivative depends on the output bias
        0.0
    """
    return _objective("jprop_v", f, method, batch_size)


def double_backprop(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Any]:
    r"""Double Backpropagation (Drucker & LeCun 1992): $E_0 + \lambda\,\tfrac12\|\partial E_0/\partial x\|^2$.

    With $E_0 = \tfrac12\|f(x) - t\|^2$, $\partial E_0/\partial x = J^\top (y - t)$: the penalty is
    $E_u$ with $u = y - t$, $a = 0$; because u depends on the weights, the closed road's R-backward
    pass starts from the output injection $J\rho$ (docs/math.md §3, trap 2).

    **Returns:** a loss `(params, x, t, lam) -> E`, `t` of shape `(m,)` or `(B, m)`, `lam` a
    scalar; the batch mean.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 8, 1)); p = net.init(jax.random.key(0))
        >>> E = jprop.double_backprop(net)(p, jnp.ones((3, 2)), jnp.zeros((3, 1)), 0.1)
        >>> E.shape
        ()
    """
    return _objective("double_backprop", f, method, batch_size)
