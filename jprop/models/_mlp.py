"""Multilayer perceptrons as pure functions: a static description plus a parameter pytree."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax

from .._program import broadcasting
from .._validation import (
    as_float_array,
    as_key,
    check_input,
    check_size,
    computation_dtype,
    float_dtype,
    in_dtype,
    not_params,
)
from ._activations import HIDDEN_ALIASES, OUTPUT_ALIASES, activation_function

Params = list[dict[str, jax.Array]]


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _draw_layer(key: jax.Array, fan_in: int, fan_out: int, dtype: Any):
    """One layer's draws and the key for the next, in one compiled program per layer shape and
    dtype: networks that share a layer's shape share its program (drawn op by op, each new
    parameter shape would compile several; drawn as one network, each new network one)."""
    key, kw, kb = jax.random.split(key, 3)
    bound = 1.0 / fan_in**0.5
    return key, {
        "W": jax.random.uniform(kw, (fan_out, fan_in), dtype, -bound, bound),
        "b": jax.random.uniform(kb, (fan_out,), dtype, -bound, bound),
    }


def canonical_activation(name: Any, aliases: dict[str, str], what: str, where: str = "MLP") -> str:
    """The canonical name of an activation given by its standard or MATLAB name, or a ValueError
    listing the known ones (and, for a function given instead of its name, saying so)."""
    if not isinstance(name, str) or name not in aliases:
        hint = (
            " Pass the activation's name as a string, e.g. 'tanh' for jnp.tanh."
            if callable(name)
            else ""
        )
        raise ValueError(
            f"{where}: unknown {what} {name!r}; known: "
            + ", ".join(repr(a) for a in aliases)
            + "."
            + hint
        )
    return aliases[name]


@dataclasses.dataclass(frozen=True)
class MLP:
    r"""A feed-forward network $z^l = W^l y^{l-1} + b^l,\ y^l = \sigma(z^l)$, $y^0 = x$ (docs/math.md).

    A frozen, hashable description: it holds no arrays, so it can be a static argument of `jit`
    and jprop recognises it to use the closed-form road.

    **Arguments:**

    - `sizes`: layer widths `(n, h1, ..., m)`, at least two positive ints.
    - `activation`: the hidden activation, `"tanh"` (default; MATLAB's `"tansig"`), `"sigmoid"`
      (`"logsig"`), `"identity"` (`"linear"`, `"purelin"`), `"sin"`, `"softplus"`, `"silu"`
      (`"swish"`) or `"gelu"` (the exact erf form); or a tuple with one such name per hidden layer.
    - `output`: the output activation, `"linear"` (default; also `"identity"`, `"purelin"`),
      `"tanh"`, `"sigmoid"` or `"softmax"`.

    Names are stored in their standard form (MATLAB's `"tansig"` as `"tanh"`, `"logsig"` as
    `"sigmoid"`, `"purelin"` as `"identity"`), so networks written either way are equal and share
    compiled programs.

    Parameters are a list with one `{"W": (n_l, n_{l-1}), "b": (n_l,)}` dict per layer.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((2, 10, 1))
        >>> params = net.init(jax.random.key(0))
        >>> net(params, jax.numpy.zeros(2)).shape
        (1,)
    """

    sizes: tuple[int, ...]
    activation: str | tuple[str, ...] = "tanh"
    output: str = "linear"

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
            raise TypeError(
                f"MLP: `sizes` must be a sequence of layer widths like (n, h1, ..., m); got {sizes!r}."
            )
        if len(sizes) < 2:
            raise ValueError(
                f"MLP: `sizes` needs at least two entries, the input and output widths "
                f"(n, ..., m); got {tuple(sizes)!r}."
            )
        for i, width in enumerate(sizes):
            check_size(width, f"sizes[{i}]", "MLP")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        hidden = len(self.sizes) - 2
        if isinstance(self.activation, (tuple, list)):
            if len(self.activation) != hidden:
                raise ValueError(
                    f"MLP: `activation` as a sequence needs one name per hidden layer, {hidden} "
                    f"for sizes {self.sizes}; got {len(self.activation)}: {tuple(self.activation)!r}."
                )
            names = tuple(
                canonical_activation(a, HIDDEN_ALIASES, "hidden activation")
                for a in self.activation
            )
            activation = names[0] if len(set(names)) == 1 else names
        else:
            activation = canonical_activation(self.activation, HIDDEN_ALIASES, "hidden activation")
        object.__setattr__(self, "activation", activation)
        object.__setattr__(
            self, "output", canonical_activation(self.output, OUTPUT_ALIASES, "output activation")
        )
        if self.output == "softmax" and self.sizes[-1] < 2:
            raise ValueError("MLP: a softmax output needs at least 2 outputs; got m = 1.")

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def depth(self) -> int:
        """The number of weight layers L."""
        return len(self.sizes) - 1

    def activations(self) -> tuple[str, ...]:
        """The activation name of each layer 1..L (hidden ones, then the output)."""
        hidden = self.activation
        hidden = hidden if isinstance(hidden, tuple) else (hidden,) * (self.depth - 1)
        return hidden + (self.output,)

    @property
    def layers(self) -> tuple[Any, ...]:
        """The network as layers: one `jprop.layers.Dense` per weight layer, the output's last.

        An MLP is the network of these layers, with the same parameters (one `{"W", "b"}` per
        layer); its closed road runs passes written for that one structure, which also give the
        closed Hessian, the Hessian-vector product and J-prop's four passes.
        A softmax output couples the outputs and is no elementwise layer: it has no such form.
        """
        from ..layers import Dense

        if self.output == "softmax":
            raise ValueError(
                "MLP.layers: a softmax output couples the outputs, so it is not a "
                "jprop.layers.Dense layer; only MLPs with an elementwise output have layers."
            )
        names = self.activations()
        out = "identity" if names[-1] == "linear" else names[-1]
        hidden = [Dense(w, a) for w, a in zip(self.sizes[1:-1], names[:-1])]
        return (*hidden, Dense(self.n_outputs, out))

    def as_network(self) -> Any:
        """This MLP as a `jprop.Network` of its `layers`, taking the same parameters.

        Examples:
            >>> import jax, jax.numpy as jnp, jprop
            >>> net = jprop.MLP((2, 8, 1)); params = net.init(jax.random.key(0))
            >>> x = jnp.ones((3, 2))
            >>> bool(jnp.allclose(net.as_network()(params, x), net(params, x)))
            True
        """
        from ..layers import Network

        return Network(self.n_inputs, self.layers)

    def init(self, key: jax.Array, dtype: Any = None) -> Params:
        r"""Random parameters: $W^l, b^l \sim U(-1/\sqrt{n_{l-1}}, 1/\sqrt{n_{l-1}})$.

        **Arguments:** `key`: a `jax.random.key`; `dtype`: a floating dtype (default: JAX's
        default float type, float64 when `jax_enable_x64` is on, float32 otherwise).

        **Returns:** `[{"W": (n_l, n_{l-1}), "b": (n_l,)} for l = 1..L]`.
        """
        dtype = float_dtype(dtype, "MLP.init")
        key = as_key(key, "MLP.init")
        params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            key, layer = _draw_layer(key, fan_in, fan_out, dtype)
            params.append(layer)
        return params

    def check_params(self, params: Any, where: str = "MLP") -> Params:
        """Check that `params` match this description, layer by layer; return them as a list."""
        if not isinstance(params, (list, tuple)):
            raise TypeError(
                f"{where}: params must be a list of {self.depth} dicts {{'W', 'b'}} as made by "
                f"MLP.init; got {not_params(params)}."
            )
        if len(params) != self.depth:
            raise ValueError(
                f"{where}: params have {len(params)} layers but the network {self.sizes} has "
                f"{self.depth}."
            )
        for index, (layer, fan_in, fan_out) in enumerate(
            zip(params, self.sizes[:-1], self.sizes[1:]), start=1
        ):
            if not isinstance(layer, dict) or set(layer) != {"W", "b"}:
                keys = sorted(layer) if isinstance(layer, dict) else type(layer).__name__
                raise ValueError(
                    f"{where}: layer {index} must be a dict with keys 'W' and 'b'; got {keys}."
                )
            for name, expected in (("W", (fan_out, fan_in)), ("b", (fan_out,))):
                value = as_float_array(layer[name], f"params[{index - 1}]['{name}']", where)
                if value.shape != expected:
                    raise ValueError(
                        f"{where}: layer {index} {name} must have shape {expected} for sizes "
                        f"{self.sizes}; got {value.shape}."
                    )
        return list(params)

    @broadcasting
    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        """Evaluate the network: `x` of shape `(n,)` or `(..., n)` gives `(m,)` or `(..., m)`."""
        params = self.check_params(params)
        y = check_input(x, "MLP", self.n_inputs)
        dtype = computation_dtype(params, y)  # JAX's promotion of params and x, strict or not
        y, params = y.astype(dtype), in_dtype(params, dtype)
        for layer, name in zip(params, self.activations()):
            y = activation_function(name)(y @ layer["W"].T + layer["b"])
        return y
