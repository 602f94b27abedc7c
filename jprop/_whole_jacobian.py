"""Functions of the whole input Jacobian whose weight-gradients are bilinear calls (MATH.md §3).

- Spectral norm ‖J‖₂ = σ₁: power iteration needs only Jv and Jᵀu; with the top singular pair
  (u, v) held fixed, ∇_w σ₁ = ∇_w(uᵀJv), one bilinear call. The pair is state: carried from one
  training step to the next, one iteration per step keeps it converged as the weights move
  (Miyato et al. 2018 do the same for weight matrices).
- log|det J| for square J: ∂/∂w = tr(J⁻¹ ∂J/∂w) = Σ_i ∇_w(u_iᵀ J e_i) with u_i = J⁻ᵀe_i held fixed,
  n bilinear calls (run as one call over n copies of the batch) and one n × n inverse per example.

Both take x of shape (B, n) and return batch means, like the other J-prop objectives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ._batch import map_batches
from ._jprop import Result, _check_batch_objective, bilinear
from ._transforms import jacobian
from ._validation import check_size, optional_size


class SpectralState(NamedTuple):
    """Power-iteration state, one singular pair per example: u (B, m), v (B, n), sigma (B,)."""

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
    $u \leftarrow Jv/\|Jv\|$ from the carried state, then returns $\sigma_1 = u^\top J v$ and
    $\nabla_w \sigma_1 = \nabla_w(u^\top J v)$ with the pair held fixed (`jprop.bilinear`). With
    `squared=True` it returns $\tfrac12\sigma_1^2$ and its gradient $\sigma_1 \nabla_w \sigma_1$.
    The value is exact for the pair it reports; how close that pair is to the top singular pair
    is in the returned state (`sigma`) and grows with iterations, so carry the state across
    training steps, or start with more iterations.

    **Arguments:** `f`: a `jprop.MLP` or any `f(params, x)`; `method`: "auto", "closed" or
    "autodiff" (for the gradient; the iteration uses `jax.jvp`/`jax.vjp`); `num_iterations` per
    call; `squared`; `batch_size`: iterate and differentiate in chunks of this many examples.

    **Use:** `state = sn.init(params, x, key)`, then `(value, grads), state = sn(params, x, state)`;
    `x` of shape `(B, n)`; value and grads are batch means.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((3, 16, 2)); p = net.init(jax.random.key(0)); x = jnp.ones((4, 3))
    >>> sn = jprop.SpectralNorm(net, num_iterations=20)
    >>> (sigma, grads), state = sn(p, x, sn.init(p, x, jax.random.key(1)))
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
        self.f = f
        self.num_iterations = check_size(num_iterations, "num_iterations", self.where)
        self.squared = bool(squared)
        self.batch_size = optional_size(batch_size, "batch_size", self.where)
        self._bilinear = bilinear(f, method=method, batch_size=self.batch_size)
        self._iterate = jax.jit(self._power_iteration)

    def init(self, params: Any, x: jax.Array, key: jax.Array) -> SpectralState:
        """A random unit pair per example (σ = 0 until the first call)."""
        x, m, _ = _check_batch_objective(self.f, params, x, self.where)
        ku, kv = jax.random.split(key)
        batch, n = x.shape
        return SpectralState(
            _unit(jax.random.normal(ku, (batch, m), x.dtype)),
            _unit(jax.random.normal(kv, (batch, n), x.dtype)),
            jnp.zeros((batch,), x.dtype),
        )

    def _power_iteration(self, params, x, u, v):
        f = self.f

        def jv(xi, vi):
            return jax.jvp(lambda e: f(params, e), (xi,), (vi,))[1]

        def jtu(xi, ui):
            return jax.vjp(lambda e: f(params, e), xi)[1](ui)[0]

        def iterate(x, u, v):  # every example is independent: chunks iterate on their own
            def step(_, pair):
                u, _ = pair
                v = _unit(jax.vmap(jtu)(x, u))
                return _unit(jax.vmap(jv)(x, v)), v

            u, v = jax.lax.fori_loop(0, self.num_iterations, step, (u, v))
            return u, v, jnp.sum(u * jax.vmap(jv)(x, v), axis=-1)

        pair = map_batches(iterate, x, u, v, batch_size=self.batch_size)
        return jax.lax.stop_gradient(pair)

    def __call__(
        self, params: Any, x: jax.Array, state: SpectralState
    ) -> tuple[Result, SpectralState]:
        x, m, a = _check_batch_objective(
            self.f,
            params,
            x,
            self.where,
            **{"state.u": (state.u, ("B", "m")), "state.v": (state.v, ("B", "n"))},
        )
        u, v, sigma = self._iterate(params, x, a["state.u"], a["state.v"])
        if not self.squared:
            value, grads = self._bilinear(params, x, u, v)
            return (value, grads), SpectralState(u, v, sigma)
        value, grads = self._bilinear(params, x, sigma[:, None] * u, v)  # σ uᵀJv = σ², grad σ∇σ
        return (0.5 * value, grads), SpectralState(u, v, sigma)


def log_abs_det_jacobian(
    f: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Result]:
    r"""$\log|\det J|$ for a square input Jacobian (flows, blind source separation), with its gradient.

    $\nabla_w \log|\det J| = \sum_i \nabla_w(u_i^\top J e_i)$, $u_i = J^{-\top} e_i$ held fixed:
    one Jacobian, one n × n inverse and n bilinear calls per example. A singular J gives
    $-\infty$ and non-finite gradients, as the mathematics does. `batch_size` chunks the
    Jacobians and the B·n bilinear calls (bounded memory).

    **Returns:** a function `(params, x) -> (mean log|det J|, grads)`, `x` of shape `(B, n)`;
    raises a `ValueError` when the network's m ≠ n.

    >>> import jax, jax.numpy as jnp, jprop
    >>> net = jprop.MLP((2, 8, 2)); p = net.init(jax.random.key(0))
    >>> value, grads = jprop.log_abs_det_jacobian(net)(p, jnp.ones((5, 2)))
    >>> bool(jnp.isclose(value, jnp.linalg.slogdet(jprop.jacobian(net)(p, jnp.ones(2)))[1]))
    True
    """
    where = "jprop.log_abs_det_jacobian"
    batch_size = optional_size(batch_size, "batch_size", where)
    jac = jacobian(f, method=method, batch_size=batch_size)
    bil = bilinear(f, method=method, batch_size=batch_size)

    @jax.jit
    def compute(params, x):
        J = jac(params, x)  # (B, n, n)
        batch, n = x.shape
        inverse = jnp.linalg.inv(J)  # u_i = J⁻ᵀe_i is row i of J⁻¹
        xs = jnp.repeat(x[:, None, :], n, axis=1)
        rs = jnp.broadcast_to(jnp.eye(n, dtype=x.dtype), (batch, n, n))
        _, grads = bil(params, xs, jax.lax.stop_gradient(inverse), rs)  # mean over B·n pairs
        value = jnp.mean(jnp.linalg.slogdet(J)[1])
        return value, jax.tree.map(lambda gr: gr * n, grads)

    def objective(params: Any, x: jax.Array) -> Result:
        x, m, _ = _check_batch_objective(f, params, x, where)
        if m != x.shape[1]:
            raise ValueError(
                f"{where}: log|det J| needs a square Jacobian, m = n; this network maps "
                f"n = {x.shape[1]} inputs to m = {m} outputs, so J is {m} × {x.shape[1]}. "
                "Use jprop.SpectralNorm or jprop.jacobian_penalty for non-square J."
            )
        return compute(params, x)

    return objective
