"""Closed forms for a `jprop.MLP` over a batch x of shape (B, n) (docs/math.md §2 and §4).

Only the elementwise nonlinearities curve the map, so the input Hessian of output k is a sum of
rank-one terms over units (the "sum over hidden units"):

    ∇²_x f_k = Σ_l (J_z^l)ᵀ diag(s2^l ∘ B^l_{k,:}) J_z^l = Σ_j C_kj a_j a_jᵀ,

with a_j the rows of the net-input Jacobians J_z^l = ∂z^l/∂x (propagated forwards) and C = [s2^l ∘ B^l]
the curvature weights (B^l = ∂f/∂y^l, propagated backwards; B^L = I). The Laplacian and the Hessian
diagonal reuse a_j and C without forming any n × n matrix; a softmax output adds its own
second-derivative tensor (derived below).

Layout is chosen for large matrix products (docs/math.md §4: layout matters as much as flops): forward
tangents are held example-major, T^l[b, p, :] = ∂z^l_b/∂x_p of shape (B, n, n_l), so each layer is
one (B·n × n_{l-1}) @ (n_{l-1} × n_l) product and each example's rows a_j are the columns of one
contiguous (n × N) block, ready for its Gram matrix; sensitivities are (B, m, n_l), one
(B·m × n_l) @ (n_l × n_{l-1}) product per layer. The first layer's rows a_j = W^1_j are the same for
every example, and are used as such rather than copied per example.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._batch import strided_map, strided_steps
from ..models._activations import is_linear, softmax_jacobian_times
from ..models._mlp import MLP, Params
from ..models._passes import Forward, backward, forward, r_backward, r_forward


def _rows_to_z(fwd: Forward, layer: int, name: str, rows: jax.Array) -> jax.Array:
    """rows (B, m, n_l) of ∂f/∂y^l times ∂y^l/∂z^l: s1-scaling, or softmax's y∘(· − ⟨y, ·⟩)."""
    if name == "softmax":
        return softmax_jacobian_times(fwd.ys[layer + 1][:, None, :], rows)
    return fwd.s1[layer][:, None, :] * rows


def _first_columns(params: Params, dims: tuple[int, ...] | None) -> jax.Array:
    """W^1, or only its columns for the chosen inputs `dims` (their tangents alone are pushed)."""
    w = params[0]["W"]
    return w if dims is None else w[:, list(dims)]


def _tangents(net: MLP, params: Params, fwd: Forward, dims=None) -> list[jax.Array]:
    """T^l = ∂z^l/∂x in layout (B, k, n_l) for l = 1..L, over the k chosen inputs (all: k = n);
    T^1 = W^1ᵀ is kept as (1, k, n_1)."""
    ts = [_first_columns(params, dims).T[None]]
    for layer in range(1, net.depth):
        ts.append((ts[-1] * fwd.s1[layer - 1][:, None, :]) @ params[layer]["W"].T)
    return ts


def _sensitivities(net: MLP, params: Params, fwd: Forward) -> list[jax.Array]:
    """B^l = ∂f/∂y^l, (B, m, n_l), for l = 1..L: B^L = I, B^{l-1} = (∂f/∂z^l) W^l."""
    batch, m = fwd.ys[0].shape[0], net.n_outputs
    bs = [jnp.broadcast_to(jnp.eye(m, dtype=fwd.ys[-1].dtype), (batch, m, m))]
    for layer in reversed(range(1, net.depth)):
        bs.insert(0, _rows_to_z(fwd, layer, net.activations()[layer], bs[0]) @ params[layer]["W"])
    return bs


def jacobian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """J (B, m, n): forward propagation when n < m, back-propagation otherwise (docs/math.md §2)."""
    fwd = forward(net, params, x)
    output = net.activations()[-1]
    if net.n_inputs < net.n_outputs:
        t = _tangents(net, params, fwd)[-1]  # ∂z^L/∂x, (B, n, m)
        t = jnp.broadcast_to(t, (x.shape[0], *t.shape[1:]))
        if output == "softmax":
            return jnp.swapaxes(softmax_jacobian_times(fwd.ys[-1][:, None, :], t), 1, 2)
        return jnp.swapaxes(fwd.s1[-1][:, None, :] * t, 1, 2)
    b1 = _sensitivities(net, params, fwd)[0]  # ∂f/∂y^1, (B, m, n_1)
    return _rows_to_z(fwd, 0, net.activations()[0], b1) @ params[0]["W"]


