"""The four passes of J-prop for a `jprop.MLP` (docs/math.md §3): the closed-form road's engine.

Notation (docs/math.md): layers l = 1..L, z^l = W^l y^{l-1} + b^l, y^l = σ(z^l), y^0 = x; s1^l = σ'(z^l),
s2^l = σ''(z^l), both read from the activation's output through `derivatives`. Lists below are
indexed by layer, entry 0 standing for layer 1.

Every pass takes one example (x of shape (n,)) or a batch (B, n) alike: products with the weights are
written `y @ Wᵀ` (= W y per example) and `g @ W` (= Wᵀ g), so a batch is a single large matrix
product. A softmax output layer is not elementwise: its Jacobian y∘(· − ⟨y, ·⟩) and that Jacobian's
R-derivative are applied where the elementwise layers multiply by s1 and s2.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._activations import activation_function, is_linear, slopes, softmax_jacobian_times
from ._mlp import MLP, Params


class Forward(NamedTuple):
    """What the forward pass keeps: every layer's output and its σ', σ'' (None for softmax)."""

    ys: list[jax.Array]  # y^0 = x, y^1, ..., y^L
    s1: list[jax.Array | None]  # σ'(z^l) for l = 1..L
    s2: list[jax.Array | None]  # σ''(z^l) for l = 1..L


def forward(net: MLP, params: Params, x: jax.Array) -> Forward:
    """Forward pass (paper eqs. 9-10): z^l = W^l y^{l-1} + b^l, y^l = σ(z^l), and s1^l, s2^l."""
    ys, s1, s2 = [x], [], []
    for layer, name in zip(params, net.activations()):
        z = ys[-1] @ layer["W"].T + layer["b"]
        y = activation_function(name)(z)
        ys.append(y)
        first, second = (None, None) if name == "softmax" else slopes(name, z, y)
        s1.append(first)
        s2.append(second)
    return Forward(ys, s1, s2)


def _to_z(fwd: Forward, layer: int, name: str, gy: jax.Array) -> jax.Array:
    """Multiply a y-space vector (or the rows of a matrix) by ∂y^l/∂z^l: s1 ∘ g, or softmax's."""
    if name == "softmax":
        return softmax_jacobian_times(fwd.ys[layer + 1], gy)
    return fwd.s1[layer] * gy


def backward(
    net: MLP,
    params: Params,
    fwd: Forward,
    g: jax.Array | None,
    top_gz: jax.Array | None = None,
    to_input: bool = True,
) -> tuple[list, jax.Array | None]:
    """Backward pass (eqs. 11-13) with output weighting g: gy^L = g, gz^l = s1^l ∘ gy^l,
    gy^{l-1} = W^lᵀ gz^l. Returns ([gy^1..gy^L], [gz^1..gz^L]) and gy^0 = Jᵀg.

    `top_gz` starts the pass from gz^L instead (g unused, gy^L = None): cross-entropy with its
    canonical output (logsig, softmax) has gz^L = y − t directly. `to_input=False` skips the
    last product, gy^0 (returned as None), when only weight gradients are wanted."""
    gys, gzs = [None] * net.depth, [None] * net.depth
    gy = g
    for layer in reversed(range(net.depth)):
        name = net.activations()[layer]
        gys[layer] = gy
        if layer == net.depth - 1 and top_gz is not None:
            gzs[layer] = top_gz
        else:
            gzs[layer] = _to_z(fwd, layer, name, gy)
        gy = gzs[layer] @ params[layer]["W"] if layer or to_input else None
    return (gys, gzs), gy


def r_forward(
    net: MLP, params: Params, fwd: Forward, r: jax.Array | None, direction: Params | None = None
) -> tuple[list, list]:
    """R-forward pass (eqs. 14-17), the input-space R-operator: ry^0 = r, rz^l = W^l ry^{l-1},
    ry^l = s1^l ∘ rz^l. Returns ([ry^0..ry^L], [rz^1..rz^L]); ry^L = J r.

    With a weight-space `direction` V (shaped like params), Pearlmutter's R-operator in weight space
    (docs/math.md §6): rz^l gains V^l y^{l-1} + V_b^l; pass r = None for the weight direction alone
    (ry^0 = 0, returned as None)."""
    rys, rzs = [r], []
    for layer, name in enumerate(net.activations()):
        rz = None if rys[-1] is None else rys[-1] @ params[layer]["W"].T
        if direction is not None:
            moved = fwd.ys[layer] @ direction[layer]["W"].T + direction[layer]["b"]
            rz = moved if rz is None else rz + moved
        rzs.append(rz)
        rys.append(_to_z(fwd, layer, name, rz))
    return rys, rzs


