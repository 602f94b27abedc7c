"""J-prop (Flake & Pearlmutter 1999): exact weight-gradients of functions of the input Jacobian.

Every objective reduces to the bilinear primitive (MATH.md §3): for fixed g ∈ ℝ^m and r ∈ ℝ^n,

    ∇_w (gᵀ J r) = R_r{∇_w (gᵀ f)},

computed for a `jprop.MLP` by the paper's four passes (`_passes.py`) and, for any other `f`, by
`jax.jvp`/`jax.vjp` compositions under `jax.value_and_grad`. Holding the residual fixed turns
E_u = ½‖uᵀJ − a‖² into the primitive with (g, r) = (u, Jᵀu − a), and E_v = ½‖Jv − b‖² into (Jv − b, v).

Over a batch x of shape (B, n), with every per-example argument batched alike, values and gradients
are batch means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ._batch import sum_batches
from ._mlp import MLP, Params
from ._passes import backward, forward, r_backward, r_forward
from ._transforms import _prepare, _resolve_method
from ._validation import check_like, check_size, optional_size

Result = tuple[jax.Array, Any]


# ----------------------------------------------------------------------------------------------
# Closed road: the four passes. All arrays carry a leading batch axis (B, ·).


def _weight_gradients(params: Params, fwd, gzs, rgzs, rys) -> Params:
    """∂/∂W^l = rgz^lᵀ y^{l-1} + gz^lᵀ ry^{l-1}, ∂/∂b^l = Σ rgz^l, summed over the batch (eq. 23)."""
    grads = []
    for l, (gz, rgz, layer) in enumerate(zip(gzs, rgzs, params)):  # noqa: E741
        # None marks an exact zero: rgz above the curved layers, ry^0 in a weight direction alone.
        terms = [
            a.T @ b for a, b in ((rgz, fwd.ys[l]), (gz, rys[l])) if a is not None and b is not None
        ]
        w = sum(terms[1:], terms[0]) if terms else jnp.zeros_like(layer["W"])
        b = jnp.zeros_like(layer["b"]) if rgz is None else jnp.sum(rgz, axis=0)
        grads.append({"W": w, "b": b})
    return grads


def _closed_bilinear(net: MLP, params: Params, x, g, r) -> Result:
    # forward; backward with g; R-forward along r; R-backward.
    fwd = forward(net, params, x)
    (gys, gzs), _ = backward(net, params, fwd, g, to_input=False)
    rys, rzs = r_forward(net, params, fwd, r)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    value = jnp.sum(g * rys[-1])
    return value, _weight_gradients(params, fwd, gzs, rgzs, rys)


def _closed_jprop_v(net: MLP, params: Params, x, v, b) -> Result:
    # MATH.md §3 table: forward; R-forward with r = v (gives Jv); backward with e = Jv − b;
    # R-backward. Trap 1: the primal backward pass with e must run, or the s2 path is lost.
    fwd = forward(net, params, x)
    rys, rzs = r_forward(net, params, fwd, v)
    e = rys[-1] - b
    (gys, gzs), _ = backward(net, params, fwd, e, to_input=False)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    return 0.5 * jnp.sum(e * e), _weight_gradients(params, fwd, gzs, rgzs, rys)


def _closed_jprop_u(net: MLP, params: Params, x, u, a) -> Result:
    # Forward; backward with u (gives Jᵀu at the input); R-forward with ρ = Jᵀu − a; R-backward.
    fwd = forward(net, params, x)
    (gys, gzs), jtu = backward(net, params, fwd, u)
    rho = jtu - a
    rys, rzs = r_forward(net, params, fwd, rho)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    return 0.5 * jnp.sum(rho * rho), _weight_gradients(params, fwd, gzs, rgzs, rys)


def _closed_double_backprop(net: MLP, params: Params, x, t, lam) -> Result:
    # E = ½‖y − t‖² + λ·½‖Jᵀ(y − t)‖². The penalty is E_u with u = y − t, a = 0, but u depends on
    # the weights, so (trap 2) the R-backward pass starts from rgy^L = (∂²E/∂y²) R{y^L} = J ρ.
    fwd = forward(net, params, x)
    u = fwd.ys[-1] - t
    (gys, gzs), rho = backward(net, params, fwd, u)
    rys, rzs = r_forward(net, params, fwd, rho)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, rg_out=rys[-1], to_input=False)
    penalty = _weight_gradients(params, fwd, gzs, rgzs, rys)
    plain = [{"W": gz.T @ fwd.ys[l], "b": jnp.sum(gz, axis=0)} for l, gz in enumerate(gzs)]  # noqa: E741
    grads = jax.tree.map(lambda p, q: p + lam * q, plain, penalty)
    return 0.5 * jnp.sum(u * u) + lam * 0.5 * jnp.sum(rho * rho), grads


# ----------------------------------------------------------------------------------------------
# Autodiff road: per-example objectives from jax.jvp / jax.vjp, differentiated by jax.grad.


def _jvp(f, params, x, v):
    return jax.jvp(lambda xi: f(params, xi), (x,), (v,))[1]


def _vjp(f, params, x, u):
    return jax.vjp(lambda xi: f(params, xi), x)[1](u)[0]


def _autodiff_objective(per_example: Callable) -> Callable:
    """(f, params, x (B, n), *args (B, ·)) -> (sum over the batch, grads) by jax.value_and_grad."""

    def run(f, params, x, *args):
        total = lambda p: jnp.sum(jax.vmap(lambda *a: per_example(f, p, *a))(x, *args))  # noqa: E731
        return jax.value_and_grad(total)(params)

    return run


_autodiff_bilinear = _autodiff_objective(lambda f, p, x, g, r: g @ _jvp(f, p, x, r))
_autodiff_jprop_v = _autodiff_objective(
    lambda f, p, x, v, b: 0.5 * jnp.sum((_jvp(f, p, x, v) - b) ** 2)
)
_autodiff_jprop_u = _autodiff_objective(
    lambda f, p, x, u, a: 0.5 * jnp.sum((_vjp(f, p, x, u) - a) ** 2)
)


def _autodiff_double_backprop(f, params, x, t, lam):
    def per_example(p, xi, ti):
        loss = lambda v: 0.5 * jnp.sum((f(p, v) - ti) ** 2)  # noqa: E731
        return loss(xi) + lam * 0.5 * jnp.sum(jax.grad(loss)(xi) ** 2)

    total = lambda p: jnp.sum(jax.vmap(per_example, in_axes=(None, 0, 0))(p, x, t))  # noqa: E731
    return jax.value_and_grad(total)(params)


# ----------------------------------------------------------------------------------------------
# Public transforms.


def _objective_transform(
    f: Any,
    method: str,
    where: str,
    closed: Callable,
    autodiff: Callable,
    arguments: tuple[tuple[str, str], ...],
    scalars: tuple[str, ...] = (),
    batch_size: int | None = None,
) -> Callable[..., Result]:
    """Build `(params, x, *arguments, *scalars) -> (batch-mean value, batch-mean gradients)`.

    `arguments` pairs a name with the space it lives in ("m": output, "n": input); each must have
    x's batch axes in front. `x` may be (n,) or (..., n); leading axes are flattened to one batch.
    """
    road = _resolve_method(f, method, where)
    batch_size = optional_size(batch_size, "batch_size", where)
    rule = closed if road == "closed" else autodiff

    @jax.jit
    def compute(params, x, *args):
        batch, n_args = x.shape[0], len(args) - len(scalars)
        extra = args[n_args:]  # scalars are shared by every chunk

        def summed(x, *per_example):  # (sum of values, sum of gradients) over these examples
            return rule(f, params, x, *per_example, *extra)

        value, grads = sum_batches(summed, x, *args[:n_args], batch_size=batch_size)
        return value / batch, jax.tree.map(lambda gr: gr / batch, grads)

    def objective(params: Any, x: jax.Array, *args: Any) -> Result:
        names = tuple(name for name, _ in arguments) + scalars
        if len(args) != len(names):
            raise TypeError(f"{where}: expected arguments (params, x, {', '.join(names)}).")
        x, out = _prepare(f, params, x, where)
        if len(out.shape) != 1:
            raise TypeError(
                f"{where}: f(params, x) must return a vector of shape (m,) for x of shape (n,); "
                f"it returned shape {out.shape}."
            )
        lead, sizes = x.shape[:-1], {"m": out.shape[0], "n": x.shape[-1]}
        arrays = []
        for (name, space), value in zip(arguments, args):
            shape = lead + (sizes[space],)
            hint = (
                f" `{name}` lives in the {'output' if space == 'm' else 'input'} space "
                f"({space} = {sizes[space]}), with x's batch axes {lead} in front."
            )
            value = check_like(value, name, shape, where, hint)
            if value.dtype != x.dtype:
                raise TypeError(
                    f"{where}: `{name}` must have x's dtype {x.dtype}; got {value.dtype}."
                )
            arrays.append(value.reshape(-1, sizes[space]))
        extra = [jnp.asarray(s, x.dtype) for s in args[len(arguments) :]]
        return compute(params, x.reshape(-1, sizes["n"]), *arrays, *extra)

    return objective


def _check_batch_objective(
    f: Any, params: Any, x: Any, where: str, **arrays: tuple[Any, tuple]
) -> tuple[jax.Array, int, dict[str, jax.Array]]:
    """Validate x (B, n) and named arrays for the composite objectives; return x, m and the arrays.

    Each array is given as (value, shape), the shape written with the symbols "B", "n", "m" and
    ints, e.g. ("B", "P", "n"), where "P" (a count of tangents or probes) takes the value's own size.
    """
    x, out = _prepare(f, params, x, where)
    if x.ndim != 2 or len(out.shape) != 1:
        raise ValueError(
            f"{where}: needs x of shape (B, n) and f(params, x) of shape (m,) per example; got x of "
            f"shape {x.shape} and an output of shape {out.shape}."
        )
    sizes = {"B": x.shape[0], "n": x.shape[1], "m": out.shape[0]}
    checked = {}
    for name, (value, symbols) in arrays.items():
        value = jnp.asarray(value) if value is not None else None
        if value is None:
            continue
        given = dict(sizes, P=value.shape[1] if value.ndim > 1 else -1)
        shape = tuple(given[s] for s in symbols)
        spelled = "(" + ", ".join(symbols) + ") = " + str(shape)
        checked[name] = check_like(value, name, shape, where, f" Expected {spelled}.")
        if checked[name].dtype != x.dtype:
            raise TypeError(f"{where}: `{name}` must have x's dtype {x.dtype}; got {value.dtype}.")
    return x, sizes["m"], checked


def bilinear(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""The bilinear primitive: $g^\top J r$ and its exact gradient $\nabla_w (g^\top J r)$, g and r held fixed.

    Every J-prop objective reduces to this (MATH.md §3); it is also the gradient of a spectral norm
    (top singular pair held fixed) and of log|det J| (u_i = J^{-T} e_i held fixed).

    **Arguments:** `f`: a `jprop.MLP` (four passes) or any `f(params, x)` (autodiff);
    `method`: "auto", "closed" or "autodiff"; `batch_size`: run the batch in chunks of this many
    examples (`jax.lax.scan`), adding each chunk to a running sum, so memory is bounded by one chunk.

    **Returns:** a function `(params, x, g, r) -> (value, grads)`, `x` and `r` of shape `(n,)` or
    `(B, n)`, `g` of shape `(m,)` or `(B, m)`; `value` a scalar (batch mean), `grads` shaped like params.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((3, 8, 2)); p = net.init(jax.random.key(0))
    >>> value, grads = jprop.bilinear(net)(p, jnp.ones(3), jnp.ones(2), jnp.ones(3))
    >>> grads[0]["W"].shape
    (8, 3)
    """
    return _objective_transform(
        f,
        method,
        "jprop.bilinear",
        _closed_bilinear,
        _autodiff_bilinear,
        (("g", "m"), ("r", "n")),
        batch_size=batch_size,
    )