class _Curvature(NamedTuple):
    first: jax.Array | None  # C^1 (B, m, n_1) for a curved first layer (rows W^1), else None
    rows: tuple[jax.Array, ...]  # a_j of each later curved layer, layout (B, n, n_l)
    weights: tuple[jax.Array, ...]  # their C, (B, m, n_l)
    softmax: tuple[jax.Array, jax.Array] | None  # (y (B, m), G = ∂z^L/∂x as (B, m, n))


def _curvature(net: MLP, params: Params, x: jax.Array, dims=None) -> _Curvature:
    fwd = forward(net, params, x)
    ts = _tangents(net, params, fwd, dims)
    bs = _sensitivities(net, params, fwd)
    first, rows, weights = None, [], []
    for layer, name in enumerate(net.activations()):
        if name == "softmax" or is_linear(name):
            continue
        c = bs[layer] * fwd.s2[layer][:, None, :]
        if layer == 0:
            first = c
        else:
            rows.append(ts[layer])
            weights.append(c)
    softmax = None
    if net.output == "softmax":
        g = jnp.broadcast_to(ts[-1], (x.shape[0], *ts[-1].shape[1:]))
        softmax = (fwd.ys[-1], jnp.swapaxes(g, 1, 2))
    return _Curvature(first, tuple(rows), tuple(weights), softmax)


# Softmax output: with y = softmax(z), ∂²y_k/∂z∂z = y_k [(e_k − y)(e_k − y)ᵀ − diag(y) + y yᵀ].
# Pulled back through G = ∂z^L/∂x (rows G_j), with q = Gᵀy:
#     ∇²_x f_k (softmax part) = y_k ((G_k − q)(G_k − q)ᵀ − C),   C = Σ_j y_j (G_j − q)(G_j − q)ᵀ.
# Both terms are unchanged by shifting every G_j by one row, and are formed from D_j = G_j − G_c,
# c the most probable class: when y_c → 1 (a confident, saturated softmax) q → G_c, and the plain
# forms G_k − q and Σ_j y_j G_j G_jᵀ − q qᵀ cancel to a few digits, where a = Σ_j y_j D_j,
# G_k − q = D_k − a and C = Σ_j y_j D_j D_jᵀ − a aᵀ are sums of small terms.
# Per example: y (m,), g (m, n).
def _softmax_parts(y: jax.Array, g: jax.Array):
    """(d, a, u): the rows shifted by the most probable class's, their mean and u_k = G_k − q."""
    d = g - g[jnp.argmax(y)]
    a = y @ d
    return d, a, d - a


def _softmax_hessian(y, g):
    d, a, u = _softmax_parts(y, g)
    covariance = (d * y[:, None]).T @ d - jnp.outer(a, a)
    return y[:, None, None] * (u[:, :, None] * u[:, None, :] - covariance)


def _softmax_laplacian(y, g):
    d, a, u = _softmax_parts(y, g)
    return y * (jnp.sum(u * u, axis=1) - (y @ jnp.sum(d * d, axis=1) - a @ a))


def _softmax_diagonal(y, g):
    d, a, u = _softmax_parts(y, g)
    return y[:, None] * (u * u - (y @ (d * d) - a * a))


# Examples per step of the Hessian contraction: small enough for the (chunk, m, n, N) intermediate
# to stay in cache, large enough to amortise the loop (`benchmarks.closed_forms` times the result).
CONTRACTION_CHUNK = 8
# The first layer's outer products W^1_j ⊗ W^1_j (their triangles) are formed once, shared by the
# batch, while n_1·n² stays this small (elements); beyond it (very wide inputs) the first layer's
# rows join the per-example contraction instead.
MAX_FIRST_LAYER_PRODUCTS = 1 << 22


