"""Training through the input Jacobian: two passes with hand-written tangent-linear rules.

A Sobolev or Jacobian-penalty loss ℓ(J(x; w)) needs ∂ℓ/∂w and, for nested objectives, ∂ℓ/∂x.
The Jacobian of an MLP is computed by whichever pass pushes fewer vectors (docs/math.md §9):

**Columns** (k chosen inputs ≤ m outputs): per example and layer, the net input a and the
input-tangents A (one column per input), from y^0 = x, T^0 = I:

    a^l = W^l y^{l-1} + b^l,   A^l = W^l T^{l-1},   y^l = σ(a^l),   T^l = s1 ∘ A^l,

and J = T^L (A^L for a linear output). Its tangent-linear pass, for (dW, db, dx):

    ȧ = dW y + W ẏ + db,   Ȧ = dW T + W Ṫ,   ẏ = s1 ∘ ȧ,   Ṫ = (s2 ∘ ȧ) ∘ A + s1 ∘ Ȧ.

**Rows** (m outputs < k inputs): the forward pass keeps a, s1, s2; the sensitivities
P^l = ∂f/∂a^l (m rows) run backwards from P^L = diag(s1^L) (I for a linear output):

    P^l = (P^{l+1} W^{l+1}) ∘ s1^l,   J = P^1 W^1,

with the tangent, reading ȧ from the forward tangent above,

    Ṗ^L = diag(s2^L ∘ ȧ^L),
    Ṗ^l = (Ṗ^{l+1} W^{l+1} + P^{l+1} dW^{l+1}) ∘ s1^l + (P^{l+1} W^{l+1}) ∘ (s2^l ∘ ȧ^l),
    J̇ = Ṗ^1 W^1 + P^1 dW^1.

Each transform is a `jax.custom_jvp` running one pass and, when differentiated, its tangent pass.
Every product in the tangent is a flat (B·k or B·m rows) matrix product with a weight matrix or an
elementwise scaling by a kept residual, so `jax.grad`, which transposes the tangent, runs the adjoint
recursion by hand-written rules (for the rows pass this is double backpropagation, the bilinear
J-prop of docs/math.md §3 summed over the m outputs), fused over the batch; `jax.jvp`,
`jax.jacfwd` and `jax.hessian` run the tangent itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._program import broadcasting
from ..models._activations import activation_function, is_linear, slopes
from ..models._mlp import MLP, Params
from . import _closed
from ._forward_laplacian import (
    columns,
    first_order_tangent,
    instantiate,
    scale,
    times_w,
    times_wt,
)


def _batch(v: jax.Array, batch: int) -> jax.Array:
    return jnp.broadcast_to(v, (batch, *v.shape[1:]))


def _columns_forward(net: MLP, params: Params, x: jax.Array, dims):
    """J over the chosen inputs by the columns pass, layout (B, k, m), and its residuals."""
    y, t, kept = x, None, []
    for index, (layer, name) in enumerate(zip(params, net.activations())):
        w = layer["W"]
        a = y @ w.T + layer["b"]
        big_a = columns(w, dims) if t is None else times_wt(t, w)
        if index == net.depth - 1 and is_linear(name):
            kept.append((y, t, None))
            return _batch(big_a, x.shape[0]), kept
        y_next = activation_function(name)(a)
        s1, s2 = slopes(name, a, y_next, orders=2)
        kept.append((y, t, (big_a, s1, s2)))
        y, t = y_next, scale(s1, big_a)
    return t, kept


def _columns_tangent(params: Params, kept, dparams: Params, dx, dims, batch: int):
    y_dot, t_dot = dx, None
    for layer, d_layer, (y, t, curved) in zip(params, dparams, kept):
        a_dot, big_a_dot = first_order_tangent(layer, d_layer, y, t, y_dot, t_dot, dims)
        if curved is None:
            return _batch(big_a_dot, batch)
        big_a, s1, s2 = curved
        t_dot = scale(s2 * a_dot, big_a) + scale(s1, big_a_dot)
        y_dot = s1 * a_dot
    return t_dot


def _rows_forward(net: MLP, params: Params, x: jax.Array, dims):
    """J over the chosen inputs by the rows pass, layout (B, m, k), and its residuals."""
    y, ys, s1s, s2s = x, [], [], []
    for layer, name in zip(params, net.activations()):
        a = y @ layer["W"].T + layer["b"]
        ys.append(y)
        y = activation_function(name)(a)
        s1, s2 = slopes(name, a, y, orders=2)
        s1s.append(s1)
        s2s.append(s2)
    m = net.n_outputs
    eye = jnp.eye(m, dtype=x.dtype)[None]
    output_linear = is_linear(net.activations()[-1])
    ps, backs = [eye if output_linear else eye * s1s[-1][:, None, :]], []
    for layer in reversed(range(1, net.depth)):
        backs.insert(0, times_w(ps[0], params[layer]["W"]))  # ∂f/∂y^{layer}
        ps.insert(0, scale(s1s[layer - 1], backs[0]))
    jac = times_w(ps[0], _first(params, dims))
    return _batch(jac, x.shape[0]), (ys, s1s, s2s, ps, backs, output_linear)


def _first(params: Params, dims) -> jax.Array:
    w = params[0]["W"]
    return w if dims is None else w[:, list(dims)]


def _rows_tangent(params: Params, kept, dparams: Params, dx, dims, batch: int):
    ys, s1s, s2s, ps, backs, output_linear = kept
    a_dots, y_dot = [], dx
    for layer, d_layer, y, s1 in zip(params, dparams, ys, s1s):
        a_dot = y @ d_layer["W"].T + d_layer["b"]
        if y_dot is not None:
            a_dot = a_dot + y_dot @ layer["W"].T
        a_dots.append(a_dot)
        y_dot = s1 * a_dot
    eye = jnp.eye(ps[-1].shape[1], dtype=ys[0].dtype)[None]
    p_dot = None if output_linear else eye * (s2s[-1] * a_dots[-1])[:, None, :]
    for layer in reversed(range(1, len(params))):
        w, dw = params[layer]["W"], dparams[layer]["W"]
        through = times_w(ps[layer], dw)
        if p_dot is not None:
            through = through + times_w(p_dot, w)
        back = backs[layer - 1]
        p_dot = scale(s1s[layer - 1], through) + scale(s2s[layer - 1] * a_dots[layer - 1], back)
    jac_dot = times_w(ps[0], _first(dparams, dims))
    if p_dot is not None:
        jac_dot = jac_dot + times_w(p_dot, _first(params, dims))
    return _batch(jac_dot, batch)


def jacobian(net: MLP, dims: tuple[int, ...] | None = None):
    """The input Jacobian (B, m, k) over the inputs `dims` (None: all) as a function
    `(params, x (B, n))`, by the pass pushing fewer vectors, differentiated by its tangent pass."""
    k = net.n_inputs if dims is None else len(dims)
    by_rows = net.n_outputs < k

    def run(params, x):
        if by_rows:
            return _rows_forward(net, params, x, dims)
        jac, kept = _columns_forward(net, params, x, dims)
        return jnp.swapaxes(jac, 1, 2), kept

    @jax.custom_jvp
    def quantity(params, x):
        if dims is None:  # the closed form picks the same pass, without keeping residuals
            return _closed.jacobian(net, params, x)
        return run(params, x)[0]

    def rule(primals, tangents):
        params, x = primals
        dparams, dx = tangents
        jac, kept = run(params, x)
        dx = None if isinstance(dx, SymbolicZero) else dx
        dparams = instantiate(dparams, params)
        if by_rows:
            return jac, _rows_tangent(params, kept, dparams, dx, dims, x.shape[0])
        d_jac = _columns_tangent(params, kept, dparams, dx, dims, x.shape[0])
        return jac, jnp.swapaxes(d_jac, 1, 2)

    quantity.defjvp(broadcasting(rule), symbolic_zeros=True)
    return quantity
