"""A time-dependent PDE: the heat equation u_t = Δ_x u on [0, 1]² for t in [0, 0.1], with u = 0 on
the boundary and u(0, x, y) = sin(πx) sin(πy); the solution is u = exp(−2π²t) sin(πx) sin(πy).

The network takes (s, x, y) with the time scaled to s = t / 0.1 in [0, 1], so that every input
spans the same range, and has tanh hidden units (`--activation sin` trains sine units with the
same budget). In s the equation reads u_s = 0.1 Δ_x u. The residual needs the Laplacian over the
space coordinates only, `jprop.laplacian(net, dims=(1, 2))`, which pushes two input-tangents
instead of three, and the time derivative, the R-operator along e_s
(`jprop.R(net)(params, x, e_s)`, one forward tangent). Adam, then L-BFGS, through `jprop.fit`.
It prints the relative L2 error at t = 0, 0.05, 0.1 and writes a figure to examples/out/.

Run: python examples/heat_pinn.py [--quick] [--activation sin] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jprop

PI = np.pi
T_END = 0.1


def exact(sxy):
    """The solution at (s, x, y), where s = t / T_END in [0, 1] is the network's time input."""
    s, x, y = sxy[..., 0], sxy[..., 1], sxy[..., 2]
    return jnp.exp(-2 * PI**2 * T_END * s) * jnp.sin(PI * x) * jnp.sin(PI * y)


def points(key, interior: int, boundary: int, initial: int):
    """Interior (s, x, y), boundary (x or y on a side) and initial (s = 0) points, s = t / T_END."""
    keys = jax.random.split(key, 5)
    inside = jax.random.uniform(keys[0], (interior, 3))
    edge = jax.random.uniform(keys[1], (boundary, 3))
    side = jax.random.randint(keys[2], (boundary,), 0, 4)
    edge = edge.at[:, 1].set(jnp.where(side == 0, 0.0, jnp.where(side == 1, 1.0, edge[:, 1])))
    edge = edge.at[:, 2].set(jnp.where(side == 2, 0.0, jnp.where(side == 3, 1.0, edge[:, 2])))
    start = jax.random.uniform(keys[3], (initial, 3)).at[:, 0].set(0.0)
    return inside, edge, start


def main(
    quick: bool = False, progress: bool = True, out: str | None = None, activation: str = "tanh"
) -> dict:
    net = jprop.MLP((3, 32, 32, 1), activation=activation)
    params = net.init(jax.random.key(0), jnp.float32)
    counts = (400, 120, 120) if quick else (2000, 400, 400)
    inside, edge, start = points(jax.random.key(1), *counts)
    spatial_laplacian = jprop.laplacian(net, dims=(1, 2))  # Δ_x u over x, y only
    time_derivative = jprop.R(net)  # ∂u/∂s = J e_s
    e_s = jnp.zeros_like(inside).at[:, 0].set(1.0)

    def loss(p, inside, edge, start):
        # u_t = Δ_x u in the scaled time s = t / T_END: u_s = T_END Δ_x u
        u_s = time_derivative(p, inside, e_s)[:, 0]
        residual = u_s - T_END * spatial_laplacian(p, inside)[:, 0]
        boundary = net(p, edge)[:, 0]
        initial = net(p, start)[:, 0] - exact(start)
        return jnp.mean(residual**2) + 10 * (jnp.mean(boundary**2) + jnp.mean(initial**2))

    adam_steps, lbfgs_steps = (600, 600) if quick else (2000, 2000)
    schedule = optax.cosine_decay_schedule(3e-3, adam_steps)
    data = (inside, edge, start)
    first = jprop.fit(
        loss, params, *data, optimizer=optax.adam(schedule), steps=adam_steps, progress=progress
    )
    second = jprop.fit(
        loss, first.params, *data, optimizer="lbfgs", steps=lbfgs_steps, progress=progress
    )
    params = second.params

    grid = jnp.stack(jnp.meshgrid(*(jnp.linspace(0, 1, 61),) * 2, indexing="ij"), -1).reshape(-1, 2)
    errors = {}
    for t in (0.0, T_END / 2, T_END):
        sxy = jnp.concatenate([jnp.full((grid.shape[0], 1), t / T_END), grid], axis=-1)
        u, truth = net(params, sxy)[:, 0], exact(sxy)
        errors[t] = float(jnp.linalg.norm(u - truth) / jnp.linalg.norm(truth))
    print(
        f"heat PINN 3-32-32-1 {activation}, {counts[0]} interior + {counts[1]} boundary + {counts[2]} "
        f"initial points, Adam {adam_steps} + L-BFGS {len(second.history)} steps: loss "
        f"{float(loss(params, *data)):.3e}"
    )
    for t, error in errors.items():
        print(f"  t = {t:.2f}: relative L2 error {error:.2e}")
    # The claim, with margin for float32 training on any CPU: under 10% for the full run with tanh
    # units, under 20% for a --quick run or sine units.
    limit = 1e-1 if activation in ("tanh", "tansig") and not quick else 2e-1
    assert max(errors.values()) < limit, f"relative L2 errors {errors} above {limit:.0e}"

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, t in zip(axes, errors):
        sxy = jnp.concatenate([jnp.full((grid.shape[0], 1), t / T_END), grid], axis=-1)
        image = ax.imshow(
            np.asarray(net(params, sxy)[:, 0]).reshape(61, 61).T,
            origin="lower",
            extent=(0, 1, 0, 1),
            vmin=0,
            vmax=1,
        )
        ax.set_title(f"u(t = {t:.2f}), relative L2 error {errors[t]:.1e}")
    fig.colorbar(image, ax=axes, fraction=0.02)
    folder = pathlib.Path(out) if out else pathlib.Path(__file__).with_name("out")
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "heat_pinn.png", dpi=110)
    plt.close(fig)
    return {"relative_l2": errors}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and steps")
    parser.add_argument("--out", default=None, help="folder for the figure (default examples/out)")
    parser.add_argument(
        "--activation", default="tanh", choices=("tanh", "sin"), help="hidden units"
    )
    args = parser.parse_args()
    main(args.quick, out=args.out, activation=args.activation)