def hessian(net: MLP, params: Params, x: jax.Array) -> jax.Array:
    """∇²_x f_k for every example and output, (B, m, n, n), by the sum over hidden units.

    One pass over cache-sized chunks of examples, each adding up, per example, the later layers'
    weighted Gram matrix (C ∘ Aᵀ) Aᵀᵀ (an (m·n × N) @ (N × n) product), the first layer's part
    (read from its triangle `first_layer_triangle`, computed batch-wide beforehand) and a softmax
    output's own term. Each chunk's Hessians are built in one place rather than by three
    full-size passes added afterwards, which would each write and read the whole result.
    """
    n, m, batch = net.n_inputs, net.n_outputs, x.shape[0]
    cur = _curvature(net, params, x)
    first, rows, weights = cur.first, cur.rows, cur.weights
    w1 = params[0]["W"]
    if first is not None and w1.shape[0] * n * n > MAX_FIRST_LAYER_PRODUCTS:
        rows = (jnp.broadcast_to(w1.T[None], (batch, n, w1.shape[0])), *rows)
        weights, first = (first, *weights), None
    gram = (jnp.concatenate(weights, -1), jnp.concatenate(rows, -1)) if rows else None
    per_example = {
        "gram": gram,
        "first": None if first is None else first_layer_triangle(first, w1),
        "softmax": cur.softmax,
    }
    per_example = {k: v for k, v in per_example.items() if v is not None}
    if not per_example:  # nothing curved: a linear map
        return jnp.zeros((batch, m, n, n), x.dtype)

    def one(parts):
        h = jnp.zeros((m, n, n), x.dtype)
        if "gram" in parts:
            c, a_t = parts["gram"]  # c (m, N), a_t (n, N): Σ_j c_kj a_j a_jᵀ
            h = h + symmetric_gram(c[:, None, :] * a_t[None], a_t)
        if "first" in parts:
            h = h + parts["first"][:, triangle_index(n)]
        if "softmax" in parts:
            h = h + _softmax_hessian(*parts["softmax"])
        return h

    return contract_in_chunks(one, per_example, batch)


# JAX before 0.10 fails to transpose a loop written inside a `jax.custom_jvp` rule, as reverse
# mode through a rule does; there a rule contracts its whole batch at once (`in_rule=True`).
RULES_MAY_LOOP = jax.__version_info__ >= (0, 10)


def contract_in_chunks(one, per_example, batch: int, in_rule: bool = False):
    """`one` (an example's contraction) over the batch, CONTRACTION_CHUNK examples at a time in
    strided chunks (`_batch.strided_map`: a batch sharded over devices stays split), or
    contiguous ones (`jax.lax.map`) when the batch has no even split. `in_rule`: the call is
    inside a `jax.custom_jvp` rule, mapped whole where JAX cannot transpose the loop."""
    if in_rule and not RULES_MAY_LOOP:
        return jax.vmap(one)(per_example)
    steps = strided_steps(batch, CONTRACTION_CHUNK)
    if steps is None:
        return jax.lax.map(one, per_example, batch_size=CONTRACTION_CHUNK)
    return strided_map(jax.vmap(one), per_example, steps)


def triangle_index(n: int) -> np.ndarray:
    """(n, n) positions into the upper triangle's n(n+1)/2 entries, row by row: the symmetric
    matrix read back from its triangle."""
    rows, cols = np.triu_indices(n)
    index = np.empty((n, n), np.int32)
    index[rows, cols] = index[cols, rows] = np.arange(rows.size)
    return index


def first_layer_triangle(first: jax.Array, w1: jax.Array) -> jax.Array:
    """The first layer's part Σ_j C^1_kj W^1_j W^1_jᵀ of every example's Hessian, as its upper
    triangle (B, m, n(n+1)/2): one batch-wide product of C^1 (B·m × n_1) with the outer products
    W^1_j ⊗ W^1_j (n_1 × n(n+1)/2, shared by the batch). The triangle halves the products of the
    full n² outer products."""
    n = w1.shape[1]
    rows, cols = np.triu_indices(n)
    # One gather from the full outer products. (Two gathers of W^1, w1[:, rows] * w1[:, cols],
    # compiled to wrong numbers under jax 0.8.0 when W^1 is a constant of the jitted program.)
    outer = (w1[:, :, None] * w1[:, None, :]).reshape(w1.shape[0], n * n)
    products = jnp.take(outer, jnp.asarray(rows * n + cols), axis=1)
    batch, m, units = first.shape
    return (first.reshape(-1, units) @ products).reshape(batch, m, -1)


