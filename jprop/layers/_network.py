"""`Network`: a sequence of layers, and the passes that run its layers' jet steps."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .._program import broadcasting
from .._validation import (
    as_key,
    check_input,
    check_size,
    computation_dtype,
    float_dtype,
    in_dtype,
    not_params,
    switch,
)
from ..models._activations import OUTPUT_ALIASES
from ..models._mlp import MLP
from ..quantities import _forward_laplacian
from . import _base, _jet
from .dense import Dense

Params = list[dict[str, Any]]


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _draw(layer: _base.Layer, key: jax.Array, width: int, gates: int | None, dtype: Any):
    """A layer's `init`, traced into one compiled program per layer, its input widths and dtype:
    networks that share a layer share its program (drawn op by op, each new parameter shape
    would compile several; drawn as one network, each new network one)."""
    return layer.init(key, width, gates, dtype)


@dataclasses.dataclass(frozen=True)
class Network:
    r"""A network of layers: an embedding, encoders, gated, residual or plain dense layers, in any
    order that fits, ending in a `jprop.layers.Dense` output layer.

    Like `jprop.MLP` it is a frozen, hashable description with its parameters kept apart (a list
    with one dict per layer), and jprop knows its structure: the Laplacian (with `dims=`), the
    Hessian diagonal, the Jacobian's columns, the R-operator and the J-prop objectives run each
    layer's own derivative step (docs/howto/architectures.md), and `jax.grad` of a loss on them differentiates those
    steps, never a dense Hessian.

    **Arguments:**

    - `n_inputs`: the input size n.
    - `layers`: a sequence of `jprop.layers` kinds; the last must be a `jprop.layers.Dense`.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> from jprop import layers
        >>> net = jprop.Network(2, [layers.FourierFeatures(16), layers.Gates(32),
        ...                         layers.GatedDense(), layers.GatedDense(),
        ...                         layers.Dense(1, "identity")])
        >>> params = net.init(jax.random.key(0))
        >>> net(params, jnp.zeros((5, 2))).shape, jprop.laplacian(net)(params, jnp.zeros(2)).shape
        ((5, 1), (1,))
    """

    n_inputs: int
    layers: tuple[_base.Layer, ...]

    def __post_init__(self):
        where = "jprop.Network"
        object.__setattr__(self, "n_inputs", check_size(self.n_inputs, "n_inputs", where))
        layers = self.layers
        if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
            raise TypeError(
                f"{where}: `layers` must be a non-empty sequence of jprop.layers kinds ending in "
                f"jprop.layers.Dense; got {layers!r}."
            )
        for index, layer in enumerate(layers):
            if not isinstance(layer, _base.Layer):
                kinds = ", ".join(sorted(kind.__name__ for kind in _base.Layer.__subclasses__()))
                raise TypeError(
                    f"{where}: layers[{index}] must be a jprop.layers kind ({kinds}); got "
                    f"{type(layer).__name__}."
                )
        if not isinstance(layers[-1], Dense):
            raise ValueError(
                f"{where}: the last layer must be a jprop.layers.Dense (the output layer, e.g. "
                f"Dense(1, 'identity')); got {type(layers[-1]).__name__}."
            )
        object.__setattr__(self, "layers", tuple(layers))
        self.widths()  # each layer checks that it fits the one before

    def widths(self) -> list[tuple[int, int | None]]:
        """(h's width, the gates' width or None) entering each layer, then after the last."""
        width, gates, out = self.n_inputs, None, []
        for layer in self.layers:
            out.append((width, gates))
            width, gates = layer.output_width(width, gates), layer.output_gates(width, gates)
        return out + [(width, gates)]

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].width

    def init(self, key: jax.Array, dtype: Any = None) -> Params:
        """Parameters with the field's defaults: Glorot-normal weights, zero biases, B ~ N(0, s²)
        for Fourier features, g ~ N(1, 0.1) for factorised weights, α = 0 for PirateNet blocks.

        **Arguments:** `key`: a `jax.random.key`; `dtype`: a floating dtype (default: JAX's default
        float type).

        **Returns:** a list with one dict per layer.
        """
        dtype = float_dtype(dtype, "jprop.Network.init")
        keys = jax.random.split(as_key(key, "jprop.Network.init"), len(self.layers))
        return [
            _draw(layer, k, width, gates, dtype)
            for k, layer, (width, gates) in zip(keys, self.layers, self.widths())
        ]

    def as_mlp(self) -> MLP:
        """This network as the `jprop.MLP` that computes the same function with the same
        parameters, the inverse of `MLP.as_network()`: for a network whose every layer is a plain
        `jprop.layers.Dense` (not factorised), with an identity, tanh or sigmoid output layer.
        jprop's transforms run every quantity of such a network as this MLP (the passes written
        for its one structure), and `jprop.to_equinox` converts it through it.

        Raises `ValueError` naming the first layer an MLP cannot hold.

        Examples:
            >>> import jax, jax.numpy as jnp, jprop
            >>> from jprop import layers
            >>> net = jprop.Network(2, [layers.Dense(8), layers.Dense(1, "identity")])
            >>> net.as_mlp()
            MLP(sizes=(2, 8, 1), activation='tanh', output='linear')
            >>> params = net.init(jax.random.key(0)); x = jnp.ones((3, 2))
            >>> bool(jnp.allclose(net.as_mlp()(params, x), net(params, x)))
            True
        """
        obstacle = self._not_an_mlp()
        if obstacle:
            raise ValueError(
                f"jprop.Network.as_mlp: {obstacle}, which a jprop.MLP does not hold; only a "
                "network of plain Dense layers is an MLP."
            )
        sizes = (self.n_inputs, *(layer.width for layer in self.layers))
        hidden = tuple(layer.activation for layer in self.layers[:-1])
        activation = hidden if hidden else "tanh"  # no hidden layer: the activation is unused
        return MLP(sizes, activation=activation, output=self.layers[-1].activation)

    def _not_an_mlp(self) -> str:
        """Why `as_mlp` cannot hold this network ("layers[i] is ..."), or "" if it can."""
        for index, layer in enumerate(self.layers):
            plain = isinstance(layer, Dense) and not layer.factorised
            if plain and (index < len(self.layers) - 1 or layer.activation in OUTPUT_ALIASES):
                continue
            if plain:
                what = (
                    f"a {layer.activation!r} output layer (an MLP's output is identity, tanh or "
                    "sigmoid)"
                )
            elif isinstance(layer, Dense):
                what = "a factorised Dense layer"
            else:
                what = f"a {type(layer).__name__} layer"
            return f"layers[{index}] is {what}"
        return ""

    def check_params(self, params: Any, where: str = "jprop.Network") -> Params:
        """Check that `params` match the layers, naming the first entry that does not."""
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            wrong_type = not isinstance(params, (list, tuple))
            got = not_params(params) if wrong_type else f"{len(params)} entries"
            raise (TypeError if wrong_type else ValueError)(
                f"{where}: params must be a list with one dict per layer ({len(self.layers)}), as "
                f"made by Network.init; got {got}."
            )
        for index, (layer, (width, gates)) in enumerate(zip(self.layers, self.widths())):
            path = f"params[{index}] ({type(layer).__name__})"
            _base.check_shapes(params[index], layer.shapes(width, gates), where, path)
        return list(params)

    def propagate(
        self,
        params: Params,
        x: jax.Array,
        tangents: Any = None,
        per_tangent: bool = False,
        second: bool = True,
        drift: bool = False,
        b: jax.Array | None = None,
    ) -> _jet.Jet:
        """Run every layer's step on x (B, n): the output's value and, given input `tangents` (the
        identity's columns for chosen inputs, or an array (B or 1, k, n)), its tangents and, if
        `second`, its Laplacian (each tangent's apart with `per_tangent`); with `drift`, its
        derivative along b (B, n) too, along x itself when b is None. The value alone takes x
        with any leading axes, (..., n). The passes of the closed road call this; users call the
        network or jprop's transforms."""
        # one precision throughout: the params in x's dtype, which the caller has promoted
        params = in_dtype(params, x.dtype)
        if isinstance(tangents, jax.Array):
            tangents = tangents.astype(x.dtype)
        start = None if not drift else x if b is None else b.astype(x.dtype)
        streams = {"h": _jet.Jet(x, tangents, None, per_tangent, second, start)}
        for layer, layer_params in zip(self.layers, params):
            streams = layer.jet(layer_params, streams)
        return streams["h"]

    @broadcasting
    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        """Evaluate the network: `x` of shape `(n,)` or `(..., n)` gives `(m,)` or `(..., m)`."""
        params = self.check_params(params)
        x = check_input(x, "jprop.Network", self.n_inputs)
        x = x.astype(computation_dtype(params, x))  # JAX's promotion of params and x
        # the value alone maps the last axis, whatever the leading ones: x is not flattened, so
        # JAX's transforms of one example (jax.jacrev, jax.hessian under jax.vmap) see plain
        # vector-matrix products, not batches of one row
        return self.propagate(params, x).value


def modified_mlp(
    n_inputs: int,
    n_outputs: int,
    *,
    width: int = 256,
    depth: int = 4,
    activation: str = "tanh",
    fourier_features: int | None = None,
    scale: float = 1.0,
    factorised: bool = False,
) -> Network:
    r"""The modified MLP of Wang, Teng & Perdikaris (2021), optionally on Fourier features:
    $\gamma$, $U = \sigma(W_u\gamma + b_u)$, $V = \sigma(W_v\gamma + b_v)$, `depth` gated layers
    $h \leftarrow z \odot U + (1 - z) \odot V$, $z = \sigma(W h + b)$, and a linear output layer.

    **Arguments:** `n_inputs`, `n_outputs`; `width` (256) and `depth` (4), the field's defaults;
    `activation`; `fourier_features` F (None: γ(x) = x) at standard deviation `scale`;
    `factorised` for random weight factorisation of every dense map.

    **Returns:** a `jprop.Network`.

    Examples:
        >>> import jprop
        >>> net = jprop.modified_mlp(2, 1, width=64, depth=3, fourier_features=32)
        >>> [type(layer).__name__ for layer in net.layers][:3]
        ['FourierFeatures', 'Gates', 'GatedDense']
    """
    from .fourier import FourierFeatures
    from .gated import GatedDense, Gates

    where = "jprop.modified_mlp"
    factorised = switch(factorised, "factorised", where)
    width = check_size(width, "width", where)
    depth = check_size(depth, "depth", where)
    embedding = [] if fourier_features is None else [FourierFeatures(fourier_features, scale)]
    return Network(
        n_inputs,
        [
            *embedding,
            Gates(width, activation, factorised),
            *[GatedDense(activation, factorised) for _ in range(depth)],
            Dense(n_outputs, "identity", factorised),
        ],
    )


def pirate_net(
    n_inputs: int,
    n_outputs: int,
    *,
    width: int = 256,
    blocks: int = 3,
    activation: str = "tanh",
    scale: float = 1.0,
    factorised: bool = False,
) -> Network:
    r"""A PirateNet (Wang, Sankaran, Wang & Perdikaris 2024): Fourier features with `width / 2`
    frequencies at standard deviation `scale`, the encoders U, V, `blocks` adaptive residual
    blocks (`jprop.layers.PirateBlock`, α = 0 at initialisation) and a linear output layer.

    **Arguments:** `n_inputs`, `n_outputs`; `width` (256, even) and `blocks` (3), the field's
    defaults; `activation`; `scale`; `factorised` for random weight factorisation.

    **Returns:** a `jprop.Network`.

    Examples:
        >>> import jprop
        >>> net = jprop.pirate_net(3, 1, width=64, blocks=2)
        >>> net.widths()[-2]
        (64, 64)
    """
    from .fourier import FourierFeatures
    from .gated import Gates
    from .pirate import PirateBlock

    where = "jprop.pirate_net"
    factorised = switch(factorised, "factorised", where)
    width = check_size(width, "width", where)
    if width % 2:
        raise ValueError(
            f"{where}: `width` must be even (the Fourier embedding has width/2 frequencies, each "
            f"a cosine and a sine); got {width}."
        )
    blocks = check_size(blocks, "blocks", where)
    return Network(
        n_inputs,
        [
            FourierFeatures(width // 2, scale),
            Gates(width, activation, factorised),
            *[PirateBlock(activation, factorised) for _ in range(blocks)],
            Dense(n_outputs, "identity", factorised),
        ],
    )


# The passes over a batch x (B, n): what the closed road of each quantity runs for a Network.


def _zeros_if_none(a, shape, dtype):
    return jnp.zeros(shape, dtype) if a is None else a


def fewer_pay(net: Network, k: int) -> bool:
    """Whether the network reads x through one `Dense` map a¹ = W¹x + b¹ with fewer units than
    k shared input directions, and has layers after it: then `_forward_laplacian.fewer_directions`
    gives as many directions as a¹ has units, with the same sum Σ_p d_pᵀ ∇²f d_p (every later
    layer reads x only through a¹)."""
    first = net.layers[0]
    return isinstance(first, Dense) and len(net.layers) > 1 and k > first.width


def fewer_directions(net: Network, params: Params, directions: Any) -> jax.Array:
    """The first `Dense` layer's directions (h₁, n) for k > h₁ shared `directions` (None: all
    inputs; coordinates; or vectors (k, n)), as `fewer_directions` gives them for an MLP."""
    w = _base.dense_weight(params[0])
    return _forward_laplacian.fewer_directions(w, directions, net.n_inputs)


def laplacian(net: Network, params: Params, x: jax.Array, dims=None) -> jax.Array:
    """Δf over the inputs `dims` (all when None), (B, m): the forward Laplacian through each layer;
    over more inputs than a first `Dense` layer's units, along that many directions
    (`fewer_pay`)."""
    tangents = _jet.Identity(dims)
    if fewer_pay(net, net.n_inputs if dims is None else len(dims)):
        tangents = fewer_directions(net, params, dims)[None]
    out = net.propagate(params, x, tangents)
    return _zeros_if_none(out.lap, out.value.shape, out.value.dtype)


def hessian_diagonal(net: Network, params: Params, x: jax.Array, dims=None) -> jax.Array:
    """∂²f/∂x_p² for p in `dims`, (B, m, k): the forward Laplacian with each tangent kept apart."""
    out = net.propagate(params, x, _jet.Identity(dims), per_tangent=True)
    k = net.n_inputs if dims is None else len(dims)
    lap = _zeros_if_none(out.lap, (x.shape[0], k, net.n_outputs), out.value.dtype)
    return jnp.swapaxes(jnp.broadcast_to(lap, (x.shape[0], *lap.shape[1:])), -1, -2)


def value_and_jacobian(net: Network, params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """f (B, m) and J (B, m, n) from one pass: the input tangents pushed forwards through each
    layer (J's columns) beside the value."""
    out = net.propagate(params, x, _jet.Identity(None), second=False)
    t = _zeros_if_none(out.tangents, (1, net.n_inputs, net.n_outputs), out.value.dtype)
    return out.value, jnp.swapaxes(jnp.broadcast_to(t, (x.shape[0], *t.shape[1:])), -1, -2)


def jacobian(net: Network, params: Params, x: jax.Array) -> jax.Array:
    """J (B, m, n): the input tangents pushed forwards through each layer (its columns)."""
    return value_and_jacobian(net, params, x)[1]


def jacobian_vector_product(net: Network, params: Params, x: jax.Array, r: jax.Array):
    """J r for x and r of shape (..., n): one tangent pushed forwards through each layer."""
    lead = x.shape[:-1]
    flat_x, flat_r = x.reshape(-1, x.shape[-1]), r.reshape(-1, r.shape[-1])
    out = net.propagate(params, flat_x, flat_r[:, None, :], second=False).tangents
    return out[:, 0].reshape(*lead, net.n_outputs)


def along(
    net: Network,
    params: Params,
    x: jax.Array,
    directions: jax.Array,
    per_tangent: bool = False,
    drift: bool = False,
    b: jax.Array | None = None,
) -> Any:
    """Σ_p d_pᵀ ∇²f d_p (B, m) over input directions: coordinates (an integer array (k,) or
    (B, k)) or vectors (a float array (k, n) or (B, k, n)); with `per_tangent` each term kept
    apart, (B, m, k); with `drift`, the triple (f, b·∇f, the sum) for a direction b (B, n), x
    itself when None. The forward Laplacian through each layer, started from those directions."""
    if jnp.issubdtype(directions.dtype, jnp.integer):
        tangents = _jet.Identity(directions)
    else:
        tangents = directions[None] if directions.ndim == 2 else directions
    out = net.propagate(params, x, tangents, per_tangent=per_tangent, drift=drift, b=b)
    k = directions.shape[-1] if jnp.issubdtype(directions.dtype, jnp.integer) else None
    k = directions.shape[-2] if k is None else k
    shape = (x.shape[0], k, net.n_outputs) if per_tangent else out.value.shape
    lap = _zeros_if_none(out.lap, shape, out.value.dtype)
    if per_tangent:
        return jnp.swapaxes(jnp.broadcast_to(lap, (x.shape[0], *lap.shape[1:])), -1, -2)
    if drift:
        return out.value, _zeros_if_none(out.drift, out.value.shape, out.value.dtype), lap
    return lap
