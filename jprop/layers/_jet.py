"""Jets: a layer's value with its input tangents and its running Laplacian, and the rules that carry
them through the operations networks are built of.

A jet of a hidden quantity h(x) over a batch holds

    value    h                       (B, w)
    tangents T_p = ∂h/∂x_p           (B or 1, k, w), one row per chosen input p; None when h does
                                     not depend on x
    lap      λ = Σ_p ∂²h/∂x_p²        (B or 1, w); with `per_tangent`, each ∂²h/∂x_p² kept apart,
                                     (B or 1, k, w) — the Hessian diagonal; None when zero
    drift    g = x·∇h                (B, w), the derivative along x itself, when asked for: one
                                     more tangent, left out of the Laplacian's sums

and a pass asks for as much as it needs: the value alone (the network's output), value and
tangents (the Jacobian's columns, a Jacobian-vector product) or all three (the Laplacian, the
Hessian diagonal). Every operation maps jets to jets by the chain and product rules
(docs/math.md, "Networks of layers"):

    linear     W h + b:      T ↦ W T,                λ ↦ W λ
    activate   σ(a):         T ↦ σ'(a) ∘ T,          λ ↦ σ'(a) ∘ λ + σ''(a) ∘ Σ_p T_p²
    multiply   u ∘ v:        T ↦ u ∘ T_v + v ∘ T_u,  λ ↦ u ∘ λ_v + v ∘ λ_u + 2 Σ_p T_u,p ∘ T_v,p
    waves      [cos a, sin a]: activate's rules, each slope read from the one cosine and sine
    add, scale, concatenate: linear, term by term.

The drift g follows T's rules for one tangent. The input's tangents are the identity's columns: the
first linear map turns them into the chosen columns of its weight, shared by the batch (shape
(1, k, w)) and never copied per example; the input's drift is x itself, so the first linear map's
drift is its own product W x, and `jax.grad` forms W's gradient from that one product.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ..models._activations import activation_function, is_linear, sine_and_cosine, slopes
from ..quantities._forward_laplacian import columns, scale_tangents, sum_tangents, times_wt


@dataclasses.dataclass(frozen=True)
class Identity:
    """The input's tangents: the columns `dims` of the identity (all n when None)."""

    dims: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class Jet:
    """A quantity with its input tangents and Laplacian (None: exactly zero, or not asked for)."""

    value: jax.Array
    tangents: Any = None  # jax.Array | Identity | None
    lap: jax.Array | None = None
    per_tangent: bool = False
    second: bool = True  # carry the Laplacian (False: value and tangents only)
    drift: jax.Array | None = None  # x·∇h, when asked for (the input's is x itself)

    def with_parts(self, value, tangents=None, lap=None, drift=None) -> Jet:
        lap = lap if self.second else None
        return Jet(value, tangents, lap, self.per_tangent, self.second, drift)


def _arrays(h: Jet) -> Jet:
    """h with the input's tangents (an `Identity`) written out as the identity's chosen columns,
    (1 or B, k, n): what every operation but `linear` reads. `linear` takes them as the chosen
    columns of its weight instead, and a network whose every layer begins with a linear map never
    forms them; a layer that adds the input itself to a branch (a residual block on x) does."""
    if not isinstance(h.tangents, Identity):
        return h
    eye = jnp.eye(h.value.shape[-1], dtype=h.value.dtype)
    return dataclasses.replace(h, tangents=columns(eye, h.tangents.dims))


