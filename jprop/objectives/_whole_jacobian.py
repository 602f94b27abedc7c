"""Functions of the whole input Jacobian whose weight-gradients are bilinear calls (docs/math.md §3).

- Spectral norm ‖J‖₂ = σ₁: power iteration needs only Jv and Jᵀu; with the top singular pair
  (u, v) held fixed, ∇_w σ₁ = ∇_w(uᵀJv), one bilinear call. The pair is state: carried from one
  training step to the next, one iteration per step keeps it converged as the weights move
  (Miyato et al. 2018 do the same for weight matrices).
- log|det J| for square J: ∂/∂w = tr(J⁻¹ ∂J/∂w) = Σ_i ∇_w(u_iᵀ J e_i) with u_i = J⁻ᵀe_i held fixed,
  n bilinear calls (run as one call over n copies of the batch) and one n × n inverse per example.

Both take x of shape (B, n) and return batch means, like the other J-prop objectives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._batch import map_batches
from .._dispatch import METHODS, check_model
from .._program import broadcasting, cached, program
from .._validation import (
    as_key,
    check_batch_objective,
    check_method,
    check_size,
    optional_size,
    switch,
    vector_output,
)
from ..quantities._transforms import jacobian
from ._jprop import bilinear


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpectralState:
    """Power-iteration state, one singular pair per example: u (B, m), v (B, n), sigma (B,).

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 4, 2)); p = net.init(jax.random.key(0))
        >>> state = jprop.SpectralNorm(net).init(p, jnp.ones((5, 3)), jax.random.key(1))
        >>> state.u.shape, state.v.shape, state.sigma.shape
        ((5, 2), (5, 3), (5,))
    """

    u: jax.Array
    v: jax.Array
    sigma: jax.Array


def _unit(a: jax.Array) -> jax.Array:
    """Rows of `a` scaled to unit length; a zero row stays zero (J = 0 has σ₁ = 0)."""
    norm = jnp.linalg.norm(a, axis=-1, keepdims=True)
    return a / jnp.where(norm > 0, norm, 1)


class SpectralNorm:
    r"""The spectral norm $\sigma_1 = \|J\|_2$ of the input Jacobian, by power iteration, with its exact gradient.

    Each call runs `num_iterations` steps $v \leftarrow J^\top u/\|J^\top u\|$,
    $u \leftarrow Jv/\|Jv\|$ from the carried state, then returns $\sigma_1 = u^\top J v$, whose gradient is
    $\nabla_w \sigma_1 = \nabla_w(u^\top J v)$ with the pair held fixed (`jprop.bilinear`). With
    `squared=True` it returns $\tfrac12\sigma_1^2$ and its gradient $\sigma_1 \nabla_w \sigma_1$.
    The value is exact for the pair it reports; how close that pair is to the top singular pair
    is in the returned state (`sigma`) and grows with iterations, so carry the state across
    training steps, or start with more iterations.

    **Arguments:** `f`: a `jprop.MLP` or any `f(params, x)`; `method`: "auto", "closed" or
    "autodiff" (for the gradient; the iteration uses `jax.jvp`/`jax.vjp`); `num_iterations` per
    call; `squared`; `batch_size`: iterate and differentiate in chunks of this many examples.

    **Use:** `state = sn.init(params, x, key)`, then `loss, state = sn(params, x, state)`: the
    loss is $\sigma_1$ (or $\tfrac12\sigma_1^2$), the batch mean, and `jax.grad(sn, has_aux=True)`
    or `jax.value_and_grad(sn, has_aux=True)` give its gradient beside the new state; `x` of shape
    `(B, n)`.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 16, 2)); p = net.init(jax.random.key(0)); x = jnp.ones((4, 3))
        >>> sn = jprop.SpectralNorm(net, num_iterations=20)
        >>> sigma, state = sn(p, x, sn.init(p, x, jax.random.key(1)))
        >>> bool(jnp.allclose(state.sigma, jnp.linalg.norm(jprop.jacobian(net)(p, x), 2, axis=(1, 2))))
        True
    """

    def __init__(
        self,
        f: Any,
        *,
        method: str = "auto",
        num_iterations: int = 1,
        squared: bool = False,
        batch_size: int | None = None,
    ):
        self.where = "jprop.SpectralNorm"
        check_model(f, self.where)
        self.f = vector_output(f)  # a scalar output is m = 1, its state u of shape (B, 1)
        self.num_iterations = check_size(num_iterations, "num_iterations", self.where)
        self.squared = switch(squared, "squared", self.where)
        self.batch_size = optional_size(batch_size, "batch_size", self.where)
        check_method(method, METHODS, self.where)
        self._call = _spectral_norm(
            self.f, method, self.num_iterations, self.squared, self.batch_size
        )

    def init(self, params: Any, x: jax.Array, key: jax.Array) -> SpectralState:
        """A random unit pair per example (σ = 0 until the first call)."""
        x, m, _ = check_batch_objective(self.f, params, x, self.where)
        ku, kv = jax.random.split(as_key(key, f"{self.where}.init"))
        batch, n = x.shape
        return SpectralState(
            _unit(jax.random.normal(ku, (batch, m), x.dtype)),
            _unit(jax.random.normal(kv, (batch, n), x.dtype)),
            jnp.zeros((batch,), x.dtype),
        )

    def __call__(
        self, params: Any, x: jax.Array, state: SpectralState
    ) -> tuple[jax.Array, SpectralState]:
        return self._call(params, x, state)


@cached
def _spectral_norm(
    f: Any, method: str, num_iterations: int, squared: bool, batch_size: int | None
) -> Callable[..., tuple[jax.Array, SpectralState]]:
    """`SpectralNorm`'s program, `(params, x, state) -> (loss, state)`: one per `f` and options,
    however many equal `SpectralNorm`s are made."""
    where = "jprop.SpectralNorm"
    bil = bilinear(f, method=method, batch_size=batch_size)

    def power_iteration(params, x, u, v):
        def jv(xi, vi):
            return jax.jvp(lambda e: f(params, e), (xi,), (vi,))[1]

        def jtu(xi, ui):
            return jax.vjp(lambda e: f(params, e), xi)[1](ui)[0]

        def iterate(x, u, v):  # every example is independent: chunks iterate on their own
            def step(_, pair):
                u, _ = pair
                v = _unit(jax.vmap(jtu)(x, u))
                return _unit(jax.vmap(jv)(x, v)), v

            u, v = jax.lax.fori_loop(0, num_iterations, step, (u, v))
            return u, v, jnp.sum(u * jax.vmap(jv)(x, v), axis=-1)

        pair = map_batches(iterate, x, u, v, batch_size=batch_size)
        return jax.lax.stop_gradient(pair)

    def validate(params, x, state):
        if not isinstance(state, SpectralState):
            raise TypeError(
                f"{where}: `state` must be the SpectralState that SpectralNorm.init or a "
                f"previous call returned; got {type(state).__name__}."
            )
        x, _, a = check_batch_objective(
            f,
            params,
            x,
            where,
            **{"state.u": (state.u, ("B", "m")), "state.v": (state.v, ("B", "n"))},
        )
        return x, a["state.u"], a["state.v"]

    def compute(params, x, state):
        x, u, v = validate(params, x, state)
        u, v, sigma = power_iteration(params, x, u, v)
        if not squared:
            return bil(params, x, u, v), SpectralState(u, v, sigma)
        # σ uᵀJv has value σ² and gradient σ∇σ (σ held fixed); minus the constant ½σ², the loss
        # has value ½σ² and the gradient of ½σ².
        loss = bil(params, x, sigma[:, None] * u, v) - 0.5 * jnp.mean(sigma**2)
        return loss, SpectralState(u, v, sigma)

    return program(where, compute, validate, ("params", "x", "state"))


def log_abs_det_jacobian(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., jax.Array]:
    r"""$\log|\det J|$ for a square input Jacobian (flows, blind source separation), as a loss.

    Its derivative is $\sum_i \nabla(u_i^\top J e_i)$ with $u_i = J^{-\top} e_i$ held fixed
    ($d\log|\det J| = \mathrm{tr}(J^{-1} dJ)$): one Jacobian, one n × n inverse and n bilinear
    calls per example, so `jax.grad` runs the passes. A singular J gives $-\infty$ and non-finite
    gradients, as the mathematics does. `batch_size` chunks the Jacobians and the B·n bilinear
    calls (bounded memory).

    **Returns:** a loss `(params, x) -> mean log|det J|`, `x` of shape `(B, n)`; raises a
    `ValueError` when the network's m ≠ n.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 8, 2)); p = net.init(jax.random.key(0))
        >>> value = jprop.log_abs_det_jacobian(net)(p, jnp.ones((5, 2)))
        >>> bool(jnp.isclose(value, jnp.linalg.slogdet(jprop.jacobian(net)(p, jnp.ones(2)))[1]))
        True
    """
    return _log_abs_det_jacobian(f, method, batch_size)


@cached
def _log_abs_det_jacobian(f: Any, method: str, batch_size: Any) -> Callable[..., jax.Array]:
    where = "jprop.log_abs_det_jacobian"
    check_model(f, where)
    batch_size = optional_size(batch_size, "batch_size", where)
    jac = jacobian(vector_output(f), method=method, batch_size=batch_size)
    bil = bilinear(vector_output(f), method=method, batch_size=batch_size)

    def traced(
        params, x
    ):  # the pairs u_i = J⁻ᵀe_i held fixed: Σ_i u_iᵀ J e_i has log|det|'s tangent
        batch, n = x.shape
        inverse = jnp.linalg.inv(jac(params, x))  # u_i = J⁻ᵀe_i is row i of J⁻¹
        units = jnp.tile(jnp.eye(n, dtype=x.dtype), (batch, 1))
        return lambda p, x: n * bil(p, jnp.repeat(x, n, axis=0), inverse.reshape(-1, n), units)

    @jax.custom_jvp
    def loss(params, x):
        return jnp.mean(jnp.linalg.slogdet(jac(params, x))[1])

    @loss.defjvp
    @broadcasting
    def _rule(primals, tangents):
        return loss(*primals), jax.jvp(traced(*primals), primals, tangents)[1]

    def validate(params, x):
        x, m, _ = check_batch_objective(f, params, x, where)
        if m != x.shape[1]:
            raise ValueError(
                f"{where}: log|det J| needs a square Jacobian, m = n; this network maps "
                f"n = {x.shape[1]} inputs to m = {m} outputs, so J is {m} × {x.shape[1]}. "
                "Use jprop.SpectralNorm or jprop.jacobian_penalty for non-square J."
            )
        if getattr(f, "output", None) == "softmax":
            raise ValueError(
                f"{where}: a softmax output's Jacobian is singular everywhere (its outputs sum to "
                "1, so the rows of J sum to 0): log|det J| = -inf, with no gradient. Take the "
                "log-determinant of the logits (output='linear'), or another objective."
            )
        return x

    def compute(params, x):
        return loss(params, validate(params, x))

    return program(where, compute, validate, ("params", "x"))