def jprop_u(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""$E_u = \tfrac12\|u^\top J - a\|^2$ and its exact weight-gradient, by J-prop.

    Closed road (a `jprop.MLP`): forward, backward with u (gives $J^\top u$), R-forward along
    $\rho = J^\top u - a$, R-backward — about twice the cost of a plain gradient.

    **Arguments:** `f`, `method`, `batch_size` as for `jprop.bilinear`.

    **Returns:** a function `(params, x, u, a) -> (E_u, grads)`; `x` and `a` of shape `(n,)` or
    `(B, n)`, `u` of shape `(m,)` or `(B, m)`. With a batch, `E_u` and `grads` are batch means.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((3, 8, 2)); p = net.init(jax.random.key(0))
    >>> E, grads = jprop.jprop_u(net)(p, jnp.ones((5, 3)), jnp.ones((5, 2)), jnp.zeros((5, 3)))
    >>> E.shape, grads[1]["b"].shape
    ((), (2,))
    """
    return _objective_transform(
        f,
        method,
        "jprop.jprop_u",
        _closed_jprop_u,
        _autodiff_jprop_u,
        (("u", "m"), ("a", "n")),
        batch_size=batch_size,
    )


def jprop_v(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""$E_v = \tfrac12\|J v - b\|^2$ and its exact weight-gradient, by J-prop.

    Closed road (a `jprop.MLP`, `method="closed"`): forward, R-forward along v (gives $Jv$),
    backward with $e = Jv - b$, R-backward — about twice the cost of a plain gradient. `"auto"`
    takes the autodiff road (`jax.grad` of the jvp), measured 0-20% faster on CPU.

    **Arguments:** `f`, `method`, `batch_size` as for `jprop.bilinear`.

    **Returns:** a function `(params, x, v, b) -> (E_v, grads)`; `x` and `v` of shape `(n,)` or
    `(B, n)`, `b` of shape `(m,)` or `(B, m)`. With a batch, `E_v` and `grads` are batch means.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((1, 10, 1)); p = net.init(jax.random.key(0))
    >>> E, grads = jprop.jprop_v(net)(p, jnp.zeros((4, 1)), jnp.ones((4, 1)), jnp.ones((4, 1)))
    >>> float(grads[1]["b"][0])  # no derivative depends on the output bias
    0.0
    """
    return _objective_transform(
        f,
        method,
        "jprop.jprop_v",
        _closed_jprop_v,
        _autodiff_jprop_v,
        (("v", "n"), ("b", "m")),
        batch_size=batch_size,
    )


def double_backprop(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""Double Backpropagation (Drucker & LeCun 1992): $E_0 + \lambda\,\tfrac12\|\partial E_0/\partial x\|^2$.

    With $E_0 = \tfrac12\|f(x) - t\|^2$, $\partial E_0/\partial x = J^\top (y - t)$: the penalty is
    $E_u$ with $u = y - t$, $a = 0$; because u depends on the weights, the closed road's R-backward
    pass starts from the output injection $J\rho$ (MATH.md §3, trap 2).

    **Returns:** a function `(params, x, t, lam) -> (E, grads)`, `t` of shape `(m,)` or `(B, m)`,
    `lam` a scalar; batch means.
    """
    return _objective_transform(
        f,
        method,
        "jprop.double_backprop",
        _closed_double_backprop,
        _autodiff_double_backprop,
        (("t", "m"),),
        scalars=("lam",),
        batch_size=batch_size,
    )


def tangent_prop(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""Tangent Prop (Simard et al. 1992): $\sum_p \tfrac12\|J \tau_p - b_p\|^2$ over tangent vectors.

    $\tau_p$ is the tangent of a transformation of the input (a small rotation, a shift), $b_p$ the
    desired directional derivative — zero for invariance. One `jprop_v` per tangent.

    **Arguments:** `f`, `method` as for `jprop.bilinear`; `batch_size` chunks the B·P
    (example, tangent) pairs.

    **Returns:** a function `(params, x, tangents, targets=None) -> (E, grads)` with `x` of shape
    `(B, n)`, `tangents` of shape `(B, P, n)` and `targets` `(B, P, m)` (default zeros); batch means.
    """
    where = "jprop.tangent_prop"
    batch_size = optional_size(batch_size, "batch_size", where)
    inner = jprop_v(f, method=method, batch_size=batch_size)

    def objective(params, x, tangents, targets=None):
        x, m, a = _check_batch_objective(
            f,
            params,
            x,
            where,
            tangents=(tangents, ("B", "P", "n")),
            targets=(targets, ("B", "P", "m")),
        )
        tangents = a["tangents"]
        count = tangents.shape[1]
        targets = a.get("targets", jnp.zeros(tangents.shape[:2] + (m,), x.dtype))
        xs = jnp.repeat(x[:, None, :], count, axis=1)
        value, grads = inner(params, xs, tangents, targets)  # mean over B·P pairs
        return value * count, jax.tree.map(lambda gr: gr * count, grads)

    return objective


def _jacobian_target_term(by_columns, by_rows, params, x, targets) -> Result:
    """Σ over the fewer of J's columns or rows of the J-prop objective that fits it to `targets`:
    ½‖J − T‖²_F = Σ_i ½‖J e_i − T_{:,i}‖² (n `jprop_v` calls) = Σ_k ½‖e_kᵀJ − T_{k,:}‖² (m `jprop_u`).
    x (B, n), targets (B, m, n); batch means."""
    batch, m, n = targets.shape
    use_rows = m < n
    total, grads = None, None
    for i in range(m if use_rows else n):
        e = jnp.zeros((batch, m if use_rows else n), x.dtype).at[:, i].set(1)
        if use_rows:
            part, g = by_rows(params, x, e, targets[:, i, :])
        else:
            part, g = by_columns(params, x, e, targets[:, :, i])
        total = part if total is None else total + part
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
    return total, grads


def derivative_targets(
    f: Any, *, method: str = "auto", value_weight: float = 1.0, batch_size: int | None = None
):
    r"""Sobolev training: $w_0\,\tfrac12\|f(x) - y\|^2 + \tfrac12\|J(x) - T\|_F^2$ per example.

    The Jacobian term is summed from whichever is fewer: n `jprop_v` calls with $v = e_i$,
    $b = T_{:,i}$ (the columns) or m `jprop_u` calls with $u = e_k$, $a = T_{k,:}$ (the rows).

    **Returns:** a function `(params, x, y, T) -> (E, grads)`, `x` `(B, n)`, `y` `(B, m)`,
    `T` `(B, m, n)`; batch means. Pass `value_weight=0` to fit derivatives alone (MATH.md §5).
    `batch_size` runs every term over chunks of that many examples (bounded memory).
    """
    where = "jprop.derivative_targets"
    batch_size = optional_size(batch_size, "batch_size", where)
    by_columns = jprop_v(f, method=method, batch_size=batch_size)
    by_rows = jprop_u(f, method=method, batch_size=batch_size)

    @jax.jit
    def value_term(params, x, y):  # mean ½‖f(x) − y‖² and its gradient
        def sums(x, y):
            return jax.value_and_grad(lambda p: 0.5 * jnp.sum((f(p, x) - y) ** 2))(params)

        value, grads = sum_batches(sums, x, y, batch_size=batch_size)
        return value / x.shape[0], jax.tree.map(lambda gr: gr / x.shape[0], grads)

    def objective(params, x, y, T):
        x, m, a = _check_batch_objective(
            f, params, x, where, y=(y, ("B", "m")), T=(T, ("B", "m", "n"))
        )
        value, grads = value_term(params, x, a["y"])
        term, term_grads = _jacobian_target_term(by_columns, by_rows, params, x, a["T"])
        total = value_weight * value + term
        return total, jax.tree.map(lambda v, t: value_weight * v + t, grads, term_grads)

    return objective


def jacobian_penalty(
    f: Any, *, method: str = "auto", num_probes: int | None = None, batch_size: int | None = None
):
    r"""The Frobenius penalty $\tfrac12\|J\|_F^2$ (contractive auto-encoders, Jacobian regularisation).

    Exact with `num_probes=None`: $\tfrac12\sum_i\|J e_i\|^2$, n `jprop_v` calls (or m `jprop_u`,
    whichever is fewer). With `num_probes=k`: the unbiased estimate $\tfrac1k\sum_p \tfrac12\|J v_p\|^2$,
    $v_p \sim N(0, I)$ (Hutchinson; Hoffman et al. 2019), which then needs a `key`. `batch_size`
    chunks the examples (and probes) for bounded memory.

    **Returns:** a function `(params, x, key=None) -> (penalty, grads)`; `x` `(B, n)`; batch means.
    """
    where = "jprop.jacobian_penalty"
    batch_size = optional_size(batch_size, "batch_size", where)
    if num_probes is not None:
        num_probes = check_size(num_probes, "num_probes", where)
    by_columns = jprop_v(f, method=method, batch_size=batch_size)
    by_rows = jprop_u(f, method=method, batch_size=batch_size)

    def objective(params, x, key=None):
        x, m, _ = _check_batch_objective(f, params, x, where)
        batch, n = x.shape
        if num_probes is None:  # ½‖J‖²_F is the fit to a zero target Jacobian
            zero = jnp.zeros((batch, m, n), x.dtype)
            return _jacobian_target_term(by_columns, by_rows, params, x, zero)
        if key is None:
            raise ValueError(
                f"{where}: num_probes={num_probes} draws random probes and needs `key`."
            )
        probes = jax.random.normal(key, (batch, num_probes, n), x.dtype)
        xs = jnp.repeat(x[:, None, :], num_probes, axis=1)
        return by_columns(params, xs, probes, jnp.zeros((batch, num_probes, m), x.dtype))

    return objective
