"""Every example script runs in quick mode and asserts its own claim (the multiscale Poisson
example in user_lane/test_multiscale_example.py). These quick runs spend most of their time
compiling: the full suite gives this file XLA's compile-speed flags (tests/conftest.py,
`COMPILE_BOUND`), in JAX's default configuration; each claim holds with its margin under either
flags, as it must on any CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scripts import load_script


def test_jacobian_hessian_example(capsys):
    errors = load_script("examples/jacobian_hessian.py").main()
    assert set(errors) == {"jacobian", "hessian", "laplacian"}
    assert max(errors.values()) < 1e-4
    assert "Hessian of output 0" in capsys.readouterr().out


def test_learn_derivative_main_job(tmp_path, capsys):
    metrics = load_script("examples/learn_derivative.py").main(
        quick=True, out=str(tmp_path), progress=False
    )
    assert (tmp_path / "learn_derivative.png").stat().st_size > 10_000
    assert metrics["relative"] < 0.1  # derivative RMSE as a fraction of the target's std
    assert metrics["function_rmse_shifted"] < 0.2 < metrics["function_rmse"]
    assert "output-bias gradient  0.0e+00" in capsys.readouterr().out


# Each training example's claim, read off the report its main() returns (main() asserts it too).
CLAIMS = {
    "examples/sobolev.py": lambda r: (
        r["values + derivatives"]["slope_rmse"] < 0.5 * r["values only"]["slope_rmse"]
        and r["values + derivatives"]["value_rmse"] < r["values only"]["value_rmse"]
    ),
    "examples/jacobian_regularisation.py": lambda r: all(
        r[penalty][metric] < r["plain"][metric]
        for penalty in ("double backprop", "‖J‖_F penalty")
        for metric in ("gradient_norm", "noise_shift")
    ),
    "examples/tangent_prop_digits.py": lambda r: (
        r["+ Tangent Prop"]["transformed"] > r["cross-entropy"]["transformed"]
    ),
}


@pytest.mark.parametrize("script", list(CLAIMS))
def test_training_examples_assert_their_claims(script, tmp_path):
    report = load_script(script).main(quick=True, out=str(tmp_path), progress=False)
    figure = tmp_path / (script.removeprefix("examples/").removesuffix(".py") + ".png")
    assert figure.stat().st_size > 10_000
    assert CLAIMS[script](report), report


def test_equinox_interop_example(capsys):
    result = load_script("examples/equinox_interop.py").main(quick=True)
    assert result["error"] < 1e-5
    assert "closed vs generic road differ by" in capsys.readouterr().out


@pytest.mark.parametrize("activation", ["tanh", "sin"])  # sin: a SIREN-style PINN
def test_poisson_pinn_example(activation, tmp_path, capsys):
    report = load_script("examples/poisson_pinn.py").main(
        quick=True, progress=False, out=str(tmp_path), activation=activation
    )
    # main() asserted it too; full runs reach 5.65e-4 (tanh) and 2.76e-3 (sin)
    assert report["relative_l2"] < 0.15
    assert (tmp_path / "poisson_pinn.png").stat().st_size > 10_000
    assert set(report["step_ms"]) >= {"jprop.laplacian", "trace(jax.hessian)"}
    assert "relative L2 error" in capsys.readouterr().out


def test_heat_pinn_example(tmp_path):
    report = load_script("examples/heat_pinn.py").main(
        quick=True, progress=False, out=str(tmp_path)
    )
    assert max(report["relative_l2"].values()) < 0.2  # main() asserted it too
    assert (tmp_path / "heat_pinn.png").stat().st_size > 10_000


def test_high_dim_poisson_radii_follow_the_ball_law():
    """Radii of points uniform in the d-ball have r^d uniform on (0, 1], and none lands at the
    centre: this key's float32 uniform draw holds an exact 0, which U^(1/d) sent to r = 0 (a
    held-out point at the centre, whose u outweighed the rest) where the law puts r near 0.999."""
    radii = load_script("examples/high_dim_poisson.py").radii
    key = jax.random.split(jax.random.key(10**6))[1]
    for dim in (3, 10_000):
        r = np.asarray(radii(key, 10_000, dim), np.float64)[:, 0]
        u = r**dim
        assert abs(u.mean() - 0.5) < 5 * (1 / 12 / u.size) ** 0.5  # 5 standard errors
        assert abs(u.var() - 1 / 12) < 0.005
        assert r.max() <= 1
    assert r.min() > 0.99  # P(r < 0.99) = 0.99^10000 ≈ 2e-44 at d = 10,000


def test_high_dim_poisson_sums_over_the_ball_in_chunks():
    """`ball_sums` draws and sums `count` points `chunk` at a time: the same sum as the points
    drawn chunk by chunk from the same keys, and a count that is not a multiple of the chunk is
    refused rather than cut short."""
    script = load_script("examples/high_dim_poisson.py")
    key, dim = jax.random.key(3), 5
    total = script.ball_sums(lambda x, w: jnp.sum(x @ w), (jnp.arange(dim),), key, 300, dim)
    keys = jax.random.split(key, 3)
    expected = sum(float(jnp.sum(script.ball(k, 100, dim) @ jnp.arange(dim))) for k in keys)
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"count \(150\) must be a multiple of chunk \(100\)"):
        script.ball_sums(lambda x: jnp.sum(x), (), key, 150, dim)


def test_high_dim_poisson_example(capsys):
    # half the quick run's steps: main() asserts the quick run's claim (under 5%) after them too
    report = load_script("examples/high_dim_poisson.py").main(
        steps=200, quick=True, estimator="sparse"
    )
    assert report["relative_l2"] < 5e-2  # full runs reach 5.2e-3
    out = capsys.readouterr().out
    assert "sparse estimator, 16 probes" in out and "after 200 Adam steps" in out
