"""`FourierFeatures`: γ(x) = [cos Bx, sin Bx]."""

from __future__ import annotations

import dataclasses

import jax

from .._validation import positive_number
from . import _base, _jet


@dataclasses.dataclass(frozen=True)
class FourierFeatures(_base.Layer):
    r"""Random Fourier features $\gamma(h) = [\cos Bh, \sin Bh]$ (Tancik et al. 2020; Wang, Wang &
    Perdikaris 2021), $B \in \mathbb{R}^{F \times w}$ drawn from $N(0, s^2)$.

    **Arguments:**

    - `features`: the number F of frequencies; the layer has 2F units.
    - `scale`: the standard deviation s of B's entries (the field uses 1 to 10).
    - `trainable`: whether B trains. By default it does not (the field's choice): the network
      reads it through `jax.lax.stop_gradient`, so its gradient is zero and an optimiser leaves it.

    Parameters: `{"B": (F, w)}`.

    Examples:
        >>> import jprop
        >>> jprop.layers.FourierFeatures(64, scale=2.0).output_width(3, None)
        128
    """

    features: int
    scale: float = 1.0
    trainable: bool = False

    def __post_init__(self):
        super().__post_init__()
        where = "jprop.layers.FourierFeatures"
        object.__setattr__(self, "features", _base.positive_width(self.features, "features", where))
        meaning = "the standard deviation of B's entries"
        scale = positive_number(self.scale, "scale", where, meaning, "1.0 or 10.0")
        object.__setattr__(self, "scale", scale)

    def output_width(self, width, gates):
        return 2 * self.features

    def shapes(self, width, gates):
        return {"B": (self.features, width)}

    def init(self, key, width, gates, dtype):
        return {"B": self.scale * jax.random.normal(key, (self.features, width), dtype)}

    def jet(self, params, streams):
        b = params["B"] if self.trainable else jax.lax.stop_gradient(params["B"])
        return {**streams, "h": _jet.waves(_jet.linear(streams["h"], b))}
