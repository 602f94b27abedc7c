"""Equinox interop: any equinox model on the generic road, and `eqx.nn.MLP` <-> `jprop.MLP`.

An equinox module holds its parameters and its functions together; jprop transforms want a pure
`f(params, x)` whose `params` are arrays only. `eqx.partition` splits the two, and `eqx.combine`
joins them back inside `f`. An `eqx.nn.MLP` with tanh/sigmoid layers is exactly a `jprop.MLP`,
so it converts both ways and then gets the closed forms.
"""

from __future__ import annotations

import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._program import type_name
from ._activations import gelu, logsig, purelin, silu, sin, softplus, tansig
from ._mlp import MLP, Params


def _equinox_identity() -> Any:
    """The function eqx.nn.MLP uses when no final activation is given (its signature's default)."""
    return inspect.signature(eqx.nn.MLP.__init__).parameters["final_activation"].default


def _known() -> list[tuple[Any, str]]:
    """(function an equinox MLP may hold, canonical jprop name): identified by what the function
    *is*, never by evaluating it, so conversion works under any transformation and refuses a
    look-alike (a clipped tanh agrees with tanh on [-2.5, 2.5] and nowhere near its ends)."""
    return [
        (jnp.tanh, "tanh"),
        (tansig, "tanh"),
        (jax.nn.sigmoid, "sigmoid"),
        (logsig, "sigmoid"),
        (_equinox_identity(), "identity"),
        (purelin, "identity"),
        (jnp.sin, "sin"),
        (sin, "sin"),
        (jax.nn.softplus, "softplus"),
        (softplus, "softplus"),
        (jax.nn.silu, "silu"),
        (silu, "silu"),
        (gelu, "gelu"),
    ]


# canonical jprop name -> the function an equinox MLP built by `to_equinox` holds
_TO_EQUINOX = {
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "sin": jnp.sin,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": gelu,
}


def equinox_function(model: eqx.Module) -> tuple[Any, Any]:
    """Split an equinox model into `(f, params)` for jprop's generic road: `f(params, x) = model(x)`.

    Examples:
        >>> import equinox as eqx, jax, jax.numpy as jnp, jprop
        >>> model = eqx.nn.MLP(3, 2, 8, 2, activation=jnp.tanh, key=jax.random.key(0))
        >>> f, params = jprop.equinox_function(model)
        >>> jprop.hessian(f)(params, jnp.ones(3)).shape
        (2, 3, 3)
    """
    if not callable(model):
        raise TypeError(
            "jprop.equinox_function: `model` must be an equinox module, called as model(x) on one "
            f"example, such as an eqx.nn.MLP; got {type_name(model)}."
        )
    params, static = eqx.partition(model, eqx.is_array)

    def f(params: Any, x: jax.Array) -> jax.Array:
        return eqx.combine(params, static)(x)

    return f, params


def _called(function: Any) -> str:
    """A function by its name, as its user wrote it (jax.nn.relu is a custom_jvp object whose repr
    is an address); by its repr when it has none (a partial)."""
    name = getattr(function, "__name__", None)
    if name == "<lambda>":
        return "given as a lambda"
    return repr(function) if name is None else name


def _name_of(function: Any, what: str) -> str:
    """Which jprop activation `function` is (by identity), or a clear refusal."""
    for known, name in _known():
        if function is known:
            return name
    if function is jax.nn.softmax:
        raise ValueError(
            "jprop.from_equinox: eqx.nn.MLP applies its final activation to each output alone, so "
            "a softmax there is not the network's softmax; build the eqx.nn.MLP with the default "
            "(identity) final activation, convert it, and use jprop.MLP(..., output='softmax')."
        )
    hint = (
        " jax.nn.gelu defaults to the tanh approximation; jprop's closed forms use the exact erf "
        "form: pass jprop.gelu."
        if function is jax.nn.gelu
        else ""
    )
    raise ValueError(
        f"jprop.from_equinox: the {what} {_called(function)} is not one jprop knows exactly "
        "(jnp.tanh, jax.nn.sigmoid, the identity, jnp.sin, jax.nn.softplus, jax.nn.silu, or "
        "jprop's own tansig/logsig/purelin/sin/softplus/silu/gelu; a wrapped or clipped function "
        "is refused because its derivatives differ)." + hint + " Use "
        "jprop.equinox_function(model) for the generic road instead."
    )


