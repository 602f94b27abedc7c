"""Regularisers built on the J-prop objectives (`_jprop.py`): Tangent Prop, Sobolev training
(derivative targets) and the Jacobian penalty, each a batch-mean loss under one `jax.jit` whose
gradient is the J-prop passes'.

Each reduces to `jprop_v` or `jprop_u` over (example, direction) pairs: the tangents, the columns
or rows of J, or random probes; the pairs' batch mean times their count per example is the
per-example sum the regulariser asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._dispatch import check_model
from .._program import cached, program
from .._validation import (
    as_float_scalar,
    check_batch_objective,
    check_size,
    optional_size,
    vector_output,
)
from ._jprop import autodiff_rule, jprop_u, jprop_v, mean_loss


def _repeat(x: jax.Array, count: int) -> jax.Array:
    """(B, n) -> (B·count, n): each example repeated `count` times in a row."""
    return jnp.repeat(x, count, axis=0)


def _jacobian_fit(by_columns, by_rows, params, x, targets) -> jax.Array:
    """½‖J − T‖²_F per example, batch mean, by whichever of J's columns or rows is fewer:
    Σ_i ½‖J e_i − T_{:,i}‖² (E_v with v = e_i) or Σ_k ½‖e_kᵀJ − T_{k,:}‖² (E_u with u = e_k), as
    one objective over the B·count (example, column or row) pairs. x (B, n), targets (B, m, n)."""
    batch, m, n = targets.shape
    if m < n:
        units = jnp.tile(jnp.eye(m, dtype=x.dtype), (batch, 1))
        return m * by_rows(params, _repeat(x, m), units, targets.reshape(batch * m, n))
    units = jnp.tile(jnp.eye(n, dtype=x.dtype), (batch, 1))
    columns = jnp.swapaxes(targets, 1, 2).reshape(batch * n, m)
    return n * by_columns(params, _repeat(x, n), units, columns)


def _composite(where: str, validate: Callable, body: Callable) -> Callable[..., jax.Array]:
    """A composite objective under one `jax.jit`: validation when traced, then `body`."""

    def compute(params, x, *args):
        return body(params, *validate(params, x, *args))

    return program(where, compute, validate)


def tangent_prop(f: Any, *, method: str = "auto", batch_size: int | None = None):
    r"""Tangent Prop (Simard et al. 1992): $\sum_p \tfrac12\|J \tau_p - b_p\|^2$ over tangent vectors.

    $\tau_p$ is the tangent of a transformation of the input (a small rotation, a shift), $b_p$ the
    desired directional derivative — zero for invariance. One `jprop_v` over all (example, tangent)
    pairs.

    **Arguments:** `f`, `method` as for `jprop.bilinear`; `batch_size` chunks the B·P pairs.

    **Returns:** a loss `(params, x, tangents, targets=None) -> E` with `x` of shape `(B, n)`,
    `tangents` of shape `(B, P, n)` and `targets` `(B, P, m)` (default zeros); the batch mean.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 8, 1)); p = net.init(jax.random.key(0))
        >>> jprop.tangent_prop(net)(p, jnp.ones((3, 2)), jnp.ones((3, 4, 2))).shape
        ()
    """
    return _build_tangent_prop(f, method, batch_size)


@cached
def _build_tangent_prop(f: Any, method: str, batch_size: Any):
    where = "jprop.tangent_prop"
    check_model(f, where)
    batch_size = optional_size(batch_size, "batch_size", where)
    inner = jprop_v(vector_output(f), method=method, batch_size=batch_size)

    def validate(params, x, tangents, targets=None):
        x, m, a = check_batch_objective(
            f,
            params,
            x,
            where,
            tangents=(tangents, ("B", "P", "n")),
            **({} if targets is None else {"targets": (targets, ("B", "P", "m"))}),
        )
        tangents = a["tangents"]
        targets = a.get("targets", jnp.zeros(tangents.shape[:2] + (m,), x.dtype))
        return x, tangents, targets

    def body(params, x, tangents, targets):
        batch, count, n = tangents.shape
        pairs = (_repeat(x, count), tangents.reshape(-1, n), targets.reshape(batch * count, -1))
        return count * inner(params, *pairs)  # the mean over B·P pairs, times P

    return _composite(where, validate, body)


def derivative_targets(
    f: Any, *, method: str = "auto", value_weight: float = 1.0, batch_size: int | None = None
):
    r"""Sobolev training: $w_0\,\tfrac12\|f(x) - y\|^2 + \tfrac12\|J(x) - T\|_F^2$ per example.

    The Jacobian term is one J-prop objective over whichever is fewer: the n columns ($E_v$ with
    $v = e_i$, $b = T_{:,i}$) or the m rows ($E_u$ with $u = e_k$, $a = T_{k,:}$).

    **Returns:** a loss `(params, x, y, T) -> E`, `x` `(B, n)`, `y` `(B, m)`, `T` `(B, m, n)`; the
    batch mean. Pass `value_weight=0` to fit derivatives alone (docs/math.md §5). `batch_size` runs
    every term over chunks of that many examples (bounded memory).

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((1, 8, 1)); p = net.init(jax.random.key(0))
        >>> x = jnp.linspace(-1, 1, 5)[:, None]
        >>> jprop.derivative_targets(net)(p, x, jnp.sin(x), jnp.cos(x)[:, :, None]).shape
        ()
    """
    return _build_derivative_targets(f, method, value_weight, batch_size)


@cached
def _build_derivative_targets(f: Any, method: str, value_weight: Any, batch_size: Any):
    where = "jprop.derivative_targets"
    check_model(f, where)
    batch_size = optional_size(batch_size, "batch_size", where)
    value_weight = as_float_scalar(value_weight, "value_weight", where)
    by_columns = jprop_v(vector_output(f), method=method, batch_size=batch_size)
    by_rows = jprop_u(vector_output(f), method=method, batch_size=batch_size)
    values = _squared_error(vector_output(f), batch_size)

    def validate(params, x, y, T):
        x, _, a = check_batch_objective(
            f, params, x, where, y=(y, ("B", "m")), T=(T, ("B", "m", "n"))
        )
        return x, a["y"], a["T"]

    def body(params, x, y, T):
        fit = _jacobian_fit(by_columns, by_rows, params, x, T)
        return value_weight.astype(fit.dtype) * values(params, x, y) + fit

    return _composite(where, validate, body)


def _squared_error(f: Any, batch_size: int | None) -> Callable[..., jax.Array]:
    """The batch mean of ½‖f(params, x_b) − y_b‖², f called per example, chunked under a scan."""

    def sums(params, x, y):
        return jnp.sum(jax.vmap(lambda xi, yi: 0.5 * jnp.sum((f(params, xi) - yi) ** 2))(x, y))

    return mean_loss(sums, autodiff_rule(sums), batch_size)


def jacobian_penalty(
    f: Any, *, method: str = "auto", num_probes: int | None = None, batch_size: int | None = None
):
    r"""The Frobenius penalty $\tfrac12\|J\|_F^2$ (contractive auto-encoders, Jacobian regularisation).

    Exact with `num_probes=None`: $\tfrac12\sum_i\|J e_i\|^2$ over the fewer of J's columns or rows.
    With `num_probes=k`: the unbiased estimate $\tfrac1k\sum_p \tfrac12\|J v_p\|^2$,
    $v_p \sim N(0, I)$ (Hutchinson; Hoffman et al. 2019), which then needs a `key`: the probes
    are `jax.random.normal(key, (B * k, n))`, example i taking rows i·k to i·k + k − 1, so a key
    gives the same estimate every time. `batch_size` chunks the examples (and probes) for bounded
    memory.

    **Returns:** a loss `(params, x, key=None) -> penalty`; `x` `(B, n)`; the batch mean.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 8, 2)); p = net.init(jax.random.key(0))
        >>> exact = jprop.jacobian_penalty(net)(p, jnp.ones((4, 3)))
        >>> bool(jnp.isclose(exact, 0.5 * jnp.sum(jprop.jacobian(net)(p, jnp.ones(3)) ** 2)))
        True
    """
    return _build_jacobian_penalty(f, method, num_probes, batch_size)


@cached
def _build_jacobian_penalty(f: Any, method: str, num_probes: Any, batch_size: Any):
    where = "jprop.jacobian_penalty"
    check_model(f, where)
    batch_size = optional_size(batch_size, "batch_size", where)
    if num_probes is not None:
        num_probes = check_size(num_probes, "num_probes", where)
    by_columns = jprop_v(vector_output(f), method=method, batch_size=batch_size)
    by_rows = jprop_u(vector_output(f), method=method, batch_size=batch_size)

    def validate(params, x, key=None):
        x, m, _ = check_batch_objective(f, params, x, where)
        if num_probes is not None and key is None:
            raise ValueError(
                f"{where}: num_probes={num_probes} draws random probes and needs `key`."
            )
        return (x, m) if num_probes is None else (x, m, key)

    def body(params, x, m, key=None):
        batch, n = x.shape
        if num_probes is None:  # ½‖J‖²_F is the fit to a zero target Jacobian
            return _jacobian_fit(by_columns, by_rows, params, x, jnp.zeros((batch, m, n), x.dtype))
        probes = jax.random.normal(key, (batch * num_probes, n), x.dtype)
        zeros = jnp.zeros((batch * num_probes, m), x.dtype)
        return by_columns(params, _repeat(x, num_probes), probes, zeros)

    return _composite(where, validate, body)
