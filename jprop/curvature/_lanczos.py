"""The k largest eigenpairs of a symmetric operator given only as a matrix-vector product: Lanczos
with full reorthogonalisation, and the report of how well each pair converged."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Eigenpairs:
    """Top eigenpairs of a weight-space operator and how well they converged.

    eigenvalues (k,) in decreasing order; eigenvectors: a pytree like params with a leading axis k;
    residuals (k,): ‖Hq − λq‖ for each unit Ritz vector q (0 when exact); iterations: Lanczos steps.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> pairs = jprop.top_eigenpairs(jprop.SquaredError(net), k=2)(p, x, t)
        >>> pairs.eigenvalues.shape, jax.tree.leaves(pairs.eigenvectors)[-1].shape  # output bias
        ((2,), (2, 1))
    """

    eigenvalues: jax.Array
    eigenvectors: Any
    residuals: jax.Array
    iterations: int


def lanczos(matvec, start, steps, k):
    """k largest Ritz pairs after `steps` Lanczos steps with full reorthogonalisation.

    When the Krylov space closes (a low-rank Gauss-Newton matrix, β ≈ 0), w/β is rounding noise
    that is no longer orthogonal to the basis; it is orthogonalised again after normalising (or
    replaced by a fresh random vector when β = 0), which restarts the iteration in the
    complement with a (near-)zero coupling, as the tridiagonal matrix requires.
    """
    size = start.shape[0]
    basis = jnp.zeros((steps, size), start.dtype).at[0].set(start / jnp.linalg.norm(start))
    alphas = jnp.zeros(steps, start.dtype)
    betas = jnp.zeros(steps, start.dtype)
    key = jax.random.key(size)

    def orthogonal_unit(basis, w):
        for _ in range(2):  # against every basis vector so far (rows after j are still zero), twice
            w = w - basis.T @ (basis @ w)
        norm = jnp.linalg.norm(w)
        return w / jnp.where(norm > 0, norm, 1), norm

    def step(j, carry):
        basis, alphas, betas = carry
        w = matvec(basis[j])
        alpha = basis[j] @ w
        w, beta = orthogonal_unit(basis, w)
        fresh = jax.random.normal(jax.random.fold_in(key, j), (size,), start.dtype)
        w = orthogonal_unit(basis, jnp.where(beta > 0, w, fresh))[0]
        following = jnp.minimum(j + 1, steps - 1)
        basis = basis.at[following].set(jnp.where(j + 1 < steps, w, basis[following]))
        return basis, alphas.at[j].set(alpha), betas.at[j].set(beta)

    basis, alphas, betas = jax.lax.fori_loop(0, steps, step, (basis, alphas, betas))
    tri = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    theta, s = jnp.linalg.eigh(tri)
    order = jnp.argsort(-theta)[:k]
    vectors = (basis.T @ s[:, order]).T  # (k, P)
    residuals = jnp.abs(betas[-1] * s[-1, order])  # ‖H q − θ q‖ for each Ritz pair
    return theta[order], vectors, residuals
