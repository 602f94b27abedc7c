"""`PirateBlock`: the adaptive residual block of PirateNets (Wang, Sankaran, Wang & Perdikaris 2024)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import _base, _jet
from .gated import mix


@dataclasses.dataclass(frozen=True)
class PirateBlock(_base.Layer):
    r"""A PirateNet block on h, with U, V from the `Gates` layer before it:

    $f = \sigma(W_1 h + b_1)$, $z_1 = f \odot U + (1 - f) \odot V$,
    $g = \sigma(W_2 z_1 + b_2)$, $z_2 = g \odot U + (1 - g) \odot V$,
    $h' = \sigma(W_3 z_2 + b_3)$, $h \leftarrow \alpha h' + (1 - \alpha) h$,

    with a trainable scalar $\alpha$ initialised to 0 (the block starts as the identity). h, U and
    V must have the same width (an embedding of 2F = width units, as in the paper).

    **Arguments:** `activation` (`"tanh"`) and `factorised` as for `jprop.layers.Dense`.

    Parameters: `{"dense": [three dense dicts], "alpha": ()}`.

    Examples:
        >>> import jprop
        >>> jprop.layers.PirateBlock().output_width(256, 256)
        256
    """

    activation: str = "tanh"
    factorised: bool = False

    def output_width(self, width, gates):
        if gates is None or gates != width:
            raise ValueError(
                "jprop.layers.PirateBlock: the block's skip h ← αh' + (1 − α)h needs h as wide as "
                f"the gates U, V; h has {width} units and the gates "
                + (
                    "are missing (put a jprop.layers.Gates layer before it)"
                    if gates is None
                    else f"{gates}"
                )
                + "."
            )
        return width

    def shapes(self, width, gates):
        self.output_width(width, gates)
        one = _base.dense_shapes(width, width, self.factorised)
        return {"dense": [one, one, one], "alpha": ()}

    def init(self, key, width, gates, dtype):
        keys = jax.random.split(key, 3)
        return {
            "dense": [_base.dense_init(k, width, width, self.factorised, dtype) for k in keys],
            "alpha": jnp.zeros((), dtype),
        }

    def jet(self, params, streams):
        h = streams["h"]
        first, second, third = params["dense"]
        z1 = mix(_base.dense(h, first, self.activation), streams)
        z2 = mix(_base.dense(z1, second, self.activation), streams)
        out = _base.dense(z2, third, self.activation)
        # αh' + (1 − α)h = h + α(h' − h)
        return {**streams, "h": _jet.add(h, _jet.subtract(out, h), alpha=params["alpha"])}
