"""`Residual`: h + σ(W h + b)."""

from __future__ import annotations

import dataclasses

from . import _base, _jet


@dataclasses.dataclass(frozen=True)
class Residual(_base.Layer):
    r"""A residual block $h \leftarrow h + \sigma(W h + b)$, $W$ square (the width is kept).

    **Arguments:** `activation` (`"tanh"` default) and `factorised` as for `jprop.layers.Dense`.

    Examples:
        >>> import jprop
        >>> jprop.layers.Residual().output_width(128, None)
        128
    """

    activation: str = "tanh"
    factorised: bool = False

    def output_width(self, width, gates):
        return width

    def shapes(self, width, gates):
        return _base.dense_shapes(width, width, self.factorised)

    def init(self, key, width, gates, dtype):
        return _base.dense_init(key, width, width, self.factorised, dtype)

    def jet(self, params, streams):
        h = streams["h"]
        return {**streams, "h": _jet.add(h, _base.dense(h, params, self.activation))}
