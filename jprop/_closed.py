"""Closed forms for a `jprop.MLP` over a batch x of shape (B, n) (MATH.md §2 and §4).

Only the elementwise nonlinearities curve the map, so the input Hessian of output k is a sum of
rank-one terms over units (the "sum over hidden units"):

    ∇²_x f_k = Σ_l (J_z^l)ᵀ diag(s2^l ∘ B^l_{k,:}) J_z^l = Σ_j C_kj a_j a_jᵀ,

with a_j the rows of the net-input Jacobians J_z^l = ∂z^l/∂x (propagated forwards) and C = [s2^l ∘ B^l]
the curvature weights (B^l = ∂f/∂y^l, propagated backwards; B^L = I). The Laplacian and the Hessian
diagonal reuse a_j and C without forming any n × n matrix; a softmax output adds its own
second-derivative tensor (derived below).

Layout is chosen for large matrix products (MATH.md §4: layout matters as much as flops): forward
tangents are held input-direction-major, T^l[p, b, :] = ∂z^l_b/∂x_p of shape (n, B, n_l), so each
layer is one (n·B × n_{l-1}) @ (n_{l-1} × n_l) product; sensitivities are (B, m, n_l), one
(B·m × n_l) @ (n_l × n_{l-1}) product per layer. The first layer's rows a_j = W^1_j are the same for
every example, and are used as such rather than copied per example.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._mlp import MLP, Params
from ._passes import Forward, _is_linear, backward, forward, r_backward, r_forward


def _rows_to_z(fwd: Forward, layer: int, name: str, rows: jax.Array) -> jax.Array:
    """rows (B, m, n_l) of ∂f/∂y^l times ∂y^l/∂z^l: s1-scaling, or softmax's y∘(· − ⟨y, ·⟩)."""
    if name == "softmax":
        y = fwd.ys[layer + 1][:, None, :]
        return y * (rows - jnp.sum(y * rows, axis=-1, keepdims=True))
    return fwd.s1[layer][:, None, :] * rows


def _tangents(net: MLP, params: Params, fwd: Forward) -> list[jax.Array]:
    """T^l = ∂z^l/∂x in layout (n, B, n_l) for l = 1..L; T^1 = W^1ᵀ is kept as (n, 1, n_1)."""
    ts = [params[0]["W"].T[:, None, :]]
    for layer in range(1, net.depth):
        ts.append((ts[-1] * fwd.s1[layer - 1][None]) @ params[layer]["W"].T)
    return ts


def _sensitivities(net: MLP, params: Params, fwd: Forward) -> list[jax.Array]:
    """B^l = ∂f/∂y^l, (B, m, n_l), for l = 1..L: B^L = I, B^{l-1} = (∂f/∂z^l) W^l."""
    batch, m = fwd.ys[0].shape[0], net.n_outputs
    bs = [jnp.broadcast_to(jnp.eye(m, dtype=fwd.ys[-1].dtype), (batch, m, m))]
    for layer in reversed(range(1, net.depth)):
        bs.insert(0, _rows_to_z(fwd, layer, net.activations()[layer], bs[0]) @ params[layer]["W"])
    return bs


def jacobian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """J (B, m, n): forward propagation when n < m, back-propagation otherwise (MATH.md §2)."""
    fwd = forward(net, params, x)
    output = net.activations()[-1]
    if net.n_inputs < net.n_outputs:
        t = _tangents(net, params, fwd)[-1]  # ∂z^L/∂x, (n, B, m)
        t = jnp.broadcast_to(t, (t.shape[0], x.shape[0], t.shape[2]))
        if output == "softmax":  # Bishop 8.34: ∂y_k/∂z_l = δ_kl y_k − y_k y_l
            y = fwd.ys[-1][None]
            return jnp.transpose(y * (t - jnp.sum(y * t, axis=-1, keepdims=True)), (1, 2, 0))
        return jnp.transpose(fwd.s1[-1][None] * t, (1, 2, 0))
    b1 = _sensitivities(net, params, fwd)[0]  # ∂f/∂y^1, (B, m, n_1)
    return _rows_to_z(fwd, 0, net.activations()[0], b1) @ params[0]["W"]


