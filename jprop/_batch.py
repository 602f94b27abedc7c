"""Mapping a per-example function over the leading (batch) axes of its inputs.

Chunks are strided: with S steps, step s takes examples s, s + S, s + 2S, ... of the batch. A
batch sharded over devices (contiguous blocks of rows, `jprop.shard_batch`) then keeps every step
spread over all of them — each device loops over its own rows, and nothing is gathered — where
contiguous chunks would make every device walk the whole batch. Results are written back in place
(`dynamic_update_index_in_dim` into a (B/S, S, ...) buffer), so no transpose is added either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def strided_steps(total: int, chunk: int) -> int | None:
    """The number of steps S for chunks of at most `chunk` examples out of `total` taken with
    stride S: the fewest steps that divide the batch evenly, as long as each chunk keeps at least
    half of `chunk` examples; None when no such S exists (a prime batch, say), or one step would do."""
    fewest = -(-total // chunk)
    if fewest <= 1:
        return None
    for steps in range(fewest, 2 * fewest + 1):
        if total % steps == 0:
            return steps
    return None


def _strided_view(tree: Any, steps: int) -> Any:
    return jax.tree.map(lambda a: a.reshape((a.shape[0] // steps, steps) + a.shape[1:]), tree)


def _take(view: Any, step: Any) -> Any:
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, step, 1, keepdims=False), view)


def strided_map(fn_batch: Callable[..., Any], tree: Any, steps: int, remat: bool = False) -> Any:
    """`fn_batch(chunk)` (per-example results, leading axis the chunk) over `steps` strided chunks
    of `tree`'s leading axis, in one loop; the results as if `fn_batch(tree)` had run whole.
    `remat`: recompute each chunk in the backward pass (jax.checkpoint), so reverse mode keeps
    one chunk's residuals."""
    total = jax.tree.leaves(tree)[0].shape[0]
    fn = jax.checkpoint(fn_batch) if remat else fn_batch
    view = _strided_view(tree, steps)
    shapes = jax.eval_shape(fn, _take(view, 0))
    buffer = jax.tree.map(
        lambda s: jax.numpy.zeros((total // steps, steps) + s.shape[1:], s.dtype), shapes
    )

    def step(s, out):
        return jax.tree.map(
            lambda o, r: jax.lax.dynamic_update_index_in_dim(o, r, s, 1), out, fn(_take(view, s))
        )

    out = jax.lax.fori_loop(0, steps, step, buffer)
    return jax.tree.map(lambda o: o.reshape((total,) + o.shape[2:]), out)


def map_examples(
    fn: Callable[..., Any], x: jax.Array, *per_example: jax.Array, batch_size: int | None = None
) -> Any:
    """Apply `fn(x_i, *args_i)` to every example, where an example is the last axis of `x`.

    `x` has shape `(..., n)`; each array in `per_example` has the same leading axes as `x`. With no
    leading axes `fn` is called once. Otherwise the leading axes are flattened, `fn` is mapped with
    `jax.vmap` (or in strided chunks of at most `batch_size`, for bounded memory), and the
    leading axes are restored on every output leaf.
    """
    lead = x.shape[:-1]
    if not lead:
        return fn(x, *per_example)
    flat = tuple(a.reshape((-1,) + a.shape[len(lead) :]) for a in (x, *per_example))
    if batch_size is None:
        out = jax.vmap(fn)(*flat)
    elif (steps := strided_steps(flat[0].shape[0], batch_size)) is not None:
        # remat per chunk: reverse mode keeps one chunk's residuals, not the whole batch's
        out = strided_map(lambda args: jax.vmap(fn)(*args), flat, steps, remat=True)
    else:  # no even split: contiguous chunks and a remainder
        out = jax.lax.map(jax.checkpoint(lambda args: fn(*args)), flat, batch_size=batch_size)
    return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)


def map_batches(
    fn_batch: Callable[..., Any],
    x: jax.Array,
    *per_example: jax.Array,
    batch_size: int | None = None,
) -> Any:
    """Apply a batch-level `fn_batch(x (B, n), *args (B, ...)) -> (B, ...)` to `x` of shape `(..., n)`.

    The leading axes of `x` (and of each array in `per_example`, which shares them) are flattened
    into one batch axis; a single example becomes a batch of one. With `batch_size`, the batch is
    processed in strided chunks of at most that many examples (`strided_steps`; a batch with no
    even split runs in contiguous chunks plus one call for the remainder), so memory is bounded by
    the chunk. The leading axes are restored on every output leaf.
    """
    lead = x.shape[:-1]
    flat = tuple(a.reshape((-1,) + a.shape[len(lead) :]) for a in (x, *per_example))
    total = flat[0].shape[0]
    steps = None if batch_size is None else strided_steps(total, batch_size)
    if total == 0:  # no examples: the shapes of one example's result, with none of them
        one = jax.eval_shape(
            fn_batch, *(jax.ShapeDtypeStruct((1,) + a.shape[1:], a.dtype) for a in flat)
        )
        out = jax.tree.map(lambda o: jax.numpy.zeros((0,) + o.shape[1:], o.dtype), one)
    elif batch_size is None or batch_size >= total:
        out = fn_batch(*flat)
    elif steps is not None:
        # Under jax.grad each chunk is recomputed in the backward pass (jax.checkpoint), so
        # training through a chunked transform holds one chunk's residuals, not the batch's.
        out = strided_map(lambda args: fn_batch(*args), flat, steps, remat=True)
    else:  # no even split: contiguous chunks and a remainder
        whole = total // batch_size * batch_size
        chunks = tuple(a[:whole].reshape((-1, batch_size) + a.shape[1:]) for a in flat)
        out = jax.lax.map(jax.checkpoint(lambda args: fn_batch(*args)), chunks)
        out = jax.tree.map(lambda o: o.reshape((whole,) + o.shape[2:]), out)
        if whole < total:
            rest = fn_batch(*(a[whole:] for a in flat))
            out = jax.tree.map(lambda a, b: jax.numpy.concatenate([a, b]), out, rest)
    return jax.tree.map(lambda o: o.reshape(lead + o.shape[1:]), out)


def sum_batches(
    fn_batch: Callable[..., Any], *arrays: jax.Array, batch_size: int | None = None
) -> Any:
    """Σ over the batch of a batch-level `fn_batch(*arrays (B, ...)) -> pytree of sums`.

    With `batch_size`, the batch runs in strided chunks of at most that many examples in one loop
    (with no even split: contiguous chunks under `jax.lax.scan` plus one call for the remainder),
    each chunk's sums added to a running total, so memory is bounded by one chunk whatever the
    batch (stacking the chunks' results, as `jax.lax.map` would, grows with the number of chunks).
    """
    total = arrays[0].shape[0]
    if batch_size is None or batch_size >= total:
        return fn_batch(*arrays)
    steps = strided_steps(total, batch_size)
    if steps is not None:
        view = _strided_view(arrays, steps)
        zeros = jax.tree.map(
            lambda s: jax.numpy.zeros(s.shape, s.dtype), jax.eval_shape(fn_batch, *_take(view, 0))
        )

        def add_step(s, running):
            return jax.tree.map(jax.numpy.add, running, fn_batch(*_take(view, s)))

        return jax.lax.fori_loop(0, steps, add_step, zeros)
    whole = total // batch_size * batch_size
    chunks = tuple(a[:whole].reshape((-1, batch_size) + a.shape[1:]) for a in arrays)
    shapes = jax.eval_shape(fn_batch, *(c[0] for c in chunks))
    zeros = jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), shapes)

    def add_chunk(running, chunk):
        return jax.tree.map(jax.numpy.add, running, fn_batch(*chunk)), None

    out = jax.lax.scan(add_chunk, zeros, chunks)[0]
    if whole < total:
        out = jax.tree.map(jax.numpy.add, out, fn_batch(*(a[whole:] for a in arrays)))
    return out


def mean_over_batch(
    fn_sums: Callable[..., Any], *arrays: jax.Array, batch_size: int | None = None
) -> Any:
    """(1/B) Σ over the batch of `fn_sums(*arrays (B, ...))`, a pytree of sums over the examples it
    is handed, chunked as `sum_batches`. The one batch-mean convention: every rule behind a
    batch-mean loss (the J-prop passes, the weight-curvature passes, their autodiff roads) returns
    sums, and this divides once."""
    total = sum_batches(fn_sums, *arrays, batch_size=batch_size)
    return jax.tree.map(lambda a: a / arrays[0].shape[0], total)
