"""A physics-informed network for the Poisson problem −Δu = 2π² sin(πx) sin(πy) on [0, 1]², u = 0 on
the boundary, whose solution is u = sin(πx) sin(πy).

A tanh MLP is trained on the PDE residual at random interior points plus the boundary values, with
`jprop.laplacian` inside the loss: `jax.grad` of the loss runs the Laplacian's hand-written tangent
pass, transposed. Adam (optax) first, then L-BFGS (scipy), both through `jprop.fit`. It prints the
relative L2 error against the exact solution on a grid, and the time of one training step against
the same PINN written with `jax.hessian` and with folx, and writes a figure to
examples/out/.

Run: python examples/poisson_pinn.py [--quick]
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import folx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jprop

PI = np.pi


def exact(xy):
    return jnp.sin(PI * xy[..., 0]) * jnp.sin(PI * xy[..., 1])


def source(xy):  # f in −Δu = f
    return 2 * PI**2 * exact(xy)


def points(key, interior: int, boundary: int):
    """Random interior points and points on the four sides of the unit square."""
    k1, k2, k3 = jax.random.split(key, 3)
    inside = jax.random.uniform(k1, (interior, 2))
    t = jax.random.uniform(k2, (boundary,))
    side = jax.random.randint(k3, (boundary,), 0, 4)
    edge = jnp.stack(
        [
            jnp.where(side == 0, 0.0, jnp.where(side == 1, 1.0, t)),
            jnp.where(side == 2, 0.0, jnp.where(side == 3, 1.0, t)),
        ],
        axis=-1,
    )
    return inside, edge


def pinn_loss(laplacian, net):
    """mean (Δu + f)² over the interior + 10 · mean u² over the boundary."""

    def loss(params, inside, edge):
        residual = laplacian(params, inside)[:, 0] + source(inside)
        return jnp.mean(residual**2) + 10 * jnp.mean(net(params, edge) ** 2)

    return loss


def step_times(net, params, inside, edge, repeats: int) -> dict[str, float]:
    """Median ms of one jitted gradient step, jprop against jax.hessian and folx."""
    hessian = jax.vmap(
        lambda p, x: jnp.trace(jax.hessian(lambda v: net(p, v))(x), axis1=-2, axis2=-1), (None, 0)
    )
    contenders = {
        "jprop.laplacian": jprop.laplacian(net),
        "trace(jax.hessian)": hessian,
    }

    # folx on the same MLP written in plain jnp, as its users write it: folx reads jnp.tanh and
    # jnp.sin as elementwise operations, and jprop's units, which carry their own derivative
    # rules, as general functions
    unit = {"tanh": jnp.tanh, "sin": jnp.sin}[net.activation]

    def plain(p, v):
        for layer in p[:-1]:
            v = unit(v @ layer["W"].T + layer["b"])
        return v @ p[-1]["W"].T + p[-1]["b"]

    def folx_laplacian(p, x):
        one = folx.forward_laplacian(lambda v: plain(p, v), sparsity_threshold=0)
        return jax.vmap(lambda xi: one(xi).laplacian)(x)

    contenders["folx.forward_laplacian"] = folx_laplacian
    times = {}
    for name, lap in contenders.items():
        step = jax.jit(jax.grad(pinn_loss(lap, net)))
        jax.block_until_ready(step(params, inside, edge))
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(step(params, inside, edge))
            samples.append(time.perf_counter() - start)
        times[name] = 1e3 * statistics.median(samples)
    return times


def main(
    quick: bool = False, progress: bool = True, out: str | None = None, activation: str = "tanh"
) -> dict:
    net = jprop.MLP((2, 32, 32, 1), activation=activation)
    params = net.init(jax.random.key(0), jnp.float32)
    inside, edge = points(jax.random.key(1), 500 if quick else 2000, 100 if quick else 400)
    loss = pinn_loss(jprop.laplacian(net), net)
    adam_steps, lbfgs_steps = (300, 200) if quick else (2000, 2000)
    schedule = optax.cosine_decay_schedule(3e-3, adam_steps)
    first = jprop.fit(
        loss,
        params,
        inside,
        edge,
        optimizer=optax.adam(schedule),
        steps=adam_steps,
        progress=progress,
    )
    second = jprop.fit(
        loss, first.params, inside, edge, optimizer="lbfgs", steps=lbfgs_steps, progress=progress
    )
    params = second.params

    grid = jnp.stack(jnp.meshgrid(*(jnp.linspace(0, 1, 101),) * 2, indexing="ij"), -1).reshape(
        -1, 2
    )
    u, truth = net(params, grid)[:, 0], exact(grid)
    error = float(jnp.linalg.norm(u - truth) / jnp.linalg.norm(truth))
    times = step_times(net, params, inside, edge, repeats=5 if quick else 30)
    print(
        f"Poisson PINN 2-32-32-1 {activation}, {inside.shape[0]} interior + {edge.shape[0]} boundary "
        f"points, Adam {adam_steps} + L-BFGS {len(second.history)} steps: loss "
        f"{float(loss(params, inside, edge)):.3e}, relative L2 error {error:.2e}"
    )
    ours = times["jprop.laplacian"]
    for name, ms in times.items():
        print(f"  one training step, {name:24s} {ms:7.3f} ms ({ms / ours:.2f}× jprop)")
    limit = 1.5e-1 if quick else 1e-2
    assert error < limit, f"relative L2 error {error:.2e} above {limit:.0e}"

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    shape = (101, 101)
    for ax, values, title in zip(
        axes,
        (u, truth, u - truth),
        ("PINN u", "exact sin(πx) sin(πy)", f"error (relative L2 {error:.1e})"),
    ):
        image = ax.imshow(np.asarray(values).reshape(shape).T, origin="lower", extent=(0, 1, 0, 1))
        ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    folder = pathlib.Path(out) if out else pathlib.Path(__file__).with_name("out")
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "poisson_pinn.png", dpi=110)
    plt.close(fig)
    return {"relative_l2": error, "step_ms": times}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer points and steps")
    parser.add_argument("--out", default=None, help="folder for the figure (default examples/out)")
    parser.add_argument(
        "--activation", default="tanh", choices=("tanh", "sin"), help="hidden units"
    )
    args = parser.parse_args()
    main(args.quick, out=args.out, activation=args.activation)