def r_backward(
    net: MLP,
    params: Params,
    fwd: Forward,
    gys: list[jax.Array],
    rys: list[jax.Array],
    rzs: list[jax.Array],
    rg_out: jax.Array | None = None,
    direction: Params | None = None,
    gzs: list[jax.Array] | None = None,
    top_rgz: jax.Array | None = None,
    to_input: bool = True,
) -> tuple[list[jax.Array], jax.Array | None]:
    """R-backward pass (eqs. 18-23): the R-derivative of the backward pass with g held fixed.

    rgy^L = rg_out (0 unless g depends on the output, docs/math.md §3 trap 2);
    rgz^l = s1^l ∘ rgy^l + s2^l ∘ rz^l ∘ gy^l;  rgy^{l-1} = W^lᵀ rgz^l.
    Returns [rgz^1..rgz^L] (None where exactly zero: a linear layer above which nothing is
    curved) and rgy^0 = Σ_k g_k ∇²_x f_k r, the input Hessian-vector product.

    With a weight-space `direction` V (and the backward pass's `gzs`), rgy^{l-1} gains V^lᵀ gz^l
    (docs/math.md §6); `top_rgz` gives rgz^L directly (the canonical cross-entropy output);
    `to_input=False` skips rgy^0 (returned as None).
    """
    rgzs = [None] * net.depth
    rgy = rg_out  # None stands for an exact zero, so no product is spent on it
    for layer in reversed(range(net.depth)):
        name = net.activations()[layer]
        gy, rz = gys[layer], rzs[layer]
        if layer == net.depth - 1 and top_rgz is not None:
            rgz = top_rgz
        elif name == "softmax":
            # gz = y∘(gy − ⟨y,gy⟩); its R-derivative, with ry = R{y} = y∘(rz − ⟨y,rz⟩):
            y, ry = fwd.ys[layer + 1], rys[layer + 1]
            rgz = ry * (gy - jnp.sum(y * gy, axis=-1, keepdims=True)) - y * jnp.sum(
                ry * gy, axis=-1, keepdims=True
            )
            if rgy is not None:
                rgz = rgz + _to_z(fwd, layer, name, rgy)
        else:
            rgz = None if rgy is None else fwd.s1[layer] * rgy
            if not is_linear(name):
                curvature = fwd.s2[layer] * rz * gy
                rgz = curvature if rgz is None else rgz + curvature
        rgzs[layer] = rgz
        if layer == 0 and not to_input:
            return rgzs, None
        rgy = None if rgz is None else rgz @ params[layer]["W"]
        if direction is not None:
            moved = gzs[layer] @ direction[layer]["W"]
            rgy = moved if rgy is None else rgy + moved
    return rgzs, (jnp.zeros_like(fwd.ys[0]) if rgy is None else rgy)


def weight_gradients(params: Params, fwd, gzs, rgzs, rys) -> Params:
    """∂/∂W^l = rgz^lᵀ y^{l-1} + gz^lᵀ ry^{l-1}, ∂/∂b^l = Σ rgz^l, summed over the batch (eq. 23)."""
    grads = []
    for l, (gz, rgz, layer) in enumerate(zip(gzs, rgzs, params)):  # noqa: E741
        # None marks an exact zero: rgz above the curved layers, ry^0 in a weight direction alone.
        terms = [
            a.T @ b for a, b in ((rgz, fwd.ys[l]), (gz, rys[l])) if a is not None and b is not None
        ]
        w = sum(terms[1:], terms[0]) if terms else jnp.zeros_like(layer["W"])
        b = jnp.zeros_like(layer["b"]) if rgz is None else jnp.sum(rgz, axis=0)
        grads.append({"W": w, "b": b})
    return grads
