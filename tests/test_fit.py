"""jprop.fit: optax and scipy training, resuming from checkpoints, stopping on non-finite values."""

import os

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

    # A stop is a RuntimeWarning (which a user can filter or raise), not a print to stderr.
    with pytest.warns(RuntimeWarning, match="jprop.fit: stopped"):
        result = jprop.fit(
            exploding,
            {"w": jnp.zeros(3)},
            100 * TARGET,
            optimizer=optimizer,
            steps=50,
            progress=False,
        )
    assert not result.success and "stopped: the objective became nan" in result.message
    assert bool(jnp.all(jnp.isfinite(result.params["w"])))
    assert capsys.readouterr().err == ""


def test_fit_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'bfgs'"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer="bfgs")
    with pytest.raises(TypeError, match="optax GradientTransformation"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer=0.1)
    with pytest.raises(ValueError, match="`steps` must be at least 1"):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, steps=0)
    # an optimizer or a method name after the data, by position, would be data: it is named
    for optimizer, what in ((optax.adam(1e-3), "an optax GradientTransformation"), ("cg", "'cg'")):
        with pytest.raises(
            TypeError, match=rf"data argument 2 \(after params\) is {what}; .*optimizer=optax"
        ):
            jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer)


def test_a_stop_returns_and_checkpoints_the_last_finite_step(tmp_path):
    # sqrt(1 - w) is finite at every step until one update carries w past 1: the parameters
    # returned, and those checkpointed, are the last ones with a finite value.
    def root(p):
        return jnp.sum(jnp.sqrt(1.0 - p["w"]))

    path = str(tmp_path / "run.eqx")
    run = lambda: jprop.fit(  # noqa: E731
        root,
        {"w": jnp.zeros(2)},
        optimizer=optax.sgd(0.3),
        steps=50,
        progress=False,
        checkpoint=path,
    )
    with pytest.warns(RuntimeWarning, match="stopped"):
        result = run()
    assert not result.success
    assert bool(jnp.isfinite(root(result.params)))
    assert_close(result.history[-1], root(result.params), 1e-6)
    with pytest.warns(RuntimeWarning, match="stopped"):
        again = (
            run()
        )  # resumes from the checkpoint: finite parameters, and stops again with a value
    assert bool(jnp.isfinite(root(again.params))) and again.history.size >= 1


@pytest.mark.parametrize("optimizer", [optax.sgd(0.1), "cg"], ids=["sgd", "cg"])
def test_a_non_finite_gradient_at_a_finite_value_stops_training(optimizer):
    # √|w| is 0 at w = 0 with a NaN gradient: no NaN update is kept, returned or checkpointed,
    # and scipy's CG is stopped before its line search meets it (it reported success before).
    def kink(p):
        return jnp.sum(jnp.sqrt(jnp.abs(p["w"]))) + jnp.sum((p["w"] - 1.0) ** 2)

    with pytest.warns(RuntimeWarning, match="gradient became non-finite"):
        result = jprop.fit(kink, {"w": jnp.zeros(2)}, optimizer=optimizer, steps=5, progress=False)
    assert not result.success and "gradient became non-finite" in result.message
    assert bool(jnp.all(jnp.isfinite(result.params["w"])))


def test_checkpoint_paths_and_steps_are_checked_before_training(tmp_path):
    start = {"w": jnp.zeros(3)}
    with pytest.raises(ValueError, match="does not exist"):
        jprop.fit(quadratic, start, TARGET, steps=3, checkpoint=str(tmp_path / "no" / "run.eqx"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="does not exist"):
        jprop.fit(quadratic, start, TARGET, steps=3, checkpoint=str(tmp_path / "file" / "run"))
    with pytest.raises(ValueError, match="must be a file path"):
        jprop.fit(quadratic, start, TARGET, steps=3, checkpoint="")
    path = str(tmp_path / "run.eqx")
    (tmp_path / ".run.eqx.killed.tmp").write_text("")  # left by a run killed mid-write
    jprop.fit(
        quadratic, start, TARGET, optimizer=optax.sgd(0.1), steps=6, progress=False, checkpoint=path
    )
    with pytest.raises(ValueError, match="at step 6, beyond steps=4"):
        jprop.fit(quadratic, start, TARGET, optimizer=optax.sgd(0.1), steps=4, checkpoint=path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run.eqx", "run.eqx.history.npy"]


def test_no_progress_bar_floods_a_log(capsys):
    # stderr is captured here, not a terminal: the bar stays off, so no carriage returns.
    result = jprop.fit(
        quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer=optax.sgd(0.5), steps=30, progress=True
    )
    assert result.success and "\r" not in capsys.readouterr().err


def test_a_checkpoint_that_does_not_match_names_the_file_and_what_differs(
    tmp_path, standard_promotion
):
    path = str(tmp_path / "run.eqx")  # written by the default fit method (scipy's L-BFGS)
    jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, steps=2, progress=False, checkpoint=path)
    other_model = {"w": jnp.zeros(4)}
    with pytest.raises(
        ValueError, match=r"run\.eqx.*array \d+ \(params: .*'w'.*shape \(3,\).*\(4,\)"
    ):
        jprop.fit(quadratic, other_model, jnp.zeros(4), steps=4, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"run\.eqx.*optimizer state"):
        jprop.fit(
            quadratic,
            {"w": jnp.zeros(3)},
            TARGET,
            optimizer=optax.adam(0.1),  # its state (count, moments) was never saved
            steps=4,
            progress=False,
            checkpoint=path,
        )
    with open(path, "r+b") as handle:  # truncated: a damaged file
        handle.truncate(40)
    with pytest.raises(
        ValueError, match=r"cannot resume from the checkpoint .*run\.eqx.*ends after"
    ):
        jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, steps=4, progress=False, checkpoint=path)


