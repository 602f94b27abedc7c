"""jprop.fit: optax and scipy training, resuming from checkpoints, stopping on non-finite values."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close

import jprop

TARGET = jnp.array([1.0, -2.0, 0.5])
quadratic = lambda p, t: 0.5 * jnp.sum((p["w"] - t) ** 2)  # noqa: E731


@pytest.mark.parametrize("optimizer", [optax.sgd(0.5), "lbfgs", "cg"], ids=["sgd", "lbfgs", "cg"])
def test_fit_converges_and_records_history(optimizer):
    result = jprop.fit(
        quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer=optimizer, steps=30, progress=False
    )
    assert result.success, result.message
    assert_close(result.params["w"], TARGET, 1e-6, "minimiser")
    start = 0.5 * float(TARGET @ TARGET)  # optax records the value each step starts from
    assert (
        result.history[0] == pytest.approx(start)
        if optimizer not in ("cg", "lbfgs")
        else (result.history[0] < start)
    )
    assert np.all(np.diff(result.history) <= 1e-12)  # monotone on a quadratic


@pytest.fixture
def standard_promotion():  # optax's Adam mixes its int step count with floats, as JAX allows
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, standard_promotion):
    # A J-prop objective, Adam, 12 steps: straight through, and as 5 steps + resume to 12.
    net = jprop.MLP((1, 6, 1))
    params = net.init(jax.random.key(0), jnp.float64)
    x = jnp.linspace(-1, 1, 20)[:, None]
    args = (x, jnp.ones_like(x), jnp.cos(3 * x))
    objective, opt = jprop.jprop_v(net), optax.adam(0.05)
    straight = jprop.fit(objective, params, *args, optimizer=opt, steps=12, progress=False)
    path = tmp_path / "run.eqx"
    first = jprop.fit(
        objective,
        params,
        *args,
        optimizer=opt,
        steps=5,
        progress=False,
        checkpoint=path,
        checkpoint_every=2,
    )
    assert len(first.history) == 5 and path.exists()
    resumed = jprop.fit(
        objective, params, *args, optimizer=opt, steps=12, progress=False, checkpoint=path
    )
    assert_close(resumed.history, straight.history, 1e-12, "history")
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
        assert_close(a, b, 1e-12, "params")


def test_scipy_run_checkpoints_and_resumes(tmp_path):
    path = tmp_path / "cg.eqx"
    first, resumed = (  # one step, then resumed from its checkpoint to 30
        jprop.fit(
            quadratic,
            {"w": jnp.zeros(3)},
            TARGET,
            optimizer="cg",
            steps=steps,
            progress=False,
            checkpoint=path,
        )
        for steps in (1, 30)
    )
    assert len(first.history) == 1 and resumed.history[0] == first.history[0]
    assert_close(resumed.params["w"], TARGET, 1e-6, "resumed minimiser")


@pytest.mark.parametrize("optimizer", [optax.sgd(10.0), "lbfgs"], ids=["sgd", "lbfgs"])
def test_non_finite_values_stop_training_with_a_message(optimizer, capsys):
    def exploding(p, t):  # finite for |w| < 3, then log of a negative number
        return jnp.sum(jnp.log(9.0 - p["w"] ** 2)) - jnp.sum(p["w"] * t)

    result = jprop.fit(
        exploding, {"w": jnp.zeros(3)}, 100 * TARGET, optimizer=optimizer, steps=50, progress=False
    )
    assert not result.success and "stopped: the objective became nan" in result.message
    assert bool(jnp.all(jnp.isfinite(result.params["w"])))
    assert "jprop.fit: stopped" in capsys.readouterr().err


def test_fit_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'bfgs'"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer="bfgs")
    with pytest.raises(TypeError, match="optax GradientTransformation"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer=0.1)
    with pytest.raises(ValueError, match="`steps` must be at least 1"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, steps=0)
