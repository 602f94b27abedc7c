"""Training through the Laplacian: a hand-written tangent pass.

A physics-informed loss ℓ(Δf(x; w)) needs ∂ℓ/∂w. The forward Laplacian of an MLP propagates, per
example and layer, the net input a, the input-tangents T (one column per chosen input) and the
Laplacian's running value λ (docs/math.md §8):

    a^l = W^l y^{l-1} + b^l,   A^l = W^l T^{l-1},   μ^l = W^l λ^{l-1},   q^l = Σ_p (A^l_p)²,
    y^l = σ(a^l),              T^l = s1 ∘ A^l,      λ^l = s1 ∘ μ^l + s2 ∘ q^l,

from y^0 = x, T^0 = I (the chosen columns), λ^0 = 0, with s1, s2, s3 = σ', σ'', σ''' of the
activation table; a linear output layer gives Δf = W^L λ^{L-1}.

Differentiating each line by hand gives its tangent-linear pass, linear in (dW, db, dx):

    ȧ = dW y + W ẏ + db,   Ȧ = dW T + W Ṫ,   μ̇ = dW λ + W λ̇,   q̇ = 2 Σ_p A_p ∘ Ȧ_p,
    ṡ1 = s2 ∘ ȧ,  ṡ2 = s3 ∘ ȧ,   ẏ = s1 ∘ ȧ,   Ṫ = ṡ1 ∘ A + s1 ∘ Ȧ,
    λ̇ = ṡ1 ∘ μ + s1 ∘ μ̇ + ṡ2 ∘ q + s2 ∘ q̇.

The transform is a `jax.custom_jvp` whose rule runs the forward pass once (keeping a, A, λ, μ, q,
s1..s3) and this tangent pass on top. Every product in it is a batched matrix product with a weight
matrix (W over B·(k+2) columns) or an elementwise scaling by a kept residual, so `jax.grad`, which
transposes the tangent pass, runs exactly the adjoint recursion: λ̄, T̄, ȳ travel down through Wᵀ,
W̄ gathers μ̄ λᵀ + Ā Tᵀ + ā yᵀ, and σ''' enters through ṡ2 — the reverse pass of second-order
J-prop, fused over the batch, with no autodiff through the forward code's loops. Forward mode
(`jax.jvp`, `jax.jacfwd`, `jax.hessian`) runs the tangent pass itself. At the first layer T^0 = I
is a constant: A^1 = W^1[:, dims] is shared by the batch and Ȧ^1 = dW^1[:, dims] costs no product.
Over many inputs the rule keeps T^1 = s1 ∘ A^1 and Ṫ^1 by their factors and the second layer
forms them, a slice of the batch at a time, where it reads them (`FirstTangents`).

The Hessian diagonal is the same pass before the sum over tangents (`per_tangent`): q_p = A_p²
and λ_p are kept per tangent, and W^L λ_p^{L-1} is column p of every output's diagonal. It pushes
2k + 1 streams through each layer (the Laplacian k + 2), so `jprop.hessian_diagonal` trains
through it for few inputs only (`_trained_curvature.PER_TANGENT_DIAGONAL_INPUTS`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .._program import broadcasting
from ..models._activations import activation_function, is_linear, slopes
from ..models._mlp import MLP, Params
from . import _closed


def supports(net: MLP) -> bool:
    """The tangent pass covers elementwise activations; a softmax output is left to autodiff."""
    return net.output != "softmax"


def columns(w: jax.Array, dims: Any) -> jax.Array:
    """W^1 applied to the input directions T^0, in layout (1 or B, k, n_1). `dims` is None (all n
    coordinates, T^0 = I), a tuple of coordinates (the chosen columns of W^1, as rows), an integer
    array of coordinates, (k,) shared by the batch or (B, k) per example (the same, gathered), or
    a float array of direction vectors, (k, n) shared or (B, k, n) per example (D W^1ᵀ)."""
    if dims is None:
        return w.T[None]
    if isinstance(dims, tuple):
        return w[:, list(dims)].T[None]
    if jnp.issubdtype(dims.dtype, jnp.integer):  # gathered columns, only they transposed
        rows = jnp.moveaxis(jnp.take(w, dims, axis=1), 0, -1)
        return rows[None] if dims.ndim == 1 else rows
    return (dims @ w.T)[None] if dims.ndim == 2 else times_wt(dims, w)


def times_wt(t: jax.Array, w: jax.Array) -> jax.Array:
    """t (B, k, n_{l-1}) @ Wᵀ as one (B·k × n_{l-1}) @ (n_{l-1} × n_l) product. Flattened, its
    transpose for W̄ is one product contracting B·k, which compilers run as a plain matrix product
    (contracting the two axes B and k apart is not one); `benchmarks.pinn_step` times the result."""
    return (t.reshape(-1, t.shape[-1]) @ w.T).reshape(*t.shape[:-1], w.shape[0])


def times_w(p: jax.Array, w: jax.Array) -> jax.Array:
    """p (B, m, n_l) @ W (n_l × n_{l-1}) as one flat (B·m × n_l) product: sensitivities carried
    back through a layer."""
    return (p.reshape(-1, p.shape[-1]) @ w).reshape(*p.shape[:-1], w.shape[1])


UNROLLED_TANGENTS = 8


def sum_tangents(v: jax.Array) -> jax.Array:
    """Σ_p v[:, p] over the tangent axis of v (B, k, n). Up to `UNROLLED_TANGENTS` tangents the
    sum is written as k - 1 additions, which XLA fuses with the products around it into one
    elementwise loop; a `reduce` over the middle axis can instead be fused into a matrix-product
    kernel and slow it down. Above `UNROLLED_TANGENTS` the unrolled form costs more than it saves
    and the reduction is kept (`benchmarks.pinn_step` races both)."""
    if v.shape[1] > UNROLLED_TANGENTS:
        return jnp.sum(v, axis=1)
    parts = [part[:, 0] for part in jnp.split(v, v.shape[1], axis=1)]  # transposes to a concat
    return sum(parts[1:], parts[0])


def scale_tangents(s: jax.Array, v: jax.Array) -> jax.Array:
    """s (B, n) times each tangent v[:, p] of v (B or 1, k, n), stacked to (B, k, n). Written per
    tangent (up to `UNROLLED_TANGENTS`) so that its transpose in s, Σ_p v[:, p] ∘ c[:, p], is again
    k - 1 fused additions rather than a reduction over the middle axis (see `sum_tangents`)."""
    k = v.shape[1]
    if k > UNROLLED_TANGENTS:
        return s[:, None, :] * v
    return jnp.stack([s * v[:, p] for p in range(k)], axis=1)


def times_few_wt(y: jax.Array, dw: jax.Array) -> jax.Array:
    """y (B, n_0) @ dWᵀ for a tangent dW (n_1 × n_0). With few inputs (n_0 ≤ `UNROLLED_TANGENTS`)
    it is written as n_0 scaled columns of dW, so that its transpose in dW is n_0 sums over the
    batch: as a matrix product, B long and only n_0 wide, it makes a poorly shaped kernel."""
    if y.shape[-1] > UNROLLED_TANGENTS:
        return y @ dw.T
    return sum(y[:, p, None] * dw[:, p] for p in range(y.shape[-1]))


def scale(s: jax.Array, v: jax.Array) -> jax.Array:
    """s (B, n_l) times v of shape (B, n_l) or (B, k, n_l): each example's units scaled alike."""
    return s * v if v.ndim == s.ndim else s[:, None, :] * v


