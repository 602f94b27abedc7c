"""Second-order operators along input directions, exact or estimated: tr(σσᵀ ∇²f), the Laplacian
over chosen or sampled coordinates, and the Laplacian in chunks of input tangents.

Every one of them is the forward Laplacian started from other input directions (docs/math.md,
"Second-order operators and their estimators"): with directions d_1..d_k the pass that gives the
Laplacian from the identity's columns gives Σ_p d_pᵀ ∇²f d_p. So

    exact Laplacian           d = e_i for every input i (or every i in `dims`)
    tr(σσᵀ ∇²f)               d = σ's r columns
    sparse estimator          d = e_i for k coordinates i sampled without replacement, × N/k
    dense estimator           d = σ v_j for k probes v_j, Rademacher or Gaussian, × 1/k

and one routine, `Along`, runs all of them on the three roads: the hand-written forward Laplacian
of a `jprop.MLP` (`_forward_laplacian.along`, trained through its tangent pass), each layer's
step of a `jprop.Network` (`layers._network.along`), and for any other `f` folx's forward
Laplacian of z ↦ f(x + Dᵀz) at z = 0, whose Laplacian in z is the same sum. `tangent_chunk`
splits the directions into chunks summed in a loop whose body is recomputed under reverse mode,
so memory holds one chunk's tangents, forwards and backwards.

Random samples come from a key passed at each call: one draw shared by the batch (a key of
shape ()), or one per example (keys with x's batch axes), so new samples cost no recompilation and
the same key gives the same numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._batch import map_batches
from .._dispatch import ESTIMATORS, choose, computed_as
from .._program import cached, program, type_name
from .._validation import (
    as_float_array,
    as_key,
    check_method,
    in_dtype,
    optional_size,
    prepare_call,
)
from ..layers import Network
from ..layers import _network as _network_passes
from ..models._mlp import MLP
from . import _forward_laplacian
from ._autodiff import folx_laplacian


def check_estimator(estimator: Any, probes: Any, where: str) -> tuple[str | None, int | None]:
    """The estimator's name (None: exact) and its number of probes, or a clear error."""
    if estimator is None:
        if probes is not None:
            raise ValueError(
                f"{where}: `probes` sets the size of a randomized estimate; pass estimator="
                "'sparse', 'rademacher' or 'gaussian' with it, or neither for the exact value."
            )
        return None, None
    check_method(estimator, tuple(ESTIMATORS), where, "estimator")
    if probes is None:
        raise ValueError(
            f"{where}: estimator={estimator!r} needs `probes`, the number k of sampled "
            "coordinates or probe vectors per estimate, e.g. probes=16."
        )
    return estimator, optional_size(probes, "probes", where)


def check_drift(drift: Any, where: str) -> str | None:
    """The first-order term the transform returns beside the operator: None (none), "x" (the
    derivative along x itself) or "given" (along a direction b passed at each call)."""
    if drift is None or (isinstance(drift, str) and drift in ("x", "given")):
        return drift
    if hasattr(drift, "shape"):
        shown = (
            f"an array of shape {tuple(drift.shape)}; a field b is passed at each call, after x, "
            'to the transform built with drift="given"'
        )
    else:
        shown = repr(drift) if isinstance(drift, (str, int, float, bool)) else type(drift).__name__
    raise ValueError(
        f'{where}: `drift` must be None (the operator alone), "x" (the triple f, x·∇f and the '
        'operator, from one pass) or "given" (f, b·∇f and the operator for a direction b passed '
        f"after x at each call, e.g. an advection velocity b(x)); got {shown}."
    )


@dataclasses.dataclass(frozen=True)
class Along:
    """Σ_p d_pᵀ ∇²f d_p over a batch, on the road chosen for f: `(params, x (B, n), directions)
    -> (B, m)`, with directions as `_forward_laplacian.columns` reads them; with `per_tangent`
    each term kept apart, (B, m, k)."""

    f: Any
    road: str
    per_tangent: bool = False

    def __call__(self, params, x, directions):
        if self.road == "closed" and isinstance(self.f, Network):
            return _network_passes.along(self.f, params, x, directions, self.per_tangent)
        if self.road == "closed":
            return _forward_laplacian.along(self.f, per_tangent=self.per_tangent)(
                params, x, directions
            )
        return _generic_along(self.f, params, x, directions, self.per_tangent)


