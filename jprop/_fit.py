"""`jprop.fit`: train parameters on a jprop objective with optax or scipy, resumably.

An objective is any scalar loss `(params, *data) -> value`: every J-prop objective, sums of them with
other losses, any function of jprop's input derivatives. `jax.value_and_grad` of it runs the
hand-written rules where jprop has them. The step is jit-compiled once. Checkpoints are
equinox's leaf serialisation of {params, optimiser state, step} and the history, written atomically, so
a run killed at any moment resumes from its last checkpoint with nothing lost but the steps since.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ._validation import check_size

SCIPY_METHODS = {"cg": "CG", "lbfgs": "L-BFGS-B"}


class FitResult(NamedTuple):
    """params: the final (or last finite) parameters; history: the objective per step, numpy (optax:
    at the parameters each step starts from; scipy: after each iteration); success: False when
    training stopped on a non-finite value; message: what happened."""

    params: Any
    history: np.ndarray
    success: bool
    message: str


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra; training works without the bar
        return None
    return tqdm(total=total, initial=initial, desc=desc, leave=False)


def _save(path: str, state: dict) -> None:
    """{params, opt_state, step} by equinox's leaf serialisation, the history as .npy beside it
    (its length may change when a run is resumed with more steps). Each is written to a temporary
    file and renamed, so a crash mid-write keeps the previous checkpoint."""
    state = dict(state)
    history = np.asarray(state.pop("history"))
    with open(f"{path}.history.tmp", "wb") as handle:
        np.save(handle, history)
    eqx.tree_serialise_leaves(f"{path}.tmp", state)
    os.replace(f"{path}.history.tmp", f"{path}.history.npy")
    os.replace(f"{path}.tmp", path)


def _load(path: str, like: dict) -> dict:
    like = dict(like)
    steps = like.pop("history").shape[0]
    state = eqx.tree_deserialise_leaves(path, like)
    history = np.full(steps, np.nan)
    saved = np.load(f"{path}.history.npy")[: min(int(state["step"]), steps)]
    history[: saved.size] = saved
    return {**state, "history": history}


def fit(
    objective: Callable[..., jax.Array],
    params: Any,
    *data: Any,
    optimizer: optax.GradientTransformation | str = "lbfgs",
    steps: int = 100,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
) -> FitResult:
    """Minimise a scalar loss `objective(params, *data)` for `steps` steps.

    **Arguments:**
    - `optimizer`: an optax `GradientTransformation` (a jitted update per step), or `"cg"` /
      `"lbfgs"` for scipy's conjugate gradient / L-BFGS on the flattened parameters (needs scipy;
      `steps` is then the iteration limit).
    - `progress`: a tqdm bar with the current value (if tqdm is installed).
    - `checkpoint`: a file path. If it exists, training resumes from it; it is rewritten every
      `checkpoint_every` steps and at the end.

    **Returns:** a `FitResult(params, history, success, message)`. A non-finite value stops
    training: `params` are then the last finite ones, `success` is False and `message` says where.

    >>> import jax, jax.numpy as jnp, optax, jprop
    >>> loss = lambda p, x: jnp.sum((p - x) ** 2)
    >>> result = jprop.fit(loss, jnp.zeros(3), jnp.ones(3), optimizer=optax.sgd(0.25),
    ...                    steps=20, progress=False)
    >>> bool(jnp.allclose(result.params, 1.0)), result.success
    (True, True)
    """
    steps = check_size(steps, "steps", "jprop.fit")
    checkpoint_every = check_size(checkpoint_every, "checkpoint_every", "jprop.fit")
    if not callable(objective):
        raise TypeError(
            "jprop.fit: `objective` must be a scalar loss (params, *data) -> value, e.g. a jprop "
            f"objective or a sum of losses; got {type(objective).__name__}."
        )
    out = jax.eval_shape(objective, params, *data)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise TypeError(
            "jprop.fit: `objective(params, *data)` must return a scalar loss; it returned "
            f"{shape}. A function returning (value, grads) pairs is the old form: pass the loss "
            "itself, and fit differentiates it."
        )
    objective = jax.value_and_grad(objective)
    checkpoint = None if checkpoint is None else os.fspath(checkpoint)
    if isinstance(optimizer, str):
        if optimizer not in SCIPY_METHODS:
            raise ValueError(
                f"jprop.fit: unknown optimizer {optimizer!r}; pass an optax GradientTransformation "
                f"or one of {', '.join(map(repr, SCIPY_METHODS))}."
            )
        return _fit_scipy(
            objective, params, data, optimizer, steps, progress, checkpoint, checkpoint_every
        )
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            "jprop.fit: `optimizer` must be an optax GradientTransformation (e.g. optax.adam(1e-3)) "
            f"or 'cg' / 'lbfgs'; got {type(optimizer).__name__}."
        )
    return _fit_optax(
        objective, params, data, optimizer, steps, progress, checkpoint, checkpoint_every
    )


def _stopped(step: int, value: float) -> str:
    return (
        f"stopped: the objective became {value} at step {step}; returning the parameters of the "
        "last finite step. Lower the learning rate, or check the data for non-finite values."
    )


def _fit_optax(objective, params, data, optimizer, steps, progress, checkpoint, every):
    @jax.jit
    def step_fn(params, opt_state, *data):
        value, grads = objective(params, *data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    state = {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.asarray(0),
        "history": np.full(steps, np.nan),
    }
    if checkpoint and os.path.exists(checkpoint):
        state = _load(checkpoint, state)
    start = int(state["step"])
    params, opt_state, history = state["params"], state["opt_state"], np.array(state["history"])
    bar = _progress(steps, start, progress, "fit")
    success, message = True, f"finished {steps} steps"
    for step in range(start, steps):
        new_params, new_opt_state, value = step_fn(params, opt_state, *data)
        value = float(value)  # the value at `params`, before this step's update
        if not np.isfinite(value):
            success, message = False, _stopped(step, value)
            break
        params, opt_state, history[step] = new_params, new_opt_state, value
        if bar is not None:
            bar.set_postfix(value=f"{value:.4g}", refresh=False)
            bar.update()
        if checkpoint and ((step + 1) % every == 0 or step + 1 == steps):
            _save(
                checkpoint,
                {
                    "params": params,
                    "opt_state": opt_state,
                    "step": jnp.asarray(step + 1),
                    "history": history,
                },
            )
    if bar is not None:
        bar.close()
    if not success:
        print(f"jprop.fit: {message}", file=sys.stderr)
    return FitResult(params, history[~np.isnan(history)], success, message)


class _NonFinite(Exception):
    pass


def _fit_scipy(objective, params, data, method, steps, progress, checkpoint, every):
    try:
        from scipy.optimize import minimize
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"jprop.fit: optimizer={method!r} uses scipy; pip install scipy (or jprop[examples])."
        ) from error
    flat, unravel = ravel_pytree(params)
    state = {"params": params, "step": jnp.asarray(0), "history": np.full(steps, np.nan)}
    if checkpoint and os.path.exists(checkpoint):
        state = _load(checkpoint, state)
        flat = ravel_pytree(state["params"])[0]
    start, history = int(state["step"]), np.array(state["history"])
    dtype = flat.dtype

    @jax.jit
    def value_and_flat_grad(w, *data):
        value, grads = objective(unravel(w), *data)
        return value, ravel_pytree(grads)[0]

    last = {"w": np.asarray(flat, np.float64)}

    def fun(w):
        value, grad = value_and_flat_grad(jnp.asarray(w, dtype), *data)
        value = float(value)
        if not np.isfinite(value):
            raise _NonFinite(value)
        return value, np.asarray(grad, np.float64)

    bar = _progress(steps, start, progress, f"fit ({method})")
    counter = {"step": start}

    def callback(intermediate_result):  # scipy calls this after each accepted iteration
        w, step = intermediate_result.x, counter["step"]
        if step < steps:
            history[step] = intermediate_result.fun
        counter["step"] = step + 1
        last["w"] = np.array(w)
        if bar is not None:
            bar.set_postfix(value=f"{intermediate_result.fun:.4g}", refresh=False)
            bar.update()
        if checkpoint and (counter["step"] % every == 0):
            state = {"params": unravel(jnp.asarray(w, dtype)), "step": jnp.asarray(counter["step"])}
            _save(checkpoint, {**state, "history": history})

    success = True
    try:
        result = minimize(
            fun,
            last["w"],
            jac=True,
            method=SCIPY_METHODS[method],
            callback=callback,
            options={"maxiter": max(steps - start, 0)},
        )
        w, message = result.x, f"scipy {SCIPY_METHODS[method]}: {result.message}"
    except _NonFinite as bad:
        w, success = last["w"], False
        message = _stopped(counter["step"], bad.args[0])
        print(f"jprop.fit: {message}", file=sys.stderr)
    if bar is not None:
        bar.close()
    params = unravel(jnp.asarray(w, dtype))
    if checkpoint:
        _save(
            checkpoint,
            {
                "params": params,
                "step": jnp.asarray(counter["step"]),
                "history": history,
            },
        )
    return FitResult(params, history[~np.isnan(history)], success, message)