def _plus(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
    """a + b where None stands for an exact zero."""
    if a is None:
        return b
    return a if b is None else a + b


@jax.custom_jvp
def _scaled_tangents(s: jax.Array, v: jax.Array) -> jax.Array:
    """s (B, w) scaling each tangent of v (B or 1, k, w): one broadcast product. Its derivative
    rule writes ṡ's term per tangent, so that under `jax.grad` the step sums Σ_p T̄_p ∘ T_p as
    k - 1 additions fused with the elementwise work around them (as `scale_tangents` does for
    the MLP's passes), where JAX's own transpose of the broadcast is a reduction over the
    tangents' axis, a kernel of its own with its own temporaries."""
    return s[:, None, :] * v


@_scaled_tangents.defjvp
def _scaled_tangents_jvp(primals, tangents):
    """The product rule, ṡ's term per tangent (`scale_tangents`)."""
    (s, v), (s_dot, v_dot) = primals, tangents
    return _scaled_tangents(s, v), scale_tangents(s_dot, v) + s[:, None, :] * v_dot


def scale(s: jax.Array, v: jax.Array) -> jax.Array:
    """s (B, w) scaling v (B, w), or each tangent of v (B or 1, k, w)."""
    return s * v if v.ndim == s.ndim else _scaled_tangents(s, v)


def _times(s: jax.Array, v: jax.Array | None) -> jax.Array | None:
    """s (B, w) scaling v (B, w) or each tangent of v (B, k, w); None stays None."""
    return None if v is None else scale(s, v)


def linear(h: Jet, w: jax.Array, b: jax.Array | None = None) -> Jet:
    """W h + b: the tangents, the Laplacian and the drift go through W alone."""
    product = h.value @ w.T
    value = product if b is None else product + b
    # the input's drift is x itself (the same array): W x is the product just formed
    drift = None if h.drift is None else product if h.drift is h.value else h.drift @ w.T
    t = h.tangents
    if isinstance(t, Identity):
        t = columns(w, t.dims)
    elif t is not None:
        t = times_wt(t, w)
    lap = None
    if h.lap is not None:
        lap = times_wt(h.lap, w) if h.per_tangent else h.lap @ w.T
    return h.with_parts(value, t, lap, drift)


def activate(h: Jet, name: str) -> Jet:
    """σ(h) for an elementwise activation `name`: σ' scales the tangents and the Laplacian, and
    σ'' adds the tangents' squares."""
    if is_linear(name):
        return h
    h = _arrays(h)
    y = activation_function(name)(h.value)
    if h.tangents is None:
        return h.with_parts(
            y, drift=None if h.drift is None else _first_slope(name, h, y) * h.drift
        )
    t = h.tangents
    if not h.second:
        s1 = _first_slope(name, h, y)
        return h.with_parts(y, scale(s1, t), drift=_times(s1, h.drift))
    return _with_slopes(h, y, *slopes(name, h.value, y, orders=2))


def _with_slopes(h: Jet, y: jax.Array, s1: jax.Array, s2: jax.Array) -> Jet:
    """φ(h) for an elementwise φ with φ(h) = y, φ'(h) = s1 and φ''(h) = s2, for an h with tangents
    and the Laplacian."""
    t = h.tangents
    squares = t * t if h.per_tangent else sum_tangents(t * t)
    lap = _plus(_times(s1, h.lap), scale(s2, jnp.broadcast_to(squares, _batch(y, squares))))
    return h.with_parts(y, scale(s1, t), lap, _times(s1, h.drift))


def waves(z: Jet) -> Jet:
    """[cos z, sin z] side by side, from one cosine and one sine of z (`sine_and_cosine`): the
    slopes of each are the other's values up to sign (cos' = −sin, cos'' = −cos; sin' = cos,
    sin'' = −sin)."""
    z = _arrays(z)
    s, c = sine_and_cosine(z.value)
    if z.tangents is None:
        parts = [
            z.with_parts(c, drift=_times(-s, z.drift)),
            z.with_parts(s, drift=_times(c, z.drift)),
        ]
    elif not z.second:
        parts = [
            z.with_parts(c, scale(-s, z.tangents), drift=_times(-s, z.drift)),
            z.with_parts(s, scale(c, z.tangents), drift=_times(c, z.drift)),
        ]
    else:
        parts = [_with_slopes(z, c, -s, -c), _with_slopes(z, s, c, -s)]
    return concatenate(parts)


def _first_slope(name: str, h: Jet, y: jax.Array) -> jax.Array:
    return slopes(name, h.value, y, orders=1)[0]


def _batch(value: jax.Array, v: jax.Array) -> tuple[int, ...]:
    """v's shape with the batch axis of `value` in front (v may share one row over the batch)."""
    return (value.shape[0], *v.shape[1:])


def multiply(u: Jet, v: Jet) -> Jet:
    """u ∘ v, elementwise, by the product rule."""
    u, v = _arrays(u), _arrays(v)
    value = u.value * v.value
    tangents = _plus(_times(u.value, v.tangents), _times(v.value, u.tangents))
    lap = _plus(_times(u.value, v.lap), _times(v.value, u.lap))
    if u.second and u.tangents is not None and v.tangents is not None:
        cross = u.tangents * v.tangents
        cross = cross if u.per_tangent else sum_tangents(cross)
        lap = _plus(lap, 2 * jnp.broadcast_to(cross, _batch(value, cross)))
    drift = _plus(_times(u.value, v.drift), _times(v.value, u.drift))
    return u.with_parts(value, tangents, lap, drift)


def add(u: Jet, v: Jet, alpha: Any = None) -> Jet:
    """u + v, or u + α v for a scalar α."""
    u, v = _arrays(u), _arrays(v)
    if alpha is not None:
        v = v.with_parts(
            alpha * v.value,
            None if v.tangents is None else alpha * v.tangents,
            None if v.lap is None else alpha * v.lap,
            None if v.drift is None else alpha * v.drift,
        )
    return u.with_parts(
        u.value + v.value,
        _plus(u.tangents, v.tangents),
        _plus(u.lap, v.lap),
        _plus(u.drift, v.drift),
    )


def subtract(u: Jet, v: Jet) -> Jet:
    """u − v."""
    return add(u, v, alpha=-1)


def concatenate(parts: list[Jet]) -> Jet:
    """The jets side by side along the units; a part without tangents contributes zeros."""
    parts = [_arrays(p) for p in parts]
    first = parts[0]
    value = jnp.concatenate([p.value for p in parts], axis=-1)

    def joined(get):
        pieces = [get(p) for p in parts]
        if all(piece is None for piece in pieces):
            return None
        shapes = [piece.shape for piece in pieces if piece is not None]
        lead = (max(s[0] for s in shapes), *shapes[0][1:-1])
        return jnp.concatenate(
            [
                jnp.zeros((*lead, p.value.shape[-1]), value.dtype)
                if piece is None
                else jnp.broadcast_to(piece, (*lead, piece.shape[-1]))
                for p, piece in zip(parts, pieces)
            ],
            axis=-1,
        )

    return first.with_parts(
        value, joined(lambda p: p.tangents), joined(lambda p: p.lap), joined(lambda p: p.drift)
    )


def columns_of(h: Jet, index: jax.Array | slice) -> Jet:
    """The units `index` of h."""
    h = _arrays(h)
    pick = lambda a: None if a is None else a[..., index]  # noqa: E731
    return h.with_parts(h.value[..., index], pick(h.tangents), pick(h.lap), pick(h.drift))
