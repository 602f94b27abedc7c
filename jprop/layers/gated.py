"""`Gates` and `GatedDense`: the modified MLP of Wang, Teng & Perdikaris (2021)."""

from __future__ import annotations

import dataclasses

import jax

from . import _base, _jet


def _needs(gates, where: str) -> int:
    if gates is None:
        raise ValueError(
            f"{where}: a gated layer mixes the encoders U and V, which a jprop.layers.Gates "
            "layer computes; put one before it (after the embedding)."
        )
    return gates


@dataclasses.dataclass(frozen=True)
class Gates(_base.Layer):
    r"""The two encoders of a modified MLP or PirateNet, $U = \sigma(W_u h + b_u)$ and
    $V = \sigma(W_v h + b_v)$, computed from the current h (the embedding) and kept for the gated
    layers after it; h itself passes unchanged.

    **Arguments:** `width` (the encoders' and gated layers' width), `activation` (`"tanh"`),
    `factorised` as for `jprop.layers.Dense`.

    Parameters: `{"U": {"W", "b"}, "V": {"W", "b"}}`.

    Examples:
        >>> import jprop
        >>> jprop.layers.Gates(256).output_gates(3, None)
        256
    """

    width: int
    activation: str = "tanh"
    factorised: bool = False

    def output_width(self, width, gates):
        return width

    def output_gates(self, width, gates):
        return self.width

    def shapes(self, width, gates):
        one = _base.dense_shapes(width, self.width, self.factorised)
        return {"U": one, "V": one}

    def init(self, key, width, gates, dtype):
        k_u, k_v = jax.random.split(key)
        return {
            name: _base.dense_init(k, width, self.width, self.factorised, dtype)
            for name, k in (("U", k_u), ("V", k_v))
        }

    def jet(self, params, streams):
        h = streams["h"]
        u = _base.dense(h, params["U"], self.activation)
        v = _base.dense(h, params["V"], self.activation)
        return {**streams, "U": u, "V": v, "U-V": _jet.subtract(u, v)}


def mix(z: _jet.Jet, streams: dict[str, _jet.Jet]) -> _jet.Jet:
    """z ∘ U + (1 − z) ∘ V, written V + z ∘ (U − V): one product."""
    return _jet.add(streams["V"], _jet.multiply(z, streams["U-V"]))


@dataclasses.dataclass(frozen=True)
class GatedDense(_base.Layer):
    r"""A modified-MLP hidden layer: $z = \sigma(W h + b)$, $h \leftarrow z \odot U +
    (1 - z) \odot V$, with U, V from the `Gates` layer before it; its width is theirs.

    **Arguments:** `activation` (`"tanh"`) and `factorised` as for `jprop.layers.Dense`.

    Examples:
        >>> import jprop
        >>> jprop.layers.GatedDense().output_width(2, 256)
        256
    """

    activation: str = "tanh"
    factorised: bool = False

    def output_width(self, width, gates):
        return _needs(gates, "jprop.layers.GatedDense")

    def shapes(self, width, gates):
        return _base.dense_shapes(width, _needs(gates, "jprop.layers.GatedDense"), self.factorised)

    def init(self, key, width, gates, dtype):
        return _base.dense_init(key, width, gates, self.factorised, dtype)

    def jet(self, params, streams):
        z = _base.dense(streams["h"], params, self.activation)
        return {**streams, "h": mix(z, streams)}
