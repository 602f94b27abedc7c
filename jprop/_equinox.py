"""Equinox interop: any equinox model on the generic road, and `eqx.nn.MLP` <-> `jprop.MLP`.

An equinox module holds its parameters and its functions together; jprop transforms want a pure
`f(params, x)` whose `params` are arrays only. `eqx.partition` splits the two, and `eqx.combine`
joins them back inside `f`. An `eqx.nn.MLP` with tanh/sigmoid layers is exactly a `jprop.MLP`,
so it converts both ways and then gets the closed forms.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._mlp import MLP, Params

_KNOWN = {  # jprop name -> the function equinox would hold
    "linear": lambda z: z,
    "purelin": lambda z: z,
    "tansig": jnp.tanh,
    "logsig": jax.nn.sigmoid,
}


def equinox_function(model: eqx.Module) -> tuple[Any, Any]:
    """Split an equinox model into `(f, params)` for jprop's generic road: `f(params, x) = model(x)`.

    >>> import equinox as eqx, jax, jax.numpy as jnp, jprop
    >>> model = eqx.nn.MLP(3, 2, 8, 2, activation=jnp.tanh, key=jax.random.key(0))
    >>> f, params = jprop.equinox_function(model)
    >>> jprop.hessian(f)(params, jnp.ones(3)).shape
    (2, 3, 3)
    """
    params, static = eqx.partition(model, eqx.is_array)

    def f(params: Any, x: jax.Array) -> jax.Array:
        return eqx.combine(params, static)(x)

    return f, params


def _name_of(function: Any, names: tuple[str, ...], what: str) -> str:
    """Which known activation `function` computes, found by evaluating it on a probe."""
    probe = jnp.linspace(-2.0, 2.0, 7)  # made per call: the default float type may change
    for name in names:
        if bool(jnp.allclose(jax.vmap(function)(probe), _KNOWN[name](probe), atol=1e-6)):
            return name
    raise ValueError(
        f"jprop.from_equinox: the {what} {function!r} is none of {', '.join(names)} "
        "(tanh, sigmoid, identity); jprop.MLP cannot represent it. Use "
        "jprop.equinox_function(model) for the generic road instead."
    )


def from_equinox(model: eqx.nn.MLP) -> tuple[MLP, Params]:
    """Convert an `eqx.nn.MLP` (tanh, sigmoid or identity hidden layers; identity, tanh or sigmoid output;
    biases on) into `(jprop.MLP, params)` computing the same function, for the closed forms.

    >>> import equinox as eqx, jax, jax.numpy as jnp, jprop
    >>> model = eqx.nn.MLP(3, 2, 8, 2, activation=jnp.tanh, key=jax.random.key(0))
    >>> net, params = jprop.from_equinox(model)
    >>> net.sizes, bool(jnp.allclose(net(params, jnp.ones(3)), model(jnp.ones(3))))
    ((3, 8, 8, 2), True)
    """
    if not isinstance(model, eqx.nn.MLP):
        raise TypeError(
            f"jprop.from_equinox: expected an eqx.nn.MLP; got {type(model).__name__}. For other "
            "equinox models use jprop.equinox_function(model)."
        )
    if model.in_size == "scalar" or model.out_size == "scalar":
        raise ValueError(
            "jprop.from_equinox: in_size/out_size 'scalar' MLPs take and return scalars; build "
            "the eqx.nn.MLP with in_size=1 / out_size=1 instead."
        )
    if not (model.use_bias and model.use_final_bias):
        raise ValueError("jprop.from_equinox: jprop.MLP layers all have biases; this MLP has not.")
    if model.scan:
        raise ValueError("jprop.from_equinox: build the eqx.nn.MLP with scan=False to convert it.")
    if model.depth == 0:  # eqx.nn.MLP then applies neither activation: one linear layer
        hidden, output = "tansig", "linear"
    else:
        hidden = _name_of(model.activation, ("tansig", "logsig", "purelin"), "hidden activation")
        output = _name_of(model.final_activation, ("linear", "tansig", "logsig"), "output")
    sizes = (model.in_size,) + tuple(layer.weight.shape[0] for layer in model.layers)
    params = [{"W": layer.weight, "b": layer.bias} for layer in model.layers]
    return MLP(sizes, activation=hidden, output=output), params


def to_equinox(net: MLP, params: Params) -> eqx.nn.MLP:
    """Convert a `jprop.MLP` and its params into an `eqx.nn.MLP` computing the same function.

    `eqx.nn.MLP` has one hidden width, so every hidden layer of `net` must have the same size, and
    it applies its final activation elementwise, so a softmax output has no equivalent.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"jprop.to_equinox: expected a jprop.MLP; got {type(net).__name__}.")
    if net.output == "softmax":
        raise ValueError(
            "jprop.to_equinox: eqx.nn.MLP applies its final activation to each output alone, so "
            "it cannot hold a softmax output; convert a linear-output copy and apply "
            "jax.nn.softmax after it."
        )
    params = net.check_params(params, "jprop.to_equinox")
    hidden = net.sizes[1:-1]
    if not hidden and net.output != "linear":
        raise ValueError(
            "jprop.to_equinox: an eqx.nn.MLP without hidden layers (depth 0) applies no final "
            f"activation, so this network's {net.output!r} output has no equivalent."
        )
    if len(set(hidden)) > 1:
        raise ValueError(
            f"jprop.to_equinox: eqx.nn.MLP has a single hidden width; this network's hidden sizes "
            f"are {hidden}."
        )
    model = eqx.nn.MLP(
        net.n_inputs,
        net.n_outputs,
        hidden[0] if hidden else net.n_inputs,
        len(hidden),
        activation=_KNOWN[net.activation],
        final_activation=_KNOWN["linear" if net.output == "purelin" else net.output],
        key=jax.random.key(0),  # every weight is replaced below
    )
    return eqx.tree_at(
        lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)],
        model,
        [leaf for layer in params for leaf in (jnp.asarray(layer["W"]), jnp.asarray(layer["b"]))],
    )
