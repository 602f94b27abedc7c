"""Training through the input Hessian, its diagonal and the input Hessian-vector product:
hand-written tangent passes (docs/math.md §10).

**Hessian and diagonal.** The sum over hidden units writes ∇²f_k = Σ_l Σ_j C^l_kj A^l_j A^l_jᵀ, with
A^l = ∂a^l/∂x (one column per chosen input, pushed forwards) and C^l = D^l ∘ s2^l, where
D^l = ∂f/∂y^l runs backwards from D^L = I:

    a^l = W^l y^{l-1} + b^l,   A^l = W^l T^{l-1},   y^l = σ(a^l),   T^l = s1^l ∘ A^l,
    D^{l-1} = (D^l ∘ s1^l) W^l.

Its tangent-linear pass, for (dW, db, dx): the forward lines give ȧ and Ȧ as for the Jacobian's
columns pass, with ṡ1 = s2 ∘ ȧ and ṡ2 = s3 ∘ ȧ; the backward line gives

    Ḋ^L = 0,   Ḋ^{l-1} = (Ḋ^l ∘ s1^l + D^l ∘ ṡ1^l) W^l + (D^l ∘ s1^l) dW^l,
    Ċ^l = Ḋ^l ∘ s2^l + D^l ∘ ṡ2^l,

and the Hessian's tangent is Σ_l Σ_j [Ċ_kj A_j A_jᵀ + C_kj (A_j Ȧ_jᵀ + Ȧ_j A_jᵀ)], computed per
example as M + Mᵀ with M = (½ Ċ∘A + C∘Ȧ) Aᵀ, one product. The diagonal keeps the squares only:
Σ_j Ċ_kj A_pj² + 2 C_kj A_pj Ȧ_pj, no n × n matrix formed. (For up to
`PER_TANGENT_DIAGONAL_INPUTS` below chosen inputs the diagonal trains through the forward
Laplacian's pass kept per tangent instead, `_forward_laplacian.diagonal`: faster there.)

**Hessian-vector product.** Σ_k g_k ∇²f_k r is the R-backward pass's rgy^0 (`models/_passes.py`). Each of
the four passes is differentiated line by line, with ġ, ṙ the tangents of the weighting and the
direction:

    backward:    ġz = ṡ1 ∘ gy + s1 ∘ ġy,                 ġy^{l-1} = ġz W + gz dW,   ġy^L = ġ,
    R-forward:   ṙz = ṙy Wᵀ + ry dWᵀ,                    ṙy = ṡ1 ∘ rz + s1 ∘ ṙz,   ṙy^0 = ṙ,
    R-backward:  ṙgz = ṡ1 ∘ rgy + s1 ∘ ṙgy + ṡ2 ∘ rz ∘ gy + s2 ∘ (ṙz ∘ gy + rz ∘ ġy),
                 ṙgy^{l-1} = ṙgz W + rgz dW,             ṙgy^L = 0,

and the product's tangent is ṙgy^0. A tangent that is exactly zero (the input's, g's or r's when
only the weights are trained) is carried as None, so it costs no product.

Each transform is a `jax.custom_jvp` whose value is the closed form and whose rule runs these
passes; `jax.grad` transposes them into the adjoint recursion (products with Wᵀ, elementwise
scalings by kept residuals, W̄ gathered as flat matrix products), fused over the batch, and the
forward modes run them as they stand. Softmax outputs keep JAX's derivative of the closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._program import broadcasting
from ..models._activations import activation_function, is_linear, slopes
from ..models._mlp import MLP, Params
from ..models._passes import Forward, backward, r_backward, r_forward
from . import _closed, _forward_laplacian
from ._closed import contract_in_chunks, symmetric_gram
from ._forward_laplacian import (
    columns,
    first_order_tangent,
    instantiate,
    scale,
    times_w,
    times_wt,
)


class _Layer(NamedTuple):
    y: jax.Array  # the layer's input y^{l-1}
    t: jax.Array | None  # ∂y^{l-1}/∂x over the chosen inputs (None at the first layer: I)
    big_a: jax.Array  # A^l = ∂a^l/∂x, (B or 1, k, n_l)
    slopes: tuple[jax.Array, ...] | None  # s1, s2, s3 at a^l; None for a linear layer


def _add(*terms):
    """The sum of the terms that are not None (exact zeros); None if all are."""
    present = [t for t in terms if t is not None]
    return reduce(jnp.add, present) if present else None


def _times(a, b):
    return None if a is None or b is None else a * b


def _forward(net: MLP, params: Params, x: jax.Array, dims):
    """Forward pass keeping each layer's input, A^l and slopes; then D^l = ∂f/∂y^l backwards."""
    y, t, layers = x, None, []
    for layer, name in zip(params, net.activations()):
        w = layer["W"]
        a = y @ w.T + layer["b"]
        big_a = columns(w, dims) if t is None else times_wt(t, w)
        y_next = activation_function(name)(a)
        curved = None if is_linear(name) else slopes(name, a, y_next, orders=3)
        layers.append(_Layer(y, t, big_a, curved))
        y, t = y_next, big_a if curved is None else scale(curved[0], big_a)
    m = net.n_outputs
    ds = [jnp.eye(m, dtype=x.dtype)[None]]
    for layer in reversed(range(1, net.depth)):
        curved = layers[layer].slopes
        e = ds[0] if curved is None else scale(curved[0], ds[0])
        ds.insert(0, times_w(e, params[layer]["W"]))
    return layers, ds


