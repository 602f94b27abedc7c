"""Multilayer perceptrons as pure functions: a static description plus a parameter pytree."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, activation_function
from ._validation import as_float_array, check_input, check_size

Params = list[dict[str, jax.Array]]


def _check_name(name: Any, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(
            f"MLP: unknown {what} {name!r}; known: " + ", ".join(repr(a) for a in allowed) + "."
        )
    return name


@dataclasses.dataclass(frozen=True)
class MLP:
    r"""A feed-forward network $z^l = W^l y^{l-1} + b^l,\ y^l = \sigma(z^l)$, $y^0 = x$ (MATH.md).

    A frozen, hashable description: it holds no arrays, so it can be a static argument of `jit`
    and jprop recognises it to use the closed-form road.

    **Arguments:**
    - `sizes`: layer widths `(n, h1, ..., m)`, at least two positive ints.
    - `activation`: hidden activation, one of `"tansig"` (default), `"logsig"`, `"purelin"`.
    - `output`: output activation, one of `"linear"` (default), `"tansig"`, `"logsig"`, `"softmax"`.

    Parameters are a list with one `{"W": (n_l, n_{l-1}), "b": (n_l,)}` dict per layer.

    >>> import jax, jprop
    >>> net = jprop.MLP((2, 10, 1))
    >>> params = net.init(jax.random.key(0))
    >>> net(params, jax.numpy.zeros(2)).shape
    (1,)
    """

    sizes: tuple[int, ...]
    activation: str = "tansig"
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
        _check_name(self.activation, HIDDEN_ACTIVATIONS, "hidden activation")
        _check_name(self.output, OUTPUT_ACTIVATIONS, "output activation")
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
        return (self.activation,) * (self.depth - 1) + (self.output,)

    def init(self, key: jax.Array, dtype: Any = jnp.float32) -> Params:
        r"""Random parameters: $W^l, b^l \sim U(-1/\sqrt{n_{l-1}}, 1/\sqrt{n_{l-1}})$.

        **Arguments:** `key`: a `jax.random.key`; `dtype`: a floating dtype (default float32).

        **Returns:** `[{"W": (n_l, n_{l-1}), "b": (n_l,)} for l = 1..L]`.
        """
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"MLP.init: `dtype` must be a floating dtype; got {dtype}.")
        params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            key, kw, kb = jax.random.split(key, 3)
            bound = 1.0 / fan_in**0.5
            params.append(
                {
                    "W": jax.random.uniform(kw, (fan_out, fan_in), dtype, -bound, bound),
                    "b": jax.random.uniform(kb, (fan_out,), dtype, -bound, bound),
                }
            )
        return params

    def check_params(self, params: Any, where: str = "MLP") -> Params:
        """Check that `params` match this description, layer by layer; return them as a list."""
        if not isinstance(params, (list, tuple)):
            raise TypeError(
                f"{where}: params must be a list of {self.depth} dicts {{'W', 'b'}} as made by "
                f"MLP.init; got {type(params).__name__}."
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

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        """Evaluate the network: `x` of shape `(n,)` or `(..., n)` gives `(m,)` or `(..., m)`."""
        params = self.check_params(params)
        y = check_input(x, "MLP", self.n_inputs)
        for layer, name in zip(params, self.activations()):
            y = activation_function(name)(y @ layer["W"].T + layer["b"])
        return y