RECOMPUTED_PIECES = 4
RECOMPUTED_FROM = 2**22


def recomputed(s1: jax.Array, big_a: jax.Array, hidden: int) -> bool:
    """Whether the first layer's tangents T¹ = s1 ∘ A¹ are kept by their factors
    (`FirstTangents`): A¹ shared by the batch, over more than `UNROLLED_TANGENTS` tangents of more
    than one example, where the tangents of all `hidden` units together hold at least
    `RECOMPUTED_FROM` entries, and where JAX can transpose a loop inside a rule
    (`_closed.RULES_MAY_LOOP`). Forming T¹ again in slices saves memory, not operations: below
    that size the step's temporaries are small and the slices cost more than they save
    (`benchmarks.high_dim` times the exact step and the estimates, `benchmarks.pinn_step` the
    step over 32 inputs)."""
    batch, k = s1.shape[0], big_a.shape[1]
    return (
        big_a.shape[0] == 1
        and k > UNROLLED_TANGENTS
        and batch > 1
        and batch * k * hidden >= RECOMPUTED_FROM
        and _closed.RULES_MAY_LOOP
    )


class FirstTangents(NamedTuple):
    """The first layer's tangents T¹ = s1 ∘ A¹ (B, k, n_1), A¹ (k, n_1) shared by the batch, kept
    by their two factors, and their tangent Ṫ¹ = ṡ1 ∘ A¹ + s1 ∘ Ȧ¹ by its own (`s1_dot`,
    `columns_dot`; None in the forward pass).

    The second layer reads them only through Ȧ² = T¹ dW²ᵀ + Ṫ¹ W²ᵀ, which `second_layer` forms
    `RECOMPUTED_PIECES` slices of the batch at a time, each slice of T¹ and Ṫ¹ formed inside the
    loop (`jax.checkpoint`). Reverse mode then forms T¹ again slice by slice rather than holding
    the whole (B, k, n_1) array from the forward pass to the backward, and meets Ṫ¹'s cotangent a
    slice at a time too, as it does the broadcasts of s1 and A¹ that its transpose multiplies that
    cotangent by: none of these four arrays exists whole. At glibc's defaults, temporaries above
    32 MiB are mapped afresh on every call and their pages faulted in one by one
    (docs/benchmarks.md), so the smaller step also runs faster."""

    s1: jax.Array
    columns: jax.Array
    s1_dot: jax.Array | None = None
    columns_dot: jax.Array | None = None

    def second_layer(self, dw: jax.Array, w: jax.Array) -> jax.Array:
        def one(e):  # one example's T¹ dWᵀ + Ṫ¹ Wᵀ (k, n_2)
            s, s_dot = e
            t_dot = s_dot * self.columns + s * self.columns_dot
            return (s * self.columns) @ dw.T + t_dot @ w.T

        size = -(-self.s1.shape[0] // RECOMPUTED_PIECES)
        return jax.lax.map(jax.checkpoint(one), (self.s1, self.s1_dot), batch_size=size)


def _squares(big_a: jax.Array, other: jax.Array, per_tangent: bool) -> jax.Array:
    """Σ_p A_p ∘ O_p over the tangents, or each tangent's A_p ∘ O_p kept apart (`per_tangent`)."""
    return big_a * other if per_tangent else sum_tangents(big_a * other)


def _forward(
    net: MLP,
    params: Params,
    x: jax.Array,
    dims,
    per_tangent: bool = False,
    drift=False,
    b: jax.Array | None = None,
):
    """The forward Laplacian pass over a batch x (B, n); returns (Δf (B, m), residuals). With
    `per_tangent`, λ keeps one row per tangent and the result is the Hessian diagonal (B, k, m).
    With `drift`, the result is (f, b·∇f, Δf): the value and the derivative along b (x itself when
    b is None) ride along, the latter as one more tangent stream G^l = W^l g^{l-1},
    g^l = s1 ∘ G^l, left out of q, which starts from G^1 = W^1 b — for b = x, the first layer's
    own product."""
    y, t, lam, g, kept = x, None, None, None, []
    t_kept = None  # T as the tangent pass reads it (the first layer's by its factors)
    names = net.activations()
    for index, (layer, name) in enumerate(zip(params, names)):
        w = layer["W"]
        product = y @ w.T
        a = product + layer["b"]
        big_a = columns(w, dims) if t is None else times_wt(t, w)
        mu = None if lam is None else times_wt(lam, w)
        big_g = None
        if drift:
            big_g = g @ w.T if g is not None else product if b is None else b @ w.T
        last = index == net.depth - 1
        if last and is_linear(name):
            kept.append((y, t_kept, lam, g, None))
            if mu is None:  # no hidden layer: every second derivative is 0
                mu = jnp.zeros(a.shape[:1] + big_a.shape[1 if per_tangent else 2 :], a.dtype)
            return ((a, big_g, mu) if drift else mu), kept
        y_next = activation_function(name)(a)
        s1, s2, s3 = slopes(name, a, y_next, orders=3)
        q = _squares(big_a, big_a, per_tangent)
        lam_next = scale(s2, jnp.broadcast_to(q, (a.shape[0], *q.shape[1:])))
        if mu is not None:
            lam_next = lam_next + scale(s1, mu)
        kept.append((y, t_kept, lam, g, (big_a, mu, q, s1, s2, s3, big_g)))
        y, t, lam = y_next, scale(s1, big_a), lam_next
        sliced = index == 0 and recomputed(s1, big_a, sum(net.sizes[1:-1]))
        t_kept = FirstTangents(s1, big_a[0]) if sliced else t
        g = None if big_g is None else s1 * big_g
    return ((y, g, lam) if drift else lam), kept


def first_order_tangent(layer, d_layer, y, t, y_dot, t_dot, dims):
    """One layer's ȧ = dW y + W ẏ + db and Ȧ = dW T + W Ṫ (a None tangent is zero)."""
    a_dot, big_a_dot, _ = _first_order(layer, d_layer, y, t, y_dot, t_dot, dims)
    return a_dot, big_a_dot


def _first_order(layer, d_layer, y, t, y_dot, t_dot, dims):
    """`first_order_tangent`, and ȧ - db, the tangent of the product W y."""
    w, dw = layer["W"], d_layer["W"]
    product_dot = times_few_wt(y, dw)
    if y_dot is not None:
        product_dot = product_dot + y_dot @ w.T
    if isinstance(t_dot, FirstTangents):
        return product_dot + d_layer["b"], t_dot.second_layer(dw, w), product_dot
    big_a_dot = columns(dw, dims) if t is None else times_wt(t, dw)
    if t_dot is not None:
        big_a_dot = big_a_dot + times_wt(t_dot, w)
    return product_dot + d_layer["b"], big_a_dot, product_dot


def _tangent(
    net: MLP,
    params: Params,
    kept,
    dparams: Params,
    dx,
    dims,
    per_tangent=False,
    d_dims=None,
    drift=False,
    b=None,
    db=None,
):
    """The tangent-linear pass: d(Δf) for the parameter tangent `dparams`, input tangent `dx` and,
    for input directions given as vectors, their tangent `d_dims` (None for zero), reading the
    residuals the forward pass kept; with `drift`, the tangents of (f, b·∇f, Δf), b's tangent
    `db` (None for zero; b = None is x itself, whose tangent is dx)."""
    y_dot, t_dot, lam_dot, g_dot = dx, None, None, None
    for index, (layer, d_layer, (y, t, lam, g, curved)) in enumerate(zip(params, dparams, kept)):
        w, dw = layer["W"], d_layer["W"]
        a_dot, big_a_dot, product_dot = _first_order(layer, d_layer, y, t, y_dot, t_dot, dims)
        if index == 0 and d_dims is not None:  # A^1 = D W^1ᵀ moves with D too
            big_a_dot = big_a_dot + columns(w, d_dims)
        mu_dot = None if lam is None else times_wt(lam, dw)
        if lam_dot is not None:
            mu_dot = times_wt(lam_dot, w) if mu_dot is None else mu_dot + times_wt(lam_dot, w)
        # G^1 = W^1 x moves as the product does (W^1 b with W^1 and b); G^l = W^l g^{l-1} as
        # A's columns do
        big_g_dot = None
        if drift and g is not None:
            big_g_dot = g @ dw.T + g_dot @ w.T
        elif drift and b is None:
            big_g_dot = product_dot
        elif drift:
            big_g_dot = b @ dw.T if db is None else b @ dw.T + db @ w.T
        if curved is None:  # the linear output layer: d(Δf) = dW λ + W λ̇
            if mu_dot is None:  # no hidden layer: Δf = 0 whatever the weights
                rest = big_a_dot.shape[1 if per_tangent else 2 :]
                mu_dot = jnp.zeros(a_dot.shape[:1] + rest, a_dot.dtype)
            return (a_dot, big_g_dot, mu_dot) if drift else mu_dot
        big_a, mu, q, s1, s2, s3, big_g = curved
        s1_dot, s2_dot = s2 * a_dot, s3 * a_dot
        q_dot = 2 * _squares(big_a, big_a_dot, per_tangent)
        # ṡ ∘ v with v per tangent (the diagonal's q, μ) is written per tangent, as T's is below
        times_dot = scale_tangents if per_tangent else scale
        lam_dot = times_dot(s2_dot, jnp.broadcast_to(q, q_dot.shape)) + scale(s2, q_dot)
        if mu is not None:
            lam_dot = lam_dot + times_dot(s1_dot, mu) + scale(s1, mu_dot)
        t_next = kept[index + 1][1] if index + 1 < len(kept) else None
        if isinstance(t_next, FirstTangents):  # formed by the next layer, a slice at a time
            t_dot = t_next._replace(s1_dot=s1_dot, columns_dot=big_a_dot[0])
        else:
            t_dot = scale_tangents(s1_dot, big_a) + scale(s1, big_a_dot)
        if drift:
            g_dot = s1_dot * big_g + s1 * big_g_dot
        y_dot = s1 * a_dot
    return (y_dot, g_dot, lam_dot) if drift else lam_dot


def instantiate(tree: Any, like: Any) -> Any:
    return jax.tree.map(
        lambda t, p: jnp.zeros_like(p) if isinstance(t, SymbolicZero) else t,
        tree,
        like,
        is_leaf=lambda t: isinstance(t, SymbolicZero),
    )


def _trained(value, net: MLP, dims, per_tangent: bool, drift: bool = False):
    """`value(params, x, directions, b)` as a `jax.custom_jvp` whose rule runs the forward pass
    above and the tangent pass on top (each tangent's Hessian diagonal, swapped to (B, m, k), if
    `per_tangent`; (f, b·∇f, Δf) if `drift`, b = None standing for x). `directions` is None (the
    inputs `dims`) or an array of coordinates or direction vectors (see `columns`), which the rule
    differentiates too when they are vectors; it differentiates b too."""
    finish = (lambda v: jnp.swapaxes(v, -1, -2)) if per_tangent else (lambda v: v)

    @jax.custom_jvp
    def quantity(params, x, directions, b):
        return value(params, x, directions, b)

    def rule(primals, tangents):
        params, x, directions, b = primals
        dparams, dx, d_directions, db = tangents
        chosen = dims if directions is None else directions
        out, kept = _forward(net, params, x, chosen, per_tangent, drift, b)
        dx = None if isinstance(dx, SymbolicZero) else dx
        db = None if b is None or isinstance(db, SymbolicZero) else db
        moving = (
            directions is not None
            and jnp.issubdtype(directions.dtype, jnp.floating)
            and not isinstance(d_directions, SymbolicZero)
        )
        d_out = _tangent(
            net,
            params,
            kept,
            instantiate(dparams, params),
            dx,
            chosen,
            per_tangent,
            d_directions if moving else None,
            drift,
            b,
            db,
        )
        return finish(out), finish(d_out)

    quantity.defjvp(broadcasting(rule), symbolic_zeros=True)
    return quantity


def laplacian(net: MLP, dims: tuple[int, ...] | None):
    """The Laplacian (B, m) over the inputs `dims` (None: all), as a function
    `(params, x (B, n))` whose value is the forward pass above and whose derivatives run the
    tangent pass above. Over more inputs than the first layer has units it runs along that many
    directions instead (`fewer_directions`)."""
    trained = along(net, dims)
    if fewer_pay(net, net.n_inputs if dims is None else len(dims)):
        return lambda params, x: trained(
            params, x, fewer_directions(params[0]["W"], dims, net.n_inputs), None
        )
    return lambda params, x: trained(params, x, None, None)


def fewer_pay(net: MLP, k: int) -> bool:
    """Whether k input directions are more than the first layer's h₁ units (so `fewer_directions`
    gives fewer); a net with no hidden layer has a Laplacian of zero whatever the directions."""
    return net.depth > 1 and k > net.sizes[1]


def fewer_directions(w: jax.Array, directions: Any, n: int) -> jax.Array:
    """h₁ input directions D̂ (h₁, n) along which the forward Laplacian gives the same sum
    Σ_p d_pᵀ ∇²f d_p as the k > h₁ shared `directions` (None: all n inputs; a tuple or an integer
    array (k,) of coordinates; or vectors (k, n)), for a network whose input enters through
    a¹ = W¹x + b¹ (W¹ = `w`, h₁ × n).

    f depends on x only through a¹, so d_pᵀ ∇²f d_p = a_pᵀ ∇²_a f a_p with a_p = W¹d_p, and the sum
    is tr(∇²_a f · C) with C = Σ_p a_p a_pᵀ = AᵀA (A: the a_p as rows, k × h₁): it depends on the
    directions only through C. With C = LLᵀ (Cholesky), D̂ = L⁻¹AᵀD has D̂W¹ᵀ = L⁻¹AᵀA = Lᵀ, whose
    Gram matrix is LLᵀ = C: the same sum, exactly, along h₁ directions instead of k. D̂ moves
    with W¹ (JAX's derivatives of the Cholesky factor and the triangular solve), so every
    derivative is exact too.

    Where C has no Cholesky factor to working precision (A of rank below h₁, e.g. an all-zero
    first layer, or nearly so) that derivative would not be finite. D̂ = QᵀD (A = QR) is then held
    fixed: the value stays exact (D̂W¹ᵀ = R, RᵀR = C), and so does the first derivative in W¹, since
    W¹D̂ᵀD̂W¹ᵀ and W¹DᵀDW¹ᵀ agree to first order whenever the rows of D̂ span those of A's.
    """
    h, dtype = w.shape[0], w.dtype
    if jnp.finfo(dtype).bits < 32:  # LAPACK factors float32 and float64 only
        w = w.astype(jnp.float32)
    if directions is None:
        a, select = w.T, None
    elif isinstance(directions, tuple) or jnp.issubdtype(directions.dtype, jnp.integer):
        a, select = jnp.take(w, jnp.asarray(directions), axis=1).T, jnp.asarray(directions)
    else:
        select = directions.astype(w.dtype)
        a = select @ w.T

    def spread(m):  # M (h₁, k) -> M D (h₁, n)
        if select is None:
            return m
        if jnp.issubdtype(select.dtype, jnp.integer):
            return jnp.zeros((h, n), m.dtype).at[:, select].add(m)
        return m @ select

    gram = a.T @ a
    diagonal = jnp.diagonal(jnp.linalg.cholesky(jax.lax.stop_gradient(gram)))
    floor = jnp.sqrt(jnp.finfo(w.dtype).eps) * jnp.max(jnp.abs(diagonal))
    full_rank = jnp.all(jnp.isfinite(diagonal)) & (jnp.min(diagonal) > floor)

    def solved():  # L⁻¹Aᵀ, differentiable (a stand-in C = I where C has no factor)
        factor = jnp.linalg.cholesky(jnp.where(full_rank, gram, jnp.eye(h, dtype=gram.dtype)))
        return jax.scipy.linalg.solve_triangular(factor, a.T, lower=True)

    def fixed():  # Qᵀ, A's orthonormal basis, constant
        return jax.lax.stop_gradient(jnp.linalg.qr(a)[0].T)

    return spread(jax.lax.cond(full_rank, solved, fixed)).astype(dtype)


def along(
    net: MLP, dims: tuple[int, ...] | None = None, per_tangent: bool = False, drift: bool = False
):
    """Σ_p d_pᵀ ∇²f d_p (B, m) over input directions d_p, as a function
    `(params, x (B, n), directions, b=None)`, `directions` as `columns` reads them (None: the
    inputs `dims`); with `per_tangent`, each d_pᵀ ∇²f d_p kept apart, (B, m, k); with `drift`, the
    triple (f, b·∇f, Σ_p d_pᵀ ∇²f d_p) for a direction b (B, n), x itself when None. Its
    derivatives run the tangent pass above."""

    def value(params, x, directions, b):
        chosen = dims if directions is None else directions
        out = _forward(net, params, x, chosen, per_tangent, drift, b)[0]
        return jnp.swapaxes(out, -1, -2) if per_tangent else out

    trained = _trained(value, net, dims, per_tangent, drift)
    return lambda params, x, directions, b=None: trained(params, x, directions, b)


def diagonal(net: MLP, dims: tuple[int, ...] | None):
    """The Hessian diagonal (B, m, k) over the inputs `dims`, as a function `(params, x (B, n))`
    whose value is the closed form's sum over units (the faster forward) and whose derivatives run
    the tangent pass above with each tangent's λ kept apart."""
    trained = _trained(
        lambda params, x, _, __: _closed.hessian_diagonal(net, params, x, dims), net, dims, True
    )
    return lambda params, x: trained(params, x, None, None)
