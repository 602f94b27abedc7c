"""Spreading a batch over devices with `jax.sharding`: the existing engine, nothing home-made.

Every jprop transform is a jitted function of arrays whose leading axis is the batch, so an input
sharded along that axis makes XLA run each device's share locally (the closed forms and J-prop
passes are per-example except for the final batch sums, which XLA reduces across devices).

Multi-host: call `jax.distributed.initialize()` on every host first; `jax.devices()` then lists
every host's devices, the same mesh spans them, and each host supplies its own rows with
`jax.make_array_from_process_local_data(sharding, local_rows)` instead of `shard_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._program import type_name


def batch_sharding(devices: Sequence[Any] | None = None) -> NamedSharding:
    """A sharding that splits an array's leading axis over `devices` (default: all of them).

    Examples:
        >>> import jax, jprop
        >>> len(jprop.batch_sharding().device_set) == len(jax.devices())
        True
    """
    return _sharding(devices, "jprop.batch_sharding")


def _sharding(devices: Sequence[Any] | None, where: str) -> NamedSharding:
    if isinstance(devices, (jax.Array, np.ndarray)) or (
        devices is not None and not isinstance(devices, Sequence)
    ):
        raise TypeError(
            f"{where}: `devices` must be a list of JAX devices such as jax.devices(), or None for "
            f"all of them; got {type_name(devices)}. To place arrays, pass them to "
            "jprop.shard_batch(x, ...) or to jax.device_put(x, jprop.batch_sharding())."
        )
    devices = list(jax.devices() if devices is None else devices)
    strangers = [d for d in devices if not isinstance(d, jax.Device)]
    if strangers:
        raise TypeError(
            f"{where}: `devices` must hold JAX devices, as jax.devices() lists them; got "
            f"{type(strangers[0]).__name__} among them."
        )
    if not devices:
        raise ValueError(
            f"{where}: `devices` is empty; pass at least one device, or None for all of "
            "jax.devices()."
        )
    twice = [d for i, d in enumerate(devices) if d in devices[:i]]
    if twice:
        raise ValueError(
            f"{where}: `devices` lists {twice[0]} more than once; each device takes one part of "
            "the batch, so list each once (e.g. jax.devices()[:2])."
        )
    return NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))


def shard_batch(*arrays: Any, devices: Sequence[Any] | None = None) -> Any:
    """Place each array with its leading (batch) axis split over `devices` (default: all local).

    The batch must divide evenly by the number of devices; the error says by how much to pad.
    Returns the one array, or a tuple of them.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> x = jprop.shard_batch(jnp.ones((8, 3)))
        >>> x.shape, len(x.sharding.device_set) == len(jax.devices())
        ((8, 3), True)
    """
    sharding = _sharding(devices, "jprop.shard_batch")
    count = len(sharding.device_set)
    placed = []
    for index, array in enumerate(arrays):
        array = jax.numpy.asarray(array)
        if array.ndim == 0:
            raise ValueError(
                f"jprop.shard_batch: argument {index} is a scalar; it has no batch axis to split "
                "over devices. Pass arrays whose leading axis is the batch, or place a scalar "
                "with jax.device_put."
            )
        if array.shape[0] % count:
            raise ValueError(
                f"jprop.shard_batch: argument {index} is a batch of {array.shape[0]}; its leading "
                f"axis must divide evenly over {count} devices. Pad the batch to a multiple of "
                f"{count} (and drop the padded rows from the results), or pass fewer `devices`."
            )
        placed.append(jax.device_put(array, sharding))
    return placed[0] if len(placed) == 1 else tuple(placed)
