"""Mapping a per-example function over the leading (batch) axes of its inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def map_examples(
    fn: Callable[..., Any], x: jax.Array, *per_example: jax.Array, batch_size: int | None = None
) -> Any:
    """Apply `fn(x_i, *args_i)` to every example, where an example is the last axis of `x`.

    `x` has shape `(..., n)`; each array in `per_example` has the same leading axes as `x`. With no
    leading axes `fn` is called once. Otherwise the leading axes are flattened, `fn` is mapped with
    `jax.vmap` (or with `jax.lax.map` in chunks of `batch_size`, for bounded memory), and the
    leading axes are restored on every output leaf.
    """
    lead = x.shape[:-1]
    if not lead:
        return fn(x, *per_example)
    flat = tuple(a.reshape((-1,) + a.shape[len(lead) :]) for a in (x, *per_example))
    if batch_size is None:
        out = jax.vmap(fn)(*flat)
    else:  # remat per chunk: reverse mode keeps one chunk's residuals, not the whole batch's
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
    processed in chunks of that many examples with `jax.lax.map`, plus one call for the remainder,
    so memory is bounded by the chunk. The leading axes are restored on every output leaf.
    """
    lead = x.shape[:-1]
    flat = tuple(a.reshape((-1,) + a.shape[len(lead) :]) for a in (x, *per_example))
    total = flat[0].shape[0]
    if batch_size is None or batch_size >= total:
        out = fn_batch(*flat)
    else:
        whole = total // batch_size * batch_size
        chunks = tuple(a[:whole].reshape((-1, batch_size) + a.shape[1:]) for a in flat)
        # Under jax.grad each chunk is recomputed in the backward pass (jax.checkpoint), so
        # training through a chunked transform holds one chunk's residuals, not the batch's.
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

    With `batch_size`, the batch runs in chunks of that many examples under `jax.lax.scan` (plus
    one call for the remainder), each chunk's sums added to a running total, so memory is bounded
    by one chunk whatever the batch (stacking the chunks' results, as `jax.lax.map` would, grows
    with the number of chunks).
    """
    total = arrays[0].shape[0]
    if batch_size is None or batch_size >= total:
        return fn_batch(*arrays)
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