def _tangent(params: Params, dparams: Params, layers, ds, dx, dims):
    """(Ċ^l, C^l, A^l, Ȧ^l) of each curved layer for the tangent (dparams, dx)."""
    y_dot, t_dot, a_dots, big_a_dots = dx, None, [], []
    for layer, d_layer, lay in zip(params, dparams, layers):
        a_dot, big_a_dot = first_order_tangent(layer, d_layer, lay.y, lay.t, y_dot, t_dot, dims)
        a_dots.append(a_dot)
        big_a_dots.append(big_a_dot)
        if lay.slopes is None:
            y_dot, t_dot = a_dot, big_a_dot
        else:
            s1, s2 = lay.slopes[:2]
            y_dot = s1 * a_dot
            t_dot = scale(s2 * a_dot, lay.big_a) + scale(s1, big_a_dot)
    d_dots = [None]
    for layer in reversed(range(1, len(params))):
        d, d_dot, curved = ds[layer], d_dots[0], layers[layer].slopes
        if curved is None:
            e, e_dot = d, d_dot
        else:
            s1, s2 = curved[:2]
            e = scale(s1, d)
            e_dot = _add(None if d_dot is None else scale(s1, d_dot), scale(s2 * a_dots[layer], d))
        w, dw = params[layer]["W"], dparams[layer]["W"]
        d_dots.insert(0, _add(None if e_dot is None else times_w(e_dot, w), times_w(e, dw)))
    parts = []
    for lay, d, d_dot, a_dot, big_a_dot in zip(layers, ds, d_dots, a_dots, big_a_dots):
        if lay.slopes is None:
            continue
        s2, s3 = lay.slopes[1:]
        c_dot = _add(None if d_dot is None else scale(s2, d_dot), scale(s3 * a_dot, d))
        parts.append((c_dot, scale(s2, d), lay.big_a, big_a_dot))
    return parts


def _weigh(c: jax.Array, u: jax.Array) -> jax.Array:
    """Σ_j c_kj u_pj: c (B, m, N), u (B or 1, k, N) -> (B, m, k)."""
    if u.shape[0] == 1:
        return c @ u[0].T
    if c.shape[1] == 1:
        return jnp.sum(u * c, axis=-1)[:, None, :]
    return c @ jnp.swapaxes(u, 1, 2)


def _batched(v: jax.Array, batch: int) -> jax.Array:
    return jnp.broadcast_to(v, (batch, *v.shape[1:]))


def diagonal(net: MLP, dims: tuple[int, ...] | None = None):
    """The Hessian diagonal (B, m, k) over the inputs `dims` as a function `(params, x (B, n))`:
    the closed form, differentiated by the tangent pass above."""

    @jax.custom_jvp
    def quantity(params, x):
        return _closed.hessian_diagonal(net, params, x, dims)

    def rule(primals, tangents):
        params, x = primals
        dparams, dx = tangents
        layers, ds = _forward(net, params, x, dims)
        zero = jnp.zeros((x.shape[0], net.n_outputs, layers[0].big_a.shape[1]), x.dtype)
        dx = None if isinstance(dx, SymbolicZero) else dx
        parts = _tangent(params, instantiate(dparams, params), layers, ds, dx, dims)
        value = _add(zero, *(_weigh(c, a * a) for _, c, a, _ in parts))
        d_value = _add(
            zero, *(_weigh(c_dot, a * a) + 2 * _weigh(c, a * a_dot) for c_dot, c, a, a_dot in parts)
        )
        return value, d_value

    quantity.defjvp(broadcasting(rule), symbolic_zeros=True)
    return quantity