def _generic_along(f, params, x, directions, per_tangent=False):
    """folx's forward Laplacian of z ↦ f(x + Dᵀz) at z = 0, per example; with `per_tangent`
    the diagonal of that function's Hessian in z (k × k, k the directions of a chunk)."""
    n = x.shape[-1]
    if jnp.issubdtype(directions.dtype, jnp.integer):
        directions = jax.nn.one_hot(directions, n, dtype=x.dtype)

    def one(xi, d):
        g = lambda z: f(params, xi + z @ d)  # noqa: E731
        z = jnp.zeros(d.shape[0], xi.dtype)
        if per_tangent:
            return jnp.diagonal(jax.hessian(g)(z), axis1=-2, axis2=-1)
        return folx_laplacian(g, z)

    return jax.vmap(one, in_axes=(0, 0 if directions.ndim == 3 else None))(x, directions)


def _on_batch(f, road: str, params, x):
    """f on a batch x (B, n): a jprop model takes it whole, a user's f one example at a time."""
    return f(params, x) if road == "closed" else jax.vmap(lambda xi: f(params, xi))(x)


def summed_in_chunks(
    part: Callable, directions: jax.Array, chunk: int | None, joined: bool = False
) -> jax.Array:
    """Σ over chunks of at most `chunk` directions of `part(chunk of directions)`, or with
    `joined` their results side by side along the last axis (each direction's own term). The
    directions' own axis is the first for shared ones ((k,) or (k, n)) and the second for
    per-example ones ((B, k) or (B, k, n)). Full chunks run in a `jax.lax.scan` whose body is
    recomputed in the backward pass (`jax.checkpoint`), so reverse mode also holds one chunk; the
    rest runs once."""
    shared = directions.ndim == (1 if jnp.issubdtype(directions.dtype, jnp.integer) else 2)
    axis = 0 if shared else 1
    total = directions.shape[axis]
    if chunk is None or chunk >= total:
        return part(directions)
    whole = total // chunk * chunk
    head = jax.lax.slice_in_dim(directions, 0, whole, axis=axis)
    split = head.shape[:axis] + (total // chunk, chunk) + head.shape[axis + 1 :]
    stacked = jnp.moveaxis(head.reshape(split), axis, 0)
    body = jax.checkpoint(part)
    if joined:
        pieces = jax.lax.map(body, stacked)  # (chunks, ..., chunk)
        out = jnp.moveaxis(pieces, 0, -2).reshape(*pieces.shape[1:-1], whole)
        if whole < total:
            rest = part(jax.lax.slice_in_dim(directions, whole, total, axis=axis))
            out = jnp.concatenate([out, rest], axis=-1)
        return out
    first = jax.eval_shape(body, stacked[0])

    def step(running, piece):
        return running + body(piece), None

    out = jax.lax.scan(step, jnp.zeros(first.shape, first.dtype), stacked)[0]
    if whole < total:
        out = out + part(jax.lax.slice_in_dim(directions, whole, total, axis=axis))
    return out


def _as_keys(key: Any, lead: tuple[int, ...], where: str) -> jax.Array:
    """A typed PRNG key array of shape () or x's batch axes `lead` (`as_key`)."""
    key = as_key(key, where)
    if key.shape not in ((), lead):
        raise ValueError(
            f"{where}: `key` must have shape () (one draw shared by the batch) or x's batch axes "
            f"{lead} (a draw per example, e.g. jax.random.split(key, {lead})); got {key.shape}."
        )
    return key


def _subset(key: jax.Array, k: int, count: int) -> jax.Array:
    """k of the indices 0 … count − 1 without replacement, each k-subset equally likely (Floyd's
    algorithm): for j = count − k, …, count − 1 take t uniform in [0, j], or j itself if t is taken
    already. O(k²) elementwise work and no sort, so a batch of draws stays split over devices
    (a sort along the batch's draws would gather them)."""
    tops = jnp.arange(count - k, count, dtype=jnp.int32)
    t = jax.random.randint(key, (k,), 0, tops + 1, dtype=jnp.int32)
    slots = jnp.arange(k)

    def take(i, picks):
        taken = jnp.any((picks == t[i]) & (slots < i))
        return picks.at[i].set(jnp.where(taken, tops[i], t[i]))

    return jax.lax.fori_loop(0, k, take, jnp.zeros(k, jnp.int32), unroll=min(k, 8))


def _draw(estimator: str, key: jax.Array, k: int, count: int, dtype) -> jax.Array:
    """The random part of one estimate: k of `count` indices without replacement (sparse), or k
    probes of length `count` (dense)."""
    if estimator == "sparse":
        return _subset(key, k, count)
    if estimator == "rademacher":
        return _signs(key, k, count, dtype)
    return jax.random.normal(key, (k, count), dtype)


def _signs(key: jax.Array, k: int, count: int, dtype) -> jax.Array:
    """k × count independent fair signs ±1, each one bit of a random 32-bit word (32 signs per
    word, where `jax.random.rademacher` draws a word for each sign): at thousands of inputs and
    more, drawing the probes is then a small part of an estimate's cost."""
    width = -(-count // 32)
    words = jax.random.bits(key, (k, width), jnp.uint32)
    bits = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    return (1 - 2 * bits.astype(dtype)).reshape(k, 32 * width)[:, :count]


def _directions(estimator, sample, sigma, dims, n: int):
    """The directions from a sample and σ, each shared or per example
    (a leading batch axis). Without σ the coordinates are `dims` (all n when None)."""
    if sigma is None:
        if estimator == "sparse":
            chosen = sample if dims is None else jnp.asarray(dims)[sample]
            return chosen
        if dims is None:
            return sample
        return jnp.zeros((*sample.shape[:-1], n), sample.dtype).at[..., list(dims)].set(sample)
    if estimator is None:
        return jnp.swapaxes(sigma, -1, -2)
    if estimator == "sparse":
        if sigma.ndim == 2 and sample.ndim == 1:
            return jnp.take(sigma, sample, axis=1).T
        lead = sigma.shape[0] if sigma.ndim == 3 else sample.shape[0]
        sigma = jnp.broadcast_to(sigma, (lead, *sigma.shape[-2:]))
        sample = jnp.broadcast_to(sample, (lead, sample.shape[-1]))
        return jax.vmap(lambda s, i: jnp.take(s, i, axis=1).T)(sigma, sample)
    return jnp.einsum("...kr,...nr->...kn", sample, sigma)


def _broadcast_leading(a: jax.Array, lead: tuple[int, ...], trailing: int) -> jax.Array:
    """`a`, whose axes before its last `trailing` ones lead x's batch axes `lead`, broadcast to
    `lead` followed by those trailing axes."""
    batch = a.ndim - trailing
    if a.shape[:batch] == lead:
        return a
    shape = a.shape[:batch] + (1,) * (len(lead) - batch) + a.shape[batch:]
    return jnp.broadcast_to(a.reshape(shape), lead + a.shape[batch:])


@cached
def operator_transform(
    f: Any,
    method: str,
    batch_size: Any,
    with_sigma: bool,
    dims: tuple[int, ...] | None,
    outputs: tuple[int, ...] | None,
    estimator: str | None,
    probes: int | None,
    tangent_chunk: int | None,
    diagonal: bool = False,
    drift: str | None = None,
) -> Callable[..., Any]:
    """Build `(params, x[, sigma][, key]) -> (..., m)`: Σ_p d_pᵀ ∇²f d_p scaled, for the
    directions the options choose (module docstring); with `drift`, the triple (f, b·∇f, that),
    b = x itself ("x") or a direction given after x and σ ("given")."""
    from ._transforms import (
        _check_outputs,
        _check_range,
        _pick,
        _picked_model,
        _subnet,
        _subparams,
        _vmap_is_the_batch,
    )

    quantity = "hessian_trace" if with_sigma else "hessian_diagonal" if diagonal else "laplacian"
    where = f"jprop.{quantity}"
    road = choose(f, "hessian_trace", method, where).road
    batch_size = optional_size(batch_size, "batch_size", where)
    tangent_chunk = optional_size(tangent_chunk, "tangent_chunk", where)
    computing = computed_as(f, road)  # a Network of plain Dense layers as its MLP
    subnet = road == "closed" and isinstance(computing, MLP) and outputs is not None
    net = _subnet(computing, outputs) if subnet else computing
    if road != "closed" and outputs is not None:
        net = _picked_model(f, outputs)
    along = Along(net, road, diagonal)
    # the sum over directions (not each term) on an MLP's own passes, or a Network's read through
    # a Dense layer, depends on them only through the first layer's Gram matrix
    # (`_forward_laplacian.fewer_directions`)
    fewer = road == "closed" and isinstance(net, (MLP, Network)) and not diagonal
    given = drift == "given"
    names = ("params", "x") + (("sigma",) if with_sigma else ()) + (("b",) if given else ())
    names += ("key",) if estimator else ()
    # the network's own pass carries f and x·∇f beside the sum when the directions run in one piece
    fused = road == "closed" and isinstance(net, (MLP, Network)) and tangent_chunk is None

    def validate(params, x, *others):
        x, out, _ = prepare_call(f, params, x, where)
        n, lead = x.shape[-1], x.shape[:-1]
        _check_range(dims, n, "dims", "input", where)
        _check_outputs(outputs, out, where)
        checked = []
        if with_sigma:
            sigma = as_float_array(others[0], "sigma", where)
            if sigma.ndim < 2 or sigma.shape[-2] != n or sigma.shape[:-2] not in ((), lead):
                raise ValueError(
                    f"{where}: `sigma` must have shape (n, r) = ({n}, r), shared by the batch, or "
                    f"x's batch axes in front, {lead + (n,)} + (r,), for A = σσᵀ; got "
                    f"{sigma.shape}."
                )
            if sigma.shape[-1] == 0:
                raise ValueError(f"{where}: `sigma` has no columns (r = 0); pass at least one.")
            checked.append(sigma.astype(x.dtype))
        if given:
            b = as_float_array(others[len(checked)], "b", where)
            if b.shape not in ((n,), lead + (n,)):
                raise ValueError(
                    f"{where}: `b`, the direction of the drift term b·∇f, must have shape (n,) = "
                    f"({n},), shared by the batch, or x's shape {lead + (n,)}; got {b.shape}."
                )
            checked.append(b.astype(x.dtype))
        count = sigma.shape[-1] if with_sigma else (n if dims is None else len(dims))
        if estimator is not None:
            checked.append(_as_keys(others[-1], lead, where))
            if estimator == "sparse" and probes > count:
                raise ValueError(
                    f"{where}: probes={probes} exceeds the {count} "
                    + ("columns of sigma" if with_sigma else "coordinates")
                    + f" the sparse estimator samples from; take probes ≤ {count} (probes = "
                    f"{count} is exact) or estimator=None."
                )
        return x, tuple(checked), count

    def plain(params, x, *others):
        sigma = others[0] if with_sigma else None
        b = others[1 if with_sigma else 0] if given else None
        key = others[-1] if estimator else None
        count = sigma.shape[-1] if with_sigma else (x.shape[-1] if dims is None else len(dims))
        # under a user's jax.vmap the mapped axis leads x's batch axes, and a key or σ given for
        # each mapped call is shared by that call's examples
        lead = x.shape[:-1]
        if sigma is not None and sigma.ndim > 2:
            sigma = _broadcast_leading(sigma, lead, 2)
        if key is not None and key.ndim > 0:
            key = _broadcast_leading(key, lead, 0)
        if b is not None and b.ndim > 1:
            b = _broadcast_leading(b, lead, 1)
        shared_sigma = sigma is None or sigma.ndim == 2
        shared_b = b is None or b.ndim == 1
        shared_key = key is None or key.ndim == 0
        scale = {None: 1.0, "sparse": count / (probes or 1)}.get(estimator, 1.0 / (probes or 1))
        if road == "closed":
            params = in_dtype(_subparams(params, outputs) if subnet else params, x.dtype)

        def draw(one_key):
            return _draw(estimator, one_key, probes, count, x.dtype)

        shared_sample = draw(key) if estimator and shared_key else None

        def batch(xb, *per):
            per = list(per)
            sig = sigma if shared_sigma else per.pop(0)
            bb = None if b is None else jnp.broadcast_to(b, xb.shape) if shared_b else per.pop(0)
            sample = jax.vmap(draw)(per.pop(0)) if estimator and not shared_key else shared_sample
            if estimator is None and sigma is None:  # the exact Laplacian in chunks of inputs
                directions = jnp.asarray(range(xb.shape[-1]) if dims is None else dims)
            else:
                directions = _directions(estimator, sample, sig, dims, xb.shape[-1])
            if fewer and directions.ndim == (1 if directions.dtype.kind in "iu" else 2):
                # shared by the batch and more than h₁ of them: h₁ directions give the same sum
                k = directions.shape[0]
                if isinstance(net, Network) and _network_passes.fewer_pay(net, k):
                    directions = _network_passes.fewer_directions(net, params, directions)
                elif isinstance(net, MLP) and _forward_laplacian.fewer_pay(net, k):
                    directions = _forward_laplacian.fewer_directions(
                        params[0]["W"], directions, xb.shape[-1]
                    )
            if drift and fused:  # f and b·∇f ride along the network's own pass
                if isinstance(net, Network):
                    value, slope, out = _network_passes.along(
                        net, params, xb, directions, drift=True, b=bb
                    )
                else:
                    value, slope, out = _forward_laplacian.along(net, drift=True)(
                        params, xb, directions, bb
                    )
            else:
                out = summed_in_chunks(
                    lambda d: along(params, xb, d), directions, tangent_chunk, diagonal
                )
            out = out if scale == 1.0 else out * jnp.asarray(scale, out.dtype)
            if not drift:
                return out
            if not fused:
                along_b = xb if bb is None else bb
                value, slope = jax.jvp(lambda v: _on_batch(net, road, params, v), (xb,), (along_b,))
            return value, slope, out

        per_example = [a for a, shared in ((sigma, shared_sigma), (b, shared_b)) if not shared]
        per_example += [] if shared_key else [key]
        out = map_batches(batch, x, *per_example, batch_size=batch_size)
        if outputs is not None and road == "closed" and not subnet:
            out = jax.tree.map(lambda o: _pick(o, outputs, quantity), out)
        return out

    def compute(params, x, *others):
        x, others, _ = validate(params, x, *others)
        return _vmap_is_the_batch(plain)(params, x, *others)

    return program(where, compute, validate, tuple(names))


@cached
def diagonal_estimate(
    f: Any,
    method: str,
    batch_size: Any,
    dims: tuple[int, ...] | None,
    outputs: tuple[int, ...] | None,
    estimator: str,
    probes: int,
) -> Callable[..., jax.Array]:
    """Build `(params, x, key) -> (..., m, k)`: the dense estimate of the Hessian diagonal,
    (1/K) Σ_p v_p ⊙ ∇²f_j v_p for K probes v_p over the inputs `dims`, one Hessian-vector product
    per probe and output (`jprop.hessian_vector_product`, whose road and training rule it takes)."""
    from ._transforms import _check_outputs, _check_range, hessian_vector_product

    where = "jprop.hessian_diagonal"
    if estimator == "sparse":
        raise ValueError(
            f"{where}: the sparse estimator samples coordinates, and a sampled coordinate's "
            "diagonal entry is computed exactly; pass those coordinates as dims= (no estimator), "
            "or take estimator='rademacher' or 'gaussian' for an estimate of every entry."
        )
    hvp = hessian_vector_product(f, method=method, batch_size=batch_size)

    def validate(params, x, key):
        x, out, _ = prepare_call(f, params, x, where)
        n, lead = x.shape[-1], x.shape[:-1]
        _check_range(dims, n, "dims", "input", where)
        m = out.shape[0] if out.shape else 1
        _check_outputs(outputs, out, where)
        return x, _as_keys(key, lead, where), m, len(out.shape) == 0

    def plain(params, x, key, m: int, scalar: bool):
        n, batch = x.shape[-1], x.shape[0]
        count = n if dims is None else len(dims)
        chosen = tuple(range(m)) if outputs is None else outputs
        if key.ndim == 0:
            v = jnp.broadcast_to(
                _draw(estimator, key, probes, count, x.dtype), (batch, probes, count)
            )
        else:
            v = jax.vmap(lambda k: _draw(estimator, k, probes, count, x.dtype))(key)
        if dims is not None:  # probes over the chosen inputs, zero elsewhere
            v = jnp.zeros((batch, probes, n), x.dtype).at[..., list(dims)].set(v)
        # every (example, output, probe) one row: g the output's unit vector, r the probe
        rows = (batch, len(chosen), probes)
        g = jnp.broadcast_to(
            jnp.eye(m, dtype=x.dtype)[jnp.asarray(chosen)][None, :, None], (*rows, m)
        )
        r = jnp.broadcast_to(v[:, None], (*rows, n))
        xs = jnp.broadcast_to(x[:, None, None], (*rows, n))
        hv = hvp(params, xs, g[..., 0] if scalar else g, r)
        estimate = jnp.mean(r * hv, axis=2)  # (B, m', n)
        return estimate if dims is None else estimate[..., list(dims)]

    def compute(params, x, key):
        # no batching rule of its own: under a user's vmap the Hessian-vector products inside
        # join the mapped axis to the batch, and each mapped call draws from its own key
        x, key, m, scalar = validate(params, x, key)
        lead = x.shape[:-1]
        flat_key = key if key.ndim == 0 else key.reshape(-1)
        out = plain(params, x.reshape(-1, x.shape[-1]), flat_key, m, scalar)
        out = out.reshape(*lead, *out.shape[1:])
        return out[..., 0, :] if scalar else out

    return program(where, compute, validate, ("params", "x", "key"))


def unbiased_square(residual: Callable[[jax.Array], jax.Array], key: jax.Array) -> jax.Array:
    r"""The product of two independent estimates of a residual, an unbiased estimate of its square.

    A randomized estimate $\hat L$ of an operator gives a biased square: $E[(\hat L - g)^2] =
    (L - g)^2 + \mathrm{Var}\,\hat L$. With two independent draws, $E[(\hat L_1 - g)(\hat L_2 -
    g)] = (L - g)^2$, and the gradient of the product is unbiased for the gradient of $(L - g)^2$
    (docs/howto/high-dimensional.md).

    **Arguments:**

    - `residual`: a function of a key returning the residual (any shape), e.g.
      `lambda k: lap(params, x, k) - g`.
    - `key`: a `jax.random.key`, split here into the two draws.

    **Returns:** `residual(k1) * residual(k2)`, elementwise.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((4, 8, 1))
        >>> p, x = net.init(jax.random.key(0)), jnp.ones((3, 4))
        >>> lap = jprop.laplacian(net, estimator="sparse", probes=2)
        >>> jprop.unbiased_square(lambda k: lap(p, x, k), jax.random.key(1)).shape
        (3, 1)
    """
    if not callable(residual):
        raise TypeError(
            "jprop.unbiased_square: `residual` must be a function of a key, e.g. "
            f"lambda k: lap(params, x, k) - g; got {type_name(residual)}."
        )
    first, second = jax.random.split(as_key(key, "jprop.unbiased_square"))
    return residual(first) * residual(second)
