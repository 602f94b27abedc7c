"""What every layer kind provides, and the dense map the kinds share.

A layer is a frozen, hashable description (it holds no arrays, so a network of layers is a static
argument of `jit`). It tells the width it maps to, the shapes of its parameters, how to initialise
them, and one step, `jet`, written in the operations of `_jet.py`: the network's value, its
Jacobian's columns, its Laplacian and its Hessian diagonal all run that one step, asking for more
or less of the jet.

The step reads and writes *streams*: `"h"`, the running hidden state, and, once a `Gates` layer has
run, `"U"` and `"V"`, the two encoder outputs that gated layers mix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._validation import as_float_array, check_size, switch
from ..models._activations import HIDDEN_ALIASES
from ..models._mlp import canonical_activation
from . import _jet


class Layer:
    """The protocol every layer kind implements (see `docs/howto/architectures.md`, "Adding a
    layer kind")."""

    def __post_init__(self):
        """A kind's `width`, `activation` and on/off fields (`factorised`, `trainable`), where it
        has them, checked and stored in canonical form (MATLAB's names as the standard ones), so
        equal layers compare equal."""
        where = f"jprop.layers.{type(self).__name__}"
        if "width" in self.__dataclass_fields__:
            object.__setattr__(self, "width", positive_width(self.width, "width", where))
        if "activation" in self.__dataclass_fields__:
            object.__setattr__(self, "activation", activation_name(self.activation, where))
        for flag in ("factorised", "trainable"):
            if flag in self.__dataclass_fields__:
                object.__setattr__(self, flag, switch(getattr(self, flag), flag, where))

    def output_width(self, width: int, gates: int | None) -> int:
        """The width of h after the layer, given h's width before and the gates' (None: none yet)."""
        raise NotImplementedError

    def output_gates(self, width: int, gates: int | None) -> int | None:
        """The gates' width after the layer (a `Gates` layer sets it; others keep it)."""
        return gates

    def shapes(self, width: int, gates: int | None) -> dict[str, Any]:
        """The parameters' shapes: a dict of shapes (tuples) or nested dicts of them."""
        raise NotImplementedError

    def init(self, key: jax.Array, width: int, gates: int | None, dtype: Any) -> dict[str, Any]:
        """The parameters, drawn from `key` with `jax.random` (traced: `Network.init` runs each
        layer's `init` under `jax.jit`, with the layer, its widths and the dtype static)."""
        raise NotImplementedError

    def jet(self, params: dict[str, Any], streams: dict[str, _jet.Jet]) -> dict[str, _jet.Jet]:
        raise NotImplementedError


def activation_name(name: Any, where: str) -> str:
    """The canonical name of a hidden activation, or a ValueError listing the known ones."""
    return canonical_activation(name, HIDDEN_ALIASES, "activation", where)


def positive_width(value: Any, name: str, where: str) -> int:
    return check_size(value, name, where)


# A dense map W h + b, plain ({"W", "b"}) or with random weight factorisation ({"g", "V", "b"},
# W = diag(exp g) V; Wang, Wang & Perdikaris 2022).


def dense_shapes(fan_in: int, fan_out: int, factorised: bool) -> dict[str, tuple[int, ...]]:
    if factorised:
        return {"g": (fan_out,), "V": (fan_out, fan_in), "b": (fan_out,)}
    return {"W": (fan_out, fan_in), "b": (fan_out,)}


def dense_init(key, fan_in: int, fan_out: int, factorised: bool, dtype) -> dict[str, jax.Array]:
    """Glorot-normal W and zero b, the field's default; factorised, g ~ N(1, 0.1) and
    V = diag(exp(-g)) W, so that W itself is Glorot-normal."""
    k_w, k_g = jax.random.split(key)
    w = jax.nn.initializers.glorot_normal()(k_w, (fan_out, fan_in), dtype)
    b = jnp.zeros((fan_out,), dtype)
    if not factorised:
        return {"W": w, "b": b}
    g = 1.0 + 0.1 * jax.random.normal(k_g, (fan_out,), dtype)
    return {"g": g, "V": w * jnp.exp(-g)[:, None], "b": b}


def dense_weight(params: dict[str, jax.Array]) -> jax.Array:
    """W, or diag(exp g) V for factorised parameters."""
    if "W" in params:
        return params["W"]
    return jnp.exp(params["g"])[:, None] * params["V"]


def dense(h: _jet.Jet, params: dict[str, jax.Array], activation: str) -> _jet.Jet:
    """σ(W h + b) on a jet."""
    return _jet.activate(_jet.linear(h, dense_weight(params), params["b"]), activation)


def check_shapes(params: Any, shapes: Any, where: str, path: str) -> None:
    """params against a (nested) dict of shapes, naming the first entry that differs."""
    if isinstance(shapes, dict):
        if not isinstance(params, dict) or set(params) != set(shapes):
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise ValueError(
                f"{where}: {path} must be a dict with keys {sorted(shapes)}; got {got}."
            )
        for name, shape in shapes.items():
            check_shapes(params[name], shape, where, f"{path}[{name!r}]")
        return
    if isinstance(shapes, list):
        if not isinstance(params, (list, tuple)) or len(params) != len(shapes):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"{where}: {path} must be a list of {len(shapes)}; got {got}.")
        for index, shape in enumerate(shapes):
            check_shapes(params[index], shape, where, f"{path}[{index}]")
        return
    value = as_float_array(params, path, where)
    if value.shape != tuple(shapes):
        raise ValueError(f"{where}: {path} must have shape {tuple(shapes)}; got {value.shape}.")
