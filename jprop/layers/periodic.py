"""`PeriodicEmbedding`: chosen coordinates x_i ↦ [cos ω_i x_i, sin ω_i x_i]."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _base, _jet


@dataclasses.dataclass(frozen=True)
class PeriodicEmbedding(_base.Layer):
    r"""Exact periodicity on chosen coordinates: $h_i \mapsto [\cos \omega_i h_i, \sin \omega_i h_i]$
    for each i in `axes`, the other coordinates passed through (Dong & Ni 2021; jaxpi's
    `period` option). A network after it is periodic in $h_i$ with period $2\pi/\omega_i$.

    **Arguments:**

    - `axes`: the periodic coordinates, e.g. `(1,)` for $u(t, x)$ periodic in x.
    - `periods`: each one's period (a number for all, or one per axis; default $2\pi$).
    - `trainable`: whether ω trains (default: fixed, read through `jax.lax.stop_gradient`).

    Output units: $[\cos \omega h_{axes}, \sin \omega h_{axes}, h_{others}]$. Parameters:
    `{"omega": (len(axes),)}`, initialised to $2\pi/\text{period}$.

    Examples:
        >>> import jprop
        >>> jprop.layers.PeriodicEmbedding(axes=(1,), periods=2.0).output_width(2, None)
        3
    """

    axes: tuple[int, ...]
    periods: Any = 2 * math.pi
    trainable: bool = False

    def __post_init__(self):
        super().__post_init__()
        where = "jprop.layers.PeriodicEmbedding"
        axes = (self.axes,) if isinstance(self.axes, int) else self.axes
        try:
            axes = tuple(axes)
        except TypeError:
            axes = ()
        if (
            not axes
            or any(isinstance(a, bool) or not isinstance(a, int) or a < 0 for a in axes)
            or len(set(axes)) != len(axes)
        ):
            raise ValueError(
                f"{where}: `axes` must be distinct non-negative ints, e.g. axes=(1,); got "
                f"{self.axes!r}."
            )
        periods = self.periods
        periods = (periods,) * len(axes) if isinstance(periods, (int, float)) else periods
        try:
            periods = tuple(float(p) for p in periods)
        except (TypeError, ValueError):
            periods = ()
        if len(periods) != len(axes) or not all(p > 0 for p in periods):
            raise ValueError(
                f"{where}: `periods` must be a positive number or one per axis ({len(axes)}); got "
                f"{self.periods!r}."
            )
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "periods", periods)

    def _check(self, width: int) -> None:
        if max(self.axes) >= width:
            raise ValueError(
                f"jprop.layers.PeriodicEmbedding: `axes` = {self.axes} picks coordinate "
                f"{max(self.axes)}, but its input has only {width}."
            )

    def output_width(self, width, gates):
        self._check(width)
        return width + len(self.axes)

    def shapes(self, width, gates):
        return {"omega": (len(self.axes),)}

    def init(self, key, width, gates, dtype):
        return {"omega": jnp.asarray([2 * math.pi / p for p in self.periods], dtype)}

    def jet(self, params, streams):
        h = streams["h"]
        width = h.value.shape[-1]
        omega = params["omega"] if self.trainable else jax.lax.stop_gradient(params["omega"])
        p = len(self.axes)
        # ω_i h_i for the periodic coordinates: one map, then its cosines and sines
        pick = np.zeros((p, width), np.float32)
        pick[np.arange(p), list(self.axes)] = 1
        scaled = omega[:, None] * jnp.asarray(pick, omega.dtype)
        waves = _jet.waves(_jet.linear(h, scaled))
        others = [i for i in range(width) if i not in self.axes]
        if not others:
            return {**streams, "h": waves}
        keep = np.zeros((len(others), width), np.float32)
        keep[np.arange(len(others)), others] = 1
        rest = _jet.linear(h, jnp.asarray(keep, h.value.dtype))
        return {**streams, "h": _jet.concatenate([waves, rest])}