class _Curvature(NamedTuple):
    first: jax.Array | None  # C^1 (B, m, n_1) for a curved first layer (rows W^1), else None
    rows: jax.Array | None  # a_j of the later curved layers, layout (n, B, N), else None
    weights: jax.Array | None  # their C, (B, m, N)
    softmax: tuple[jax.Array, jax.Array] | None  # (y (B, m), G = ∂z^L/∂x as (B, m, n))


def _curvature(net: MLP, params: Params, x: jax.Array) -> _Curvature:
    fwd = forward(net, params, x)
    ts = _tangents(net, params, fwd)
    bs = _sensitivities(net, params, fwd)
    first, rows, weights = None, [], []
    for layer, name in enumerate(net.activations()):
        if name == "softmax" or _is_linear(name):
            continue
        c = bs[layer] * fwd.s2[layer][:, None, :]
        if layer == 0:
            first = c
        else:
            rows.append(ts[layer])
            weights.append(c)
    softmax = None
    if net.output == "softmax":
        g = jnp.broadcast_to(ts[-1], (ts[-1].shape[0], x.shape[0], ts[-1].shape[2]))
        softmax = (fwd.ys[-1], jnp.transpose(g, (1, 2, 0)))
    if not rows:
        return _Curvature(first, None, None, softmax)
    return _Curvature(first, jnp.concatenate(rows, -1), jnp.concatenate(weights, -1), softmax)


# Softmax output: with y = softmax(z), ∂²y_k/∂z∂z = y_k [(e_k − y)(e_k − y)ᵀ − diag(y) + y yᵀ].
# Pulled back through G = ∂z^L/∂x, with q = Gᵀy, u_k = G_k − q and P = Gᵀ diag(y) G:
#     ∇²_x f_k (softmax part) = y_k (u_k u_kᵀ − P + q qᵀ).
# Per example: y (m,), g (m, n).
def _softmax_parts(y: jax.Array, g: jax.Array):
    q = y @ g
    return q, g - q


def _softmax_hessian(y, g):
    q, u = _softmax_parts(y, g)
    p = (g * y[:, None]).T @ g
    return y[:, None, None] * (u[:, :, None] * u[:, None, :] - p + jnp.outer(q, q))


def _softmax_laplacian(y, g):
    q, u = _softmax_parts(y, g)
    return y * (jnp.sum(u * u, axis=1) - y @ jnp.sum(g * g, axis=1) + q @ q)


def _softmax_diagonal(y, g):
    q, u = _softmax_parts(y, g)
    return y[:, None] * (u * u - y @ (g * g) + q * q)


def _weighted_gram(c: jax.Array, a: jax.Array) -> jax.Array:
    """Σ_j c_kj a_j a_jᵀ for one example, c (m, N), a (N, n) -> (m, n, n): contraction index last."""
    return (c[:, None, :] * a.T[None]) @ a


# Examples per step of the Hessian contraction: small enough for the (chunk, m, n, N) intermediate
# to stay in cache, large enough to amortise the loop (measured best at 8-16 on n = 32, 3×128).
_CONTRACTION_CHUNK = 16
# The first layer's symmetric outer products W^1_j ⊗ W^1_j are formed once, shared by the batch,
# while they stay this small (elements); beyond it (very wide inputs) they are contracted per example.
_MAX_FIRST_LAYER_PRODUCTS = 1 << 22


