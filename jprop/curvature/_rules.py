"""Weight-space curvature rules over a batch, each a sum over the examples it is handed (the
transforms divide by B): Pearlmutter's R passes through an MLP's closed passes for the Hessian- and
Gauss-Newton-vector products and Becker–LeCun's diagonal, and their autodiff counterparts for any
loss. The `weight_curvature` record in `jprop/_dispatch.py` names the Hessian-vector product's."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._validation import in_dtype, per_example_outputs
from ..models._passes import backward, forward, r_backward, r_forward, weight_gradients
from ._losses import CrossEntropy, SquaredError, logits


def _target_mass(loss, t):
    """(B, 1): how much each example's softmax cross-entropy weighs, s = Σ_k t_k. With
    e = −Σ_k t_k log y_k, ∂e/∂z = s y − t and ∂²e/∂z² = s (diag y − y yᵀ): one-hot and soft labels
    have s = 1, a masked row s = 0, a weighted one its weight. A logsig output's
    e = Σ_k softplus(z_k) − t_k z_k has ∂e/∂z = y − t and a curvature free of t: s = 1."""
    if loss.f.output == "softmax":
        return jnp.sum(t, axis=-1, keepdims=True)
    return jnp.ones_like(t[:, :1])


def _output_gradient(loss, fwd, t):
    """(g, top_gz): ∂e/∂y^L for squared error, or ∂e/∂z^L for the canonical cross-entropy, per
    example (the rules below return sums over the examples; `_mean_of` divides)."""
    if isinstance(loss, CrossEntropy):
        return None, _target_mass(loss, t) * fwd.ys[-1] - t
    return fwd.ys[-1] - t, None


def closed_hvp(loss, params, x, t, v):
    params, v = in_dtype(params, x.dtype), in_dtype(v, x.dtype)
    net = loss.f
    fwd = forward(net, params, x)
    g, top_gz = _output_gradient(loss, fwd, t)
    (gys, gzs), _ = backward(net, params, fwd, g, top_gz=top_gz, to_input=False)
    rys, rzs = r_forward(net, params, fwd, None, direction=v)
    if isinstance(loss, CrossEntropy):  # R{gz^L} = s R{y^L}
        rg_out, top_rgz = None, _target_mass(loss, t) * rys[-1]
    else:  # e''(y) = I
        rg_out, top_rgz = rys[-1], None
    rgzs, _ = r_backward(
        net, params, fwd, gys, rys, rzs, rg_out, v, gzs, top_rgz=top_rgz, to_input=False
    )
    return weight_gradients(params, fwd, gzs, rgzs, rys)


def closed_gauss_newton(loss, params, x, t, v):
    params, v = in_dtype(params, x.dtype), in_dtype(v, x.dtype)
    net = loss.f
    fwd = forward(net, params, x)
    rys, _ = r_forward(net, params, fwd, None, direction=v)
    if isinstance(loss, CrossEntropy):
        top_gz = _target_mass(loss, t) * rys[-1]  # H_z J_z v
        (_, gzs), _ = backward(net, params, fwd, None, top_gz=top_gz, to_input=False)
    else:
        (_, gzs), _ = backward(net, params, fwd, rys[-1], to_input=False)
    return [{"W": gz.T @ fwd.ys[l], "b": jnp.sum(gz, axis=0)} for l, gz in enumerate(gzs)]  # noqa: E741


def becker_lecun(loss, params, x, t):
    params = in_dtype(params, x.dtype)
    net = loss.f
    fwd = forward(net, params, x)
    g, top_gz = _output_gradient(loss, fwd, t)
    (_, gzs), _ = backward(net, params, fwd, g, top_gz=top_gz, to_input=False)
    d = loss.output_hessian_diagonal(net, params, x, t)  # exact at the output
    out = [None] * net.depth
    for layer in reversed(range(net.depth)):
        if layer < net.depth - 1:
            w_next = params[layer + 1]["W"]
            gy = gzs[layer + 1] @ w_next
            d = fwd.s1[layer] ** 2 * (d @ w_next**2) + fwd.s2[layer] * gy
        out[layer] = {"W": _weighted_squares(d, fwd.ys[layer]), "b": jnp.sum(d, axis=0)}
    return out


def _weighted_squares(d: jax.Array, y: jax.Array) -> jax.Array:
    """Σ_b d_bi y_bj², kept finite where it is: y is scaled by its largest entry per column before
    squaring, so a huge input (|x| = 1e19 overflows x² in float32) met by exact zeros in d (its
    saturated units) gives 0, not 0 · inf = NaN."""
    scale = jnp.max(jnp.abs(y), axis=0)
    scale = jnp.where(scale > 0, scale, 1)
    part = d.T @ (y / scale) ** 2
    return jnp.where(part == 0, 0, part * scale**2)


# ----------------------------------------------------------------------------------------------
# Autodiff road


def autodiff_hvp(loss, params, v, *data):
    # The data are checked already (a scalar f's targets have gained their axis). A batch-mean
    # loss gives the sum over the examples, as the closed rules do; a generic E(params, *data) is
    # differentiated as it is.
    value = loss.total if isinstance(loss, (SquaredError, CrossEntropy)) else loss
    return jax.jvp(lambda p: jax.grad(value)(p, *data), (params,), (v,))[1]


def autodiff_gauss_newton(loss, params, x, t, v):
    if isinstance(loss, CrossEntropy):  # through the net input z^L, with H_z of the loss

        def z_of(p):
            return logits(loss.f, p, x)

        def h_out(z, t, r):  # H_z r per example, forward-over-reverse on the per-example loss
            grad_z = jax.grad(loss._per_example)
            return jax.vmap(lambda zi, ti, ri: jax.jvp(lambda q: grad_z(q, ti), (zi,), (ri,))[1])(
                z, t, r
            )
    else:

        def z_of(p):
            return per_example_outputs(loss.f, p, x)

        def h_out(z, t, r):
            return r

    z, jv = jax.jvp(z_of, (params,), (v,))
    _, vjp = jax.vjp(z_of, params)
    return vjp(h_out(z, t, jv))[0]
