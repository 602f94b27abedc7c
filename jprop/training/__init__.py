"""Training and scale-out.

- `_fit.py`: `jprop.fit`, optax or scipy on any jprop objective, resumable from a checkpoint.
- `_devices.py`: spreading a batch over devices (`jprop.shard_batch`, `jprop.batch_sharding`).

Users import every public name from `jprop` itself.
"""

__all__: list[str] = []  # internal: the public names are exported from jprop itself
