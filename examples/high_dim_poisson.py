"""Poisson's equation Δu = g in d dimensions on the unit ball, u = 0 on the sphere: the two-body
problem of the SDGD and STDE papers,

    u(x) = (1 − ‖x‖²) Σ_{i<d} c_i sin(x_i + cos(x_{i+1}) + x_{i+1} cos(x_i)),  c_i ~ N(0, 1).

The network is u = (1 − ‖x‖²) N(x) with N(x) = M(√d x), M a tanh MLP d-128⁴-1 (on the sphere each
coordinate is about 1/√d, so M reads inputs of order 1), and the boundary condition holds exactly.
The product rule gives Δu = −2d N − 4 x·∇N + (1 − ‖x‖²) ΔN, where x·∇N = z·∇M(z) at z = √d x,
and ΔN = d ΔM(z) is estimated from 16 sampled coordinates (`jprop.laplacian(...,
estimator="sparse", probes=16)`; or from Rademacher or Gaussian probes, or computed exactly with
`--estimator exact`), with a fresh key and 100 fresh points each Adam step. With `drift="x"` the
transform returns M, z·∇M and ΔM together, from one pass through the network. The source g = Δu
is written out exactly (O(d) per point), not taken by autodiff. It prints the relative L2 error
against u on 10,000 held-out points and the time per step.

Run: python examples/high_dim_poisson.py [--dim 100] [--estimator sparse] [--steps N] [--quick]
(--dim 1000 to --dim 1000000; --estimator rademacher, gaussian or exact)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import jprop


def coefficients(dim: int) -> jax.Array:
    return jax.random.normal(jax.random.key(dim), (dim - 1,))


def _angles(x):
    """θ_i = x_i + cos x_{i+1} + x_{i+1} cos x_i, i < d, and the pieces of its derivatives."""
    a, b = x[..., :-1], x[..., 1:]
    theta = a + jnp.cos(b) + b * jnp.cos(a)
    d_a = 1 - b * jnp.sin(a)  # ∂θ_i/∂x_i
    d_b = jnp.cos(a) - jnp.sin(b)  # ∂θ_i/∂x_{i+1}
    curvature = -b * jnp.cos(a) - jnp.cos(b)  # ∂²θ_i/∂x_i² + ∂²θ_i/∂x_{i+1}²
    return theta, d_a, d_b, curvature


def exact(c, x):
    theta = _angles(x)[0]
    return (1 - jnp.sum(x * x, -1)) * (jnp.sin(theta) @ c)


def source(c, x):
    """g = Δu for u = b φ, b = 1 − ‖x‖², φ = Σ c_i sin θ_i: Δu = φ Δb + 2 ∇b·∇φ + b Δφ with
    Δb = −2d, ∇b = −2x, ∇φ·x = Σ c_i cos θ_i (x_i ∂_iθ_i + x_{i+1} ∂_{i+1}θ_i) and
    Δφ = Σ c_i (cos θ_i (∂²_iθ_i + ∂²_{i+1}θ_i) − sin θ_i ((∂_iθ_i)² + (∂_{i+1}θ_i)²))."""
    theta, d_a, d_b, curvature = _angles(x)
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    phi = sin @ c
    radial = (cos * (x[..., :-1] * d_a + x[..., 1:] * d_b)) @ c
    lap_phi = (cos * curvature - sin * (d_a**2 + d_b**2)) @ c
    d = x.shape[-1]
    return -2 * d * phi - 4 * radial + (1 - jnp.sum(x * x, -1)) * lap_phi


def radii(key, count: int, dim: int):
    """(count, 1) radii of points uniform in the unit d-ball, P(r < ρ) = ρ^d, drawn as
    r = exp(−E/d), E exponential. (The textbook U^{1/d}, U uniform, puts every U that float32
    rounds to 0 at the centre: at d = 10,000 that is the whole mass of r < 0.998.)"""
    return jnp.exp(-jax.random.exponential(key, (count, 1)) / dim)


def ball(key, count: int, dim: int):
    """Points uniform in the unit ball: a uniform direction at a radius from `radii`."""
    k_dir, k_rad = jax.random.split(key)
    z = jax.random.normal(k_dir, (count, dim))
    return radii(k_rad, count, dim) * z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def ball_sums(fn, args, key, count: int, dim: int, chunk: int = 100):
    """Σ fn(x, *args) over `count` points uniform in the ball, drawn `chunk` at a time in one
    compiled loop, so that memory is O(chunk · d) (10,000 points in 100,000 dimensions are 4 GB)."""
    if count % chunk:
        raise ValueError(f"ball_sums: count ({count}) must be a multiple of chunk ({chunk}).")

    @jax.jit
    def sums(keys, args):
        per_chunk = jax.lax.map(lambda k: fn(ball(k, chunk, dim), *args), keys)
        return jax.tree.map(lambda s: jnp.sum(s, 0), per_chunk)

    return sums(jax.random.split(key, count // chunk), args)


def main(
    dim: int = 100,
    estimator: str = "sparse",
    steps: int | None = None,
    probes: int = 16,
    batch: int = 100,
    quick: bool = False,
    seed: int = 0,
    learning_rate: float = 1e-3,
) -> dict:
    if steps is None:
        # each coordinate is about 1/√d on the sphere, so the solution's two-body terms are
        # nearly linear at high d and more curved at d = 100, which takes more steps to fit
        steps = 20_000 if dim <= 100 else 4_000
    if quick:
        steps = min(steps, 400)
    net = jprop.MLP((dim, 128, 128, 128, 128, 1))
    c = coefficients(dim)
    # N, z·∇N and ΔN from one pass (drift="x"), the three terms of the residual below
    if estimator == "exact":
        terms = jprop.laplacian(net, drift="x")
        laplacian = lambda p, z, key: terms(p, z)  # noqa: E731
    else:
        laplacian = jprop.laplacian(net, estimator=estimator, probes=probes, drift="x")
    # On the sphere each coordinate is about 1/√d: the network M reads z = √d x, of order 1.
    scale = dim**0.5

    def loss(params, key):
        k_points, k_probes = jax.random.split(key)
        x = ball(k_points, batch, dim)
        b = 1 - jnp.sum(x * x, -1, keepdims=True)
        z = scale * x  # N(x) = M(√d x): Δ_x N = d Δ_z M, x·∇_x N = z·∇_z M
        value, radial, lap = laplacian(params, z, k_probes)
        lap_u = -2 * dim * value - 4 * radial + b * dim * lap
        return jnp.mean((lap_u[:, 0] - source(c, x)) ** 2)

    schedule = optax.exponential_decay(learning_rate, steps, 0.01)
    optimizer = optax.adam(schedule)

    @jax.jit
    def step(params, state, key):
        value, grads = jax.value_and_grad(loss)(params, key)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    params = net.init(jax.random.key(seed))
    # Where 1 − ‖x‖² vanishes (and uniform points in a ball crowd there) Δu ≈ −2d N, so N ≈ −g/2d:
    # the output bias starts at that level, read off the source term, not the solution.
    g_sum = ball_sums(lambda x, c: jnp.sum(source(c, x)), (c,), jax.random.key(seed + 2), 1000, dim)
    level = -g_sum / (1000 * 2 * dim)
    params[-1]["b"] = params[-1]["b"] + level
    state = optimizer.init(params)
    keys = jax.random.split(jax.random.key(seed + 1), steps)
    params, state, _ = step(params, state, keys[0])  # compile
    jax.block_until_ready(params)
    start = time.perf_counter()
    for key in keys[1:]:
        params, state, value = step(params, state, key)
    jax.block_until_ready(params)
    per_step = (time.perf_counter() - start) / max(steps - 1, 1)

    def squares(x, c, params):
        truth = exact(c, x)
        guess = (1 - jnp.sum(x * x, -1)) * net(params, scale * x)[:, 0]
        return jnp.sum((guess - truth) ** 2), jnp.sum(truth**2)

    misfit, norm = ball_sums(squares, (c, params), jax.random.key(10**6 + seed), 10_000, dim)
    error = float(jnp.sqrt(misfit / norm))
    road = "exact Laplacian" if estimator == "exact" else f"{estimator} estimator, {probes} probes"
    print(
        f"d = {dim}, {road}: relative L2 error {error:.2e} after {steps} Adam steps of {batch} "
        f"points, {1e3 * per_step:.1f} ms per step"
    )
    # The claim, with margin for float32 training on any CPU: under 1% (full run), under 5%
    # after the quick run's 400 steps.
    limit = 5e-2 if quick else 1e-2
    assert error < limit, f"relative L2 error {error:.2e} ≥ {limit}"
    return {"relative_l2": error, "ms_per_step": 1e3 * per_step}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument(
        "--estimator", choices=("sparse", "rademacher", "gaussian", "exact"), default="sparse"
    )
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="20,000 at d ≤ 100, else 4,000")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    if args.dim < 2:
        parser.error(
            f"--dim must be at least 2 (the problem pairs x_i with x_(i+1)); got {args.dim}"
        )
    if args.estimator == "sparse" and not 1 <= args.probes <= args.dim:
        parser.error(f"--probes must be between 1 and --dim ({args.dim}) for the sparse estimator")
    main(args.dim, args.estimator, args.steps, args.probes, quick=args.quick)