@pytest.mark.parametrize("optimizer", ["cg", "lbfgs"])
def test_a_scipy_stop_short_of_convergence_is_not_a_success(optimizer):
    # |w - 1| has no gradient at its minimum: scipy's line search stops with "precision loss"
    # (CG) or "ABNORMAL" (L-BFGS-B), which fit reported as success.
    result = jprop.fit(
        lambda p: jnp.sum(jnp.abs(p - 1.0)) + 0.1 * jnp.sum(jnp.abs(p - 2.0)),
        jnp.zeros(3, jnp.float32),
        optimizer=optimizer,
        progress=False,
    )
    assert not result.success and result.message.startswith("scipy")
    finished = jprop.fit(quadratic, {"w": jnp.zeros(3)}, TARGET, optimizer=optimizer, steps=2)
    assert finished.success  # the step limit asked for is a success, as for optax


def test_a_checkpoint_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    # Only the folder's existence was checked: the first save, at the end of training, raised a
    # raw FileNotFoundError naming a temporary file, and the run was lost.
    start = {"w": jnp.zeros(3)}
    with pytest.raises(ValueError, match=r"cannot be written: creating a file in its folder"):
        jprop.fit(quadratic, start, TARGET, steps=2, checkpoint="/proc/run.eqx")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    path = str(tmp_path / "run.eqx")
    jprop.fit(quadratic, start, TARGET, steps=2, progress=False, checkpoint=path)  # writable
    monkeypatch.setattr("jprop.training._fit._save", full_disk)  # the disk fills during the run
    for optimizer in (optax.sgd(0.5), "lbfgs"):
        with pytest.warns(RuntimeWarning, match="could not be written.*its result is returned"):
            result = jprop.fit(
                quadratic,
                start,
                TARGET,
                optimizer=optimizer,
                steps=40,
                progress=False,
                checkpoint=str(tmp_path / f"{type(optimizer).__name__}.eqx"),
                checkpoint_every=5,
            )
        assert_close(result.params["w"], TARGET, 1e-5, "trained despite the failed saves")


def test_a_mismatched_resume_names_its_real_cause(tmp_path, standard_promotion):
    path = str(tmp_path / "run.eqx")
    start = {"w": jnp.zeros(3, jnp.float32)}
    target = TARGET.astype(jnp.float32)
    run = lambda start, optimizer: jprop.fit(  # noqa: E731
        quadratic, start, target, optimizer=optimizer, steps=4, progress=False, checkpoint=path
    )
    run(start, optax.adam(0.1))
    with pytest.raises(
        ValueError,
        match=r"params: \['params'\]\['w'\]\) was saved as float32, this run's is float64",
    ):
        run({"w": jnp.zeros(3, jnp.float64)}, optax.adam(0.1))
    with pytest.raises(
        ValueError,
        match=r"optimizer state has 3 arrays where this run's has 0: .*another optimizer",
    ):
        run(start, optax.sgd(0.1))
    os.unlink(path + ".history.npy")
    with pytest.raises(ValueError, match=r"history file .*run\.eqx\.history\.npy.* is missing"):
        run(start, optax.adam(0.1))


def test_a_loss_with_a_state_gets_a_hint_that_applies():
    net = jprop.MLP((3, 8, 2))
    params = net.init(jax.random.key(0))
    x = jnp.ones((4, 3))
    norm = jprop.SpectralNorm(net)
    state = norm.init(params, x, jax.random.key(1))
    for data in ((x,), (x, state)):
        with pytest.raises(TypeError, match=r"carries a state.*has_aux=True") as error:
            jprop.fit(norm, params, *data, optimizer=optax.sgd(0.1), steps=2)
        assert "old form" not in str(error.value)