def hessian(net: MLP):
    """The input Hessian (B, m, n, n) as a function `(params, x (B, n))`: the closed form,
    differentiated by the tangent pass above."""

    @jax.custom_jvp
    def quantity(params, x):
        return _closed.hessian(net, params, x)

    def rule(primals, tangents):
        params, x = primals
        dparams, dx = tangents
        batch, m, n = x.shape[0], net.n_outputs, net.n_inputs
        layers, ds = _forward(net, params, x, None)
        dx = None if isinstance(dx, SymbolicZero) else dx
        parts = _tangent(params, instantiate(dparams, params), layers, ds, dx, None)
        zero = jnp.zeros((batch, m, n, n), x.dtype)
        value, d_value = zero, zero
        first = parts and parts[0][2].shape[0] == 1  # the first layer's rows: W^1's, shared
        if first and parts[0][2].size * n <= _closed.MAX_FIRST_LAYER_PRODUCTS:
            # as in the closed form: Σ_j C_kj W_j W_jᵀ = C @ [W_j ⊗ W_j], one product over
            # the batch, with tangent Ċ @ [W_j ⊗ W_j] + C @ [W_j ⊗ dW_j + dW_j ⊗ W_j]
            c_dot, c, a, a_dot = parts.pop(0)
            w, dw = a[0].T, a_dot[0].T  # (n_1, n)
            outer = (w[:, :, None] * w[:, None, :]).reshape(-1, n * n)
            half = (w[:, :, None] * dw[:, None, :]).reshape(-1, n, n)
            d_outer = (half + jnp.swapaxes(half, 1, 2)).reshape(-1, n * n)
            value = (c @ outer).reshape(zero.shape)
            # C @ [sym. outer products] written as its transpose's transpose: the reverse pass
            # then contracts the result's cotangent with C without a transposed copy of the
            # (B·m × n²) cotangent, which XLA otherwise makes for the product Cᵀ @ H̄
            flat_c = c.reshape(-1, c.shape[-1])
            d_value = (c_dot @ outer).reshape(zero.shape) + (d_outer.T @ flat_c.T).T.reshape(
                zero.shape
            )
        if not parts:  # nothing (else) curved
            return value, d_value
        c_dot, c, a, a_dot = (
            jnp.concatenate([_batched(v, batch) for v in group], -1) for group in zip(*parts)
        )

        def one(chunk):  # per example: c (m, N), a (n, N)
            c_dot, c, a, a_dot = chunk
            # The tangent Σ_j Ċ_kj a_j a_jᵀ + C_kj (a_j ȧ_jᵀ + ȧ_j a_jᵀ) is M + Mᵀ with
            # M = (½ Ċ ∘ A + C ∘ Ȧ) Aᵀ: one product, whose left factor is linear in the tangents
            # and whose right is a alone, so the reverse pass keeps c and a (not the (m, n, N)
            # weighted rows of every chunk) and forms one product too. The left factor's outer
            # products are einsums, so its transposes are contractions (over the outputs and over
            # the inputs) rather than broadcast products reduced afterwards; it is laid out units
            # first, (N, m, n), the layout those contractions read.
            left = 0.5 * jnp.einsum("kj,pj->jkp", c_dot, a) + jnp.einsum("kj,pj->jkp", c, a_dot)
            half = jnp.einsum("jkp,qj->kpq", left, a)
            return symmetric_gram(c[:, None, :] * a[None], a), half + jnp.swapaxes(half, 1, 2)

        grams = contract_in_chunks(one, (c_dot, c, a, a_dot), batch, in_rule=True)
        return value + grams[0], d_value + grams[1]

    quantity.defjvp(broadcasting(rule), symbolic_zeros=True)
    return quantity


def _times_wt(v, w):
    """v @ Wᵀ, or None for an exact zero."""
    return None if v is None else v @ w.T


def _times_w(v, w):
    return None if v is None else v @ w


def _hvp_forward(net: MLP, params: Params, x: jax.Array):
    """The forward pass of `_passes.forward`, keeping s3 too."""
    ys, s1s, s2s, s3s = [x], [], [], []
    for layer, name in zip(params, net.activations()):
        a = ys[-1] @ layer["W"].T + layer["b"]
        ys.append(activation_function(name)(a))
        s1, s2, s3 = slopes(name, a, ys[-1], orders=3)
        s1s.append(s1)
        s2s.append(s2)
        s3s.append(None if is_linear(name) else s3)
    return Forward(ys, s1s, s2s), s3s