def hessian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """∇²_x f_k for every example and output, (B, m, n, n), by the sum over hidden units.

    The first layer's part of every Hessian is one large product C^1 (B·m × n_1) @ [W^1_j ⊗ W^1_j]
    (n_1 × n(n+1)/2), upper triangle only, mirrored after. Later layers' rows differ per example;
    their weighted Gram matrices are computed in cache-sized chunks.
    """
    n, m, batch = net.n_inputs, net.n_outputs, x.shape[0]
    cur = _curvature(net, params, x)
    h = jnp.zeros((batch, m, n, n), x.dtype)
    first, rows, weights = cur.first, cur.rows, cur.weights
    n1 = net.sizes[1]
    if first is not None and n1 * n * (n + 1) // 2 > _MAX_FIRST_LAYER_PRODUCTS:
        w1 = jnp.broadcast_to(params[0]["W"].T[:, None, :], (n, batch, n1))
        rows = w1 if rows is None else jnp.concatenate([w1, rows], -1)
        weights = first if weights is None else jnp.concatenate([first, weights], -1)
        first = None
    if rows is not None:
        a = jnp.transpose(rows, (1, 2, 0))  # (B, N, n)
        h = h + jax.lax.map(
            lambda t: _weighted_gram(*t), (weights, a), batch_size=_CONTRACTION_CHUNK
        )
    if first is not None:
        i, j = np.triu_indices(n)
        products = params[0]["W"][:, i] * params[0]["W"][:, j]  # (n_1, n(n+1)/2)
        upper = first.reshape(-1, n1) @ products
        index = np.zeros((n, n), dtype=np.int32)
        index[i, j] = index[j, i] = np.arange(i.size)
        h = h + upper[:, index].reshape(batch, m, n, n)
    if cur.softmax is not None:
        h = h + jax.vmap(_softmax_hessian)(*cur.softmax)
    return h


def _squared_rows_weighted(cur: _Curvature) -> jax.Array:
    """Σ_j C_kj (a_j)_p² over the later curved layers, in layout (n, B, m).

    Written per output as an elementwise product reduced over the minor (unit) axis, which XLA fuses
    into one pass; a reduction over the leading tangent axis, a per-example product, or one
    broadcast over an extra output axis each measured 2-10× slower. Many outputs use an einsum.
    """
    squares = cur.rows**2
    m = cur.weights.shape[1]
    if m > _MAX_UNROLLED_OUTPUTS:
        return jnp.einsum("pbj,bkj->pbk", squares, cur.weights)
    return jnp.stack([jnp.sum(squares * cur.weights[None, :, k, :], -1) for k in range(m)], -1)


# Outputs up to which `_squared_rows_weighted` runs one fused pass per output.
_MAX_UNROLLED_OUTPUTS = 16


def hessian_diagonal(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """∂²f_k/∂x_i², (B, m, n): Σ_j C_kj a_ji², the Hessian's diagonal, no n × n matrix formed."""
    cur = _curvature(net, params, x)
    diag = jnp.zeros((x.shape[0], net.n_outputs, net.n_inputs), x.dtype)
    if cur.first is not None:
        diag = diag + cur.first @ (params[0]["W"] ** 2)
    if cur.rows is not None:
        diag = diag + jnp.transpose(_squared_rows_weighted(cur), (1, 2, 0))
    if cur.softmax is not None:
        diag = diag + jax.vmap(_softmax_diagonal)(*cur.softmax)
    return diag


def laplacian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """Δf_k = Σ_j C_kj ‖a_j‖², (B, m): the trace of the sum over units, no n × n matrix formed."""
    cur = _curvature(net, params, x)
    lap = jnp.zeros((x.shape[0], net.n_outputs), x.dtype)
    if cur.first is not None:
        lap = lap + cur.first @ jnp.sum(params[0]["W"] ** 2, axis=1)
    if cur.rows is not None:
        lap = lap + jnp.sum(_squared_rows_weighted(cur), axis=0)
    if cur.softmax is not None:
        lap = lap + jax.vmap(_softmax_laplacian)(*cur.softmax)
    return lap


def hessian_vector_product(
    net: MLP, params: Params, x: jax.Array, g: jax.Array, r: jax.Array
) -> jax.Array:
    """Σ_k g_k ∇²_x f_k r, (B, n): the by-product rgy^0 of the R-backward pass (MATH.md §3)."""
    fwd = forward(net, params, x)
    (gys, _), _ = backward(net, params, fwd, g)
    rys, rzs = r_forward(net, params, fwd, r)
    return r_backward(net, params, fwd, gys, rys, rzs)[1]


def jacobian_vector_product(net: MLP, params: Params, x: jax.Array, r: jax.Array) -> jax.Array:
    """J r, (B, m) (or (m,) for one example): the R-forward pass."""
    fwd = forward(net, params, x)
    return r_forward(net, params, fwd, r)[0][-1]
