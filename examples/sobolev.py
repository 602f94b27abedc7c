"""Sobolev training (Czarnecki et al. 2017): fit values *and* slopes, and the slope between the
training points comes out right too.

The same 1-20-1 tansig network, the same initial weights and the same optimizer (L-BFGS through
`jprop.fit`) are trained twice on 12 samples of f(x) = sin(3x) + x²/2 on [-1.5, 1.5]: once on the
values alone, once on values plus the derivatives f'(x) (`jprop.derivative_targets`, whose
Jacobian term is a J-prop objective). Held-out derivative and value errors are measured on a dense
grid; the script asserts that adding derivatives lowers the held-out derivative error.

Run: python examples/sobolev.py [--quick]
"""

from __future__ import annotations

import argparse
import pathlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jprop  # noqa: E402


def truth(x):
    return jnp.sin(3 * x) + 0.5 * x**2


def truth_slope(x):
    return 3 * jnp.cos(3 * x) + x


def main(quick: bool = False, out: str | None = None, progress: bool = True) -> dict:
    net = jprop.MLP((1, 20, 1))
    start = net.init(jax.random.key(0), jnp.float64)
    x = jnp.linspace(-1.5, 1.5, 12)[:, None]
    y, T = truth(x), truth_slope(x)[:, :, None]  # values (B, 1), Jacobians (B, 1, 1)
    steps = 150 if quick else 600

    def values_only(p, x, y):
        return 0.5 * jnp.mean(jnp.sum((net(p, x) - y) ** 2, -1))

    sobolev = jprop.derivative_targets(net)  # ½‖f − y‖² + ½‖J − T‖², batch means
    fitted = {
        "values only": jprop.fit(values_only, start, x, y, steps=steps, progress=progress),
        "values + derivatives": jprop.fit(sobolev, start, x, y, T, steps=steps, progress=progress),
    }

    grid = jnp.linspace(-1.5, 1.5, 600)[:, None]
    rms = lambda e: float(jnp.sqrt(jnp.mean(e**2)))  # noqa: E731
    report = {}
    for name, result in fitted.items():
        slope = jprop.jacobian(net)(result.params, grid)[:, 0, 0]
        report[name] = {
            "value_rmse": rms(net(result.params, grid)[:, 0] - truth(grid[:, 0])),
            "slope_rmse": rms(slope - truth_slope(grid[:, 0])),
            "train_value_rmse": rms(net(result.params, x) - y),
            "params": result.params,
        }
        print(
            f"{name:22s} held-out value RMSE {report[name]['value_rmse']:.4f}, derivative RMSE "
            f"{report[name]['slope_rmse']:.4f} (training value RMSE "
            f"{report[name]['train_value_rmse']:.1e})"
        )
    plain, both = report["values only"], report["values + derivatives"]
    print(
        f"derivatives lower the held-out derivative error {plain['slope_rmse'] / both['slope_rmse']:.1f}×"
    )
    _plot(
        net,
        report,
        x,
        grid,
        pathlib.Path(out or pathlib.Path(__file__).parent / "out") / "sobolev.png",
    )
    assert both["slope_rmse"] < 0.5 * plain["slope_rmse"], (both["slope_rmse"], plain["slope_rmse"])
    assert both["value_rmse"] < plain["value_rmse"]
    return report


def _plot(net, report, x, grid, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.asarray(grid[:, 0])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(g, truth(g), "k-", lw=2, label="f(x) = sin 3x + x²/2")
    axes[1].plot(g, truth_slope(g), "k-", lw=2, label="f'(x)")
    for (name, r), style in zip(report.items(), ["C3--", "C0-."]):
        axes[0].plot(
            g, net(r["params"], grid)[:, 0], style, label=f"{name} (RMSE {r['value_rmse']:.3f})"
        )
        slope = jprop.jacobian(net)(r["params"], grid)[:, 0, 0]
        axes[1].plot(g, slope, style, label=f"{name} (RMSE {r['slope_rmse']:.3f})")
    axes[0].plot(
        np.asarray(x[:, 0]), truth(np.asarray(x[:, 0])), "ko", ms=5, label="12 training points"
    )
    axes[1].plot(
        np.asarray(x[:, 0]), truth_slope(np.asarray(x[:, 0])), "ko", ms=5, label="slopes given"
    )
    axes[0].set(title="values", xlabel="x")
    axes[1].set(title="derivatives (held-out between the points)", xlabel="x")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Sobolev training: the same net fitted to values alone, and to values + slopes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="folder for the figure (default examples/out)")
    args = parser.parse_args()
    main(args.quick, args.out)