def _hvp_tangent(params, dparams, fwd, s3s, passes, dx, dg, dr):
    """ṙgy^0 for the tangents (dparams, dx, dg, dr) of the four passes' inputs (None: zero)."""
    (gys, gzs), (rys, rzs), rgzs = passes
    s1_dots, s2_dots, y_dot = [], [], dx
    for layer, d_layer, y, s1, s2, s3 in zip(params, dparams, fwd.ys, fwd.s1, fwd.s2, s3s):
        a_dot = _add(y @ d_layer["W"].T + d_layer["b"], _times_wt(y_dot, layer["W"]))
        y_dot = s1 * a_dot
        s1_dots.append(None if s3 is None else s2 * a_dot)
        s2_dots.append(None if s3 is None else s3 * a_dot)
    rz_dots, ry_dot = [], dr
    for layer, d_layer, ry, rz, s1, s1_dot in zip(params, dparams, rys, rzs, fwd.s1, s1_dots):
        rz_dot = _add(_times_wt(ry_dot, layer["W"]), _times_wt(ry, d_layer["W"]))
        rz_dots.append(rz_dot)
        ry_dot = _add(_times(s1_dot, rz), _times(s1, rz_dot))
    gy_dot, rgy, rgy_dot = dg, None, None
    for layer in reversed(range(len(params))):
        w, dw = params[layer]["W"], dparams[layer]["W"]
        s1, s2, s1_dot, s2_dot = fwd.s1[layer], fwd.s2[layer], s1_dots[layer], s2_dots[layer]
        gy, rz, rz_dot = gys[layer], rzs[layer], rz_dots[layer]
        gz_dot = _add(_times(s1_dot, gy), _times(s1, gy_dot))
        rgz_dot = _add(_times(s1_dot, rgy), _times(s1, rgy_dot))
        if s2_dot is not None:  # a curved layer: the s2 ∘ rz ∘ gy term's tangent
            rgz_dot = _add(
                rgz_dot,
                s2_dot * rz * gy,
                _times(s2, _times(rz_dot, gy)),
                _times(s2, _times(rz, gy_dot)),
            )
        rgz = rgzs[layer]
        rgy_dot = _add(_times_w(rgz_dot, w), _times_w(rgz, dw))
        if layer:
            gy_dot = _add(_times_w(gz_dot, w), gzs[layer] @ dw)
            rgy = _times_w(rgz, w)
    return rgy_dot


def hessian_vector_product(net: MLP):
    """Σ_k g_k ∇²f_k r (B, n) as a function `(params, x, g, r)` (batches): the R-backward pass,
    differentiated by the tangent of the four passes above."""

    def passes(params, x, g, r):
        fwd, s3s = _hvp_forward(net, params, x)
        (gys, gzs), _ = backward(net, params, fwd, g, to_input=False)
        rys, rzs = r_forward(net, params, fwd, r)
        rgzs, hvp = r_backward(net, params, fwd, gys, rys, rzs)
        return hvp, fwd, s3s, ((gys, gzs), (rys, rzs), rgzs)

    @jax.custom_jvp
    def quantity(params, x, g, r):
        return _closed.hessian_vector_product(net, params, x, g, r)

    def rule(primals, tangents):
        params, dparams = primals[0], instantiate(tangents[0], primals[0])
        dx, dg, dr = (None if isinstance(t, SymbolicZero) else t for t in tangents[1:])
        hvp, fwd, s3s, kept = passes(*primals)
        d_hvp = _hvp_tangent(params, dparams, fwd, s3s, kept, dx, dg, dr)
        return hvp, jnp.zeros_like(hvp) if d_hvp is None else d_hvp

    quantity.defjvp(broadcasting(rule), symbolic_zeros=True)
    return quantity


# The Hessian diagonal trains through the forward Laplacian's pass with each tangent's λ kept
# apart up to this many chosen inputs. That pass pushes 2k + 1 streams through every layer (the
# Laplacian's k + 2), so its cost grows faster with k than the sum over units differentiated, and
# it pays for few chosen inputs only (`benchmarks.pinn_step` times the rows this choice gives).
PER_TANGENT_DIAGONAL_INPUTS = 4


def diagonal_for(net: MLP, dims: tuple[int, ...] | None) -> Callable:
    """The Hessian diagonal over `dims` with the hand-written rule that is faster for its k."""
    k = net.n_inputs if dims is None else len(dims)
    if k <= PER_TANGENT_DIAGONAL_INPUTS:
        return _forward_laplacian.diagonal(net, dims)
    return diagonal(net, dims)
