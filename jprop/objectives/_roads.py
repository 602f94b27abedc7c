"""The J-prop objectives on each road, as sums over a batch x (B, n) with every per-example
argument (B, ·): on a `jprop.MLP` the paper's four passes give (Σ value, Σ weight-gradients); on a
`jprop.Network` the layers' tangent steps give Σ value, which `jax.grad` differentiates; on any
other `f`, per-example values from `jax.jvp`/`jax.vjp`, summed by the objective's builder.

The quantity's record in `jprop/_dispatch.py` names which of these each objective runs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..layers import Network
from ..layers import _network as _network_passes
from ..models._mlp import MLP, Params
from ..models._passes import backward, forward, r_backward, r_forward, weight_gradients

Result = tuple[jax.Array, Any]


# ----------------------------------------------------------------------------------------------
# Closed road: the four passes. All arrays carry a leading batch axis (B, ·).


def closed_bilinear(net: MLP, params: Params, x, g, r) -> Result:
    # forward; backward with g; R-forward along r; R-backward.
    fwd = forward(net, params, x)
    (gys, gzs), _ = backward(net, params, fwd, g, to_input=False)
    rys, rzs = r_forward(net, params, fwd, r)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    value = jnp.sum(g * rys[-1])
    return value, weight_gradients(params, fwd, gzs, rgzs, rys)


def closed_jprop_v(net: MLP, params: Params, x, v, b) -> Result:
    # docs/math.md §3 table: forward; R-forward with r = v (gives Jv); backward with e = Jv − b;
    # R-backward. Trap 1: the primal backward pass with e must run, or the s2 path is lost.
    fwd = forward(net, params, x)
    rys, rzs = r_forward(net, params, fwd, v)
    e = rys[-1] - b
    (gys, gzs), _ = backward(net, params, fwd, e, to_input=False)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    return 0.5 * jnp.sum(e * e), weight_gradients(params, fwd, gzs, rgzs, rys)


def closed_jprop_u(net: MLP, params: Params, x, u, a) -> Result:
    # Forward; backward with u (gives Jᵀu at the input); R-forward with ρ = Jᵀu − a; R-backward.
    fwd = forward(net, params, x)
    (gys, gzs), jtu = backward(net, params, fwd, u)
    rho = jtu - a
    rys, rzs = r_forward(net, params, fwd, rho)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, to_input=False)
    return 0.5 * jnp.sum(rho * rho), weight_gradients(params, fwd, gzs, rgzs, rys)


def closed_double_backprop(net: MLP, params: Params, x, t, lam) -> Result:
    # E = ½‖y − t‖² + λ·½‖Jᵀ(y − t)‖². The penalty is E_u with u = y − t, a = 0, but u depends on
    # the weights, so (trap 2) the R-backward pass starts from rgy^L = (∂²E/∂y²) R{y^L} = J ρ.
    fwd = forward(net, params, x)
    u = fwd.ys[-1] - t
    (gys, gzs), rho = backward(net, params, fwd, u)
    rys, rzs = r_forward(net, params, fwd, rho)
    rgzs, _ = r_backward(net, params, fwd, gys, rys, rzs, rg_out=rys[-1], to_input=False)
    penalty = weight_gradients(params, fwd, gzs, rgzs, rys)
    plain = [{"W": gz.T @ fwd.ys[l], "b": jnp.sum(gz, axis=0)} for l, gz in enumerate(gzs)]  # noqa: E741
    grads = jax.tree.map(lambda p, q: p + lam * q, plain, penalty)
    return 0.5 * jnp.sum(u * u) + lam * 0.5 * jnp.sum(rho * rho), grads


# ----------------------------------------------------------------------------------------------
# Layer road (a `jprop.Network`): the objective from its layers' own tangent steps — one tangent
# for gᵀJr and E_v, the n columns of J for E_u and double backprop — differentiated by jax.grad.
# Σ over the batch x (B, n), every argument (B, ·).


def layers_bilinear(net: Network, params, x, g, r):
    return jnp.sum(g * _network_passes.jacobian_vector_product(net, params, x, r))


def layers_jprop_v(net: Network, params, x, v, b):
    e = _network_passes.jacobian_vector_product(net, params, x, v) - b
    return 0.5 * jnp.sum(e * e)


def layers_jprop_u(net: Network, params, x, u, a):
    rho = jnp.einsum("bm,bmn->bn", u, _network_passes.jacobian(net, params, x)) - a
    return 0.5 * jnp.sum(rho * rho)


def layers_double_backprop(net: Network, params, x, t, lam):
    y, jac = _network_passes.value_and_jacobian(net, params, x)
    e = y - t
    rho = jnp.einsum("bm,bmn->bn", e, jac)
    return 0.5 * jnp.sum(e * e) + lam * 0.5 * jnp.sum(rho * rho)


# ----------------------------------------------------------------------------------------------
# Autodiff road: per-example objectives from jax.jvp / jax.vjp, differentiated by jax.grad.


def _jvp(f, params, x, v):
    return jax.jvp(lambda xi: f(params, xi), (x,), (v,))[1]


def _vjp(f, params, x, u):
    return jax.vjp(lambda xi: f(params, xi), x)[1](u)[0]


# Per-example values (f, params, x_i, *args_i, *shared) -> scalar, summed by `_sum_of`.
def autodiff_bilinear(f, p, x, g, r):
    return g @ _jvp(f, p, x, r)


def autodiff_jprop_v(f, p, x, v, b):
    return 0.5 * jnp.sum((_jvp(f, p, x, v) - b) ** 2)


def autodiff_jprop_u(f, p, x, u, a):
    return 0.5 * jnp.sum((_vjp(f, p, x, u) - a) ** 2)


def autodiff_double_backprop(f, p, x, t, lam):
    loss = lambda v: 0.5 * jnp.sum((f(p, v) - t) ** 2)  # noqa: E731
    return loss(x) + lam * 0.5 * jnp.sum(jax.grad(loss)(x) ** 2)