def from_equinox(model: eqx.nn.MLP) -> tuple[MLP, Params]:
    """Convert an `eqx.nn.MLP` (tanh, sigmoid or identity hidden layers; identity, tanh or sigmoid output;
    biases on) into `(jprop.MLP, params)` computing the same function, for the closed forms.

    Examples:
        >>> import equinox as eqx, jax, jax.numpy as jnp, jprop
        >>> model = eqx.nn.MLP(3, 2, 8, 2, activation=jnp.tanh, key=jax.random.key(0))
        >>> net, params = jprop.from_equinox(model)
        >>> net.sizes, bool(jnp.allclose(net(params, jnp.ones(3)), model(jnp.ones(3))))
        ((3, 8, 8, 2), True)
    """
    if not isinstance(model, eqx.nn.MLP):
        raise TypeError(
            f"jprop.from_equinox: expected an eqx.nn.MLP; got {type_name(model)}. For other "
            "equinox models use jprop.equinox_function(model)."
        )
    if model.in_size == "scalar" or model.out_size == "scalar":
        raise ValueError(
            "jprop.from_equinox: in_size/out_size 'scalar' MLPs take and return scalars; build "
            "the eqx.nn.MLP with in_size=1 / out_size=1 instead."
        )
    if not (model.use_bias and model.use_final_bias):
        raise ValueError("jprop.from_equinox: jprop.MLP layers all have biases; this MLP has not.")
    if getattr(model, "scan", False):  # equinox >= 0.13.2 can build an MLP as a scan
        raise ValueError("jprop.from_equinox: build the eqx.nn.MLP with scan=False to convert it.")
    if model.depth == 0:  # eqx.nn.MLP then applies neither activation: one linear layer
        hidden, output = "tanh", "linear"
    else:
        hidden = _name_of(model.activation, "hidden activation")
        output = _name_of(model.final_activation, "final activation")
        if output not in ("identity", "tanh", "sigmoid"):
            raise ValueError(
                f"jprop.from_equinox: a jprop.MLP output is linear, tanh, sigmoid or softmax; this "
                f"MLP's final activation is {output!r}."
            )
    sizes = (model.in_size,) + tuple(layer.weight.shape[0] for layer in model.layers)
    params = [{"W": layer.weight, "b": layer.bias} for layer in model.layers]
    return MLP(sizes, activation=hidden, output=output), params


def to_equinox(net: MLP, params: Params) -> eqx.nn.MLP:
    """Convert a `jprop.MLP` (or a `jprop.Network` of plain Dense layers, through
    `Network.as_mlp()`) and its params into an `eqx.nn.MLP` computing the same function.

    `eqx.nn.MLP` has one hidden width, so every hidden layer of `net` must have the same size, and
    it applies its final activation elementwise, so a softmax output has no equivalent.


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> model = jprop.to_equinox(net, p)
        >>> bool(jnp.allclose(model(jnp.ones(2)), net(p, jnp.ones(2))))
        True
    """
    if type(net).__name__ == "Network":  # a network of plain Dense layers is an MLP
        obstacle = net._not_an_mlp()
        if obstacle:
            raise TypeError(
                f"jprop.to_equinox: this jprop.Network's {obstacle}; a network with layers "
                "other than plain Dense ones has no eqx.nn counterpart: keep it and its params, "
                "a plain pytree, as they are."
            )
        net = net.as_mlp()
    if not isinstance(net, MLP):
        raise TypeError(f"jprop.to_equinox: expected a jprop.MLP; got {type_name(net)}.")
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
    if isinstance(net.activation, tuple):
        raise ValueError(
            "jprop.to_equinox: eqx.nn.MLP has one hidden activation; this network has one per "
            f"layer, {net.activation}."
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
        activation=_TO_EQUINOX.get(net.activation, _equinox_identity()),
        final_activation=_TO_EQUINOX.get(net.output, _equinox_identity()),
        key=jax.random.key(0),  # every weight is replaced below
    )
    return eqx.tree_at(
        lambda m: [leaf for layer in m.layers for leaf in (layer.weight, layer.bias)],
        model,
        [leaf for layer in params for leaf in (jnp.asarray(layer["W"]), jnp.asarray(layer["b"]))],
    )