def symmetric_gram(left: jax.Array, a_t: jax.Array) -> jax.Array:
    """left (m, n, N) @ a_tᵀ (N, n) for a result known to be symmetric in its last two axes
    (left_k = c_k ∘ a_t): the first half of the rows in full, the lower-right block, and the
    lower-left block mirrored from the upper-right — 3/4 of the products."""
    n = a_t.shape[0]
    half = n // 2
    if half < 2:
        return left @ a_t.T
    top = left[:, :half] @ a_t.T  # (m, half, n)
    bottom = left[:, half:] @ a_t[half:].T  # (m, n - half, n - half)
    mirrored = jnp.swapaxes(top[:, :, half:], 1, 2)
    return jnp.concatenate([top, jnp.concatenate([mirrored, bottom], axis=2)], axis=1)


def _squared_rows_weighted(rows: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ_j C_kj (a_j)_p² over one later curved layer: its part of the Hessian diagonal, (B, m, n).

    One output: an elementwise product reduced over the minor (unit) axis, which XLA fuses into one
    pass (a (B, n, N) -> (B, n) reduction with tiny n would be a poorly shaped kernel). Several
    outputs: one batched (m × N) @ (N × n) product per example, which does the work of every
    output at once where the fused form would repeat it per output.
    """
    squares, c = rows**2, weights  # (B, n, n_l), (B, m, n_l)
    n = squares.shape[1]
    if c.shape[1] == 1 and n <= _MAX_UNROLLED_INPUTS:
        return jnp.stack([jnp.sum(squares[:, p] * c[:, 0], -1) for p in range(n)], -1)[:, None]
    if c.shape[1] == 1:
        return jnp.sum(squares * c, axis=-1)[:, None, :]
    return c @ jnp.swapaxes(squares, 1, 2)


# Inputs up to which the one-output diagonal is reduced in one pass per input.
_MAX_UNROLLED_INPUTS = 8


def hessian_diagonal(net: MLP, params: Params, x: jax.Array, dims=None) -> jax.Array:
    """∂²f_k/∂x_i², (B, m, k): Σ_j C_kj a_ji², the Hessian's diagonal over the inputs `dims`
    (all by default), no n × n matrix formed."""
    cur = _curvature(net, params, x, dims)
    k = net.n_inputs if dims is None else len(dims)
    diag = jnp.zeros((x.shape[0], net.n_outputs, k), x.dtype)
    if cur.first is not None:
        diag = diag + cur.first @ (_first_columns(params, dims) ** 2)
    for rows, weights in zip(cur.rows, cur.weights):
        diag = diag + _squared_rows_weighted(rows, weights)
    if cur.softmax is not None:
        diag = diag + jax.vmap(_softmax_diagonal)(*cur.softmax)
    return diag


def laplacian(net: MLP, params: Params, x: jax.Array, dims=None) -> jax.Array:
    """Δf_k = Σ_j C_kj ‖a_j‖², (B, m): the trace of the sum over units over the inputs `dims`
    (all by default), no n × n matrix formed."""
    cur = _curvature(net, params, x, dims)
    lap = jnp.zeros((x.shape[0], net.n_outputs), x.dtype)
    if cur.first is not None:
        lap = lap + cur.first @ jnp.sum(_first_columns(params, dims) ** 2, axis=1)
    for rows, weights in zip(cur.rows, cur.weights):  # layer by layer: concatenated, XLA's CPU
        if weights.shape[1] == 1:  # one output: one fused reduction, no matrix product
            lap = lap + jnp.sum(rows**2 * weights, axis=(1, 2))[:, None]
        else:
            lap = lap + jnp.sum(_squared_rows_weighted(rows, weights), axis=-1)
    if cur.softmax is not None:
        lap = lap + jax.vmap(_softmax_laplacian)(*cur.softmax)
    return lap


def hessian_vector_product(
    net: MLP, params: Params, x: jax.Array, g: jax.Array, r: jax.Array
) -> jax.Array:
    """Σ_k g_k ∇²_x f_k r, (B, n): the by-product rgy^0 of the R-backward pass (docs/math.md §3)."""
    fwd = forward(net, params, x)
    (gys, _), _ = backward(net, params, fwd, g)
    rys, rzs = r_forward(net, params, fwd, r)
    return r_backward(net, params, fwd, gys, rys, rzs)[1]


def jacobian_vector_product(net: MLP, params: Params, x: jax.Array, r: jax.Array) -> jax.Array:
    """J r, (B, m) (or (m,) for one example): the R-forward pass."""
    fwd = forward(net, params, x)
    return r_forward(net, params, fwd, r)[0][-1]
