"""`Dense`: σ(W h + b), optionally with random weight factorisation."""

from __future__ import annotations

import dataclasses

from . import _base


@dataclasses.dataclass(frozen=True)
class Dense(_base.Layer):
    r"""A dense layer $h \leftarrow \sigma(W h + b)$; the last layer of every network.

    **Arguments:**

    - `width`: the number of units.
    - `activation`: any elementwise activation jprop knows (`"tanh"` default; `"identity"` for
      the linear output layer).
    - `factorised`: random weight factorisation, $W = \mathrm{diag}(e^{g}) V$ with parameters
      `{"g", "V", "b"}` instead of `{"W", "b"}`.

    Examples:
        >>> import jprop
        >>> jprop.layers.Dense(1, "identity").output_width(64, None)
        1
    """

    width: int
    activation: str = "tanh"
    factorised: bool = False

    def output_width(self, width, gates):
        return self.width

    def shapes(self, width, gates):
        return _base.dense_shapes(width, self.width, self.factorised)

    def init(self, key, width, gates, dtype):
        return _base.dense_init(key, width, self.width, self.factorised, dtype)

    def jet(self, params, streams):
        return {**streams, "h": _base.dense(streams["h"], params, self.activation)}
