"""`jprop.fit`: train parameters on a jprop objective with optax or scipy, resumably.

An objective is any scalar loss `(params, *data) -> value`: every J-prop objective, sums of them with
other losses, any function of jprop's input derivatives. `jax.value_and_grad` of it runs the
hand-written rules where jprop has them. The step is jit-compiled once. Checkpoints are
equinox's leaf serialisation of {params, optimizer state, step} and the history, written atomically.
An optax run killed at any moment resumes from its last checkpoint exactly as the uninterrupted run,
with nothing lost but the steps since. A scipy run ("cg", "lbfgs") checkpoints its parameters only:
scipy does not expose its optimiser's memory (CG's direction, L-BFGS's curvature pairs), so a resumed
scipy run restarts its optimiser at the saved parameters and takes its own path from there.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .._program import all_arrays, type_name
from .._validation import check_size, switch
from ..objectives._whole_jacobian import SpectralNorm

SCIPY_METHODS = {"cg": "CG", "lbfgs": "L-BFGS-B"}


@dataclasses.dataclass(frozen=True)
class FitResult:
    """params: the final (or last finite) parameters; history: the objective per step, numpy (optax:
    at the parameters each step starts from; scipy: after each iteration); success: False when
    training stopped on a non-finite value, or scipy stopped before converging and before its
    iteration limit; message: what happened.

    Examples:
        >>> import jax.numpy as jnp, optax, jprop
        >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
        >>> result = jprop.fit(loss, jnp.zeros(2), optimizer=optax.sgd(0.25), steps=3, progress=False)
        >>> result.success, result.history.shape
        (True, (3,))
    """

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
    # disable=None: no bar when stderr is not a terminal (a log file, CI), which a bar's carriage
    # returns would flood
    return tqdm(total=total, initial=initial, desc=desc, leave=False, disable=None)


def _save(path: str, state: dict) -> None:
    """{params, opt_state, step} by equinox's leaf serialisation, the history as .npy beside it
    (its length may change when a run is resumed with more steps). Each is written to a temporary
    file of its own (two runs on one path do not collide) and renamed, so a crash mid-write keeps
    the previous checkpoint."""
    state = dict(state)
    history = np.asarray(state.pop("history"))
    for target, write in (
        (f"{path}.history.npy", lambda handle: np.save(handle, history)),
        (path, lambda handle: eqx.tree_serialise_leaves(handle, state)),
    ):
        folder, name = os.path.split(os.path.abspath(target))
        descriptor, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                write(handle)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise


def _save_or_warn(path: str, state: dict) -> bool:
    """`_save`, but a failure (a full disk, a folder removed mid-run) is a warning, not the loss
    of the run: training continues, and the result is returned. True when saved."""
    try:
        _save(path, state)
        return True
    except OSError as error:
        warnings.warn(
            f"jprop.fit: the checkpoint {path!r} could not be written ({error}); training goes on "
            "and its result is returned, but a later resume starts from the last checkpoint "
            "written, if any.",
            RuntimeWarning,
            stacklevel=4,
        )
        return False


def _saved_arrays(path: str) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The shapes and dtypes of the arrays written one after another into the file `path` (as
    `eqx.tree_serialise_leaves` writes them), read until the file ends or stops being arrays."""
    arrays = []
    with open(path, "rb") as handle:
        while True:
            try:
                array = np.load(handle, allow_pickle=False)
            except (ValueError, EOFError, OSError):
                return arrays
            arrays.append((array.shape, array.dtype))


def _mismatch(path: str, like: dict) -> str:
    """What differs between the checkpoint at `path` and the state this run would save."""
    if not os.path.exists(f"{path}.history.npy"):
        return (
            f"its history file {path + '.history.npy'!r}, written beside it by every save, is "
            "missing"
        )
    leaves = jax.tree_util.tree_leaves_with_path(like)  # opt_state, params, step: sorted keys
    expected = [
        (jax.tree_util.keystr(k), np.shape(v), np.dtype(jnp.result_type(v))) for k, v in leaves
    ]
    saved = _saved_arrays(path)
    n_state = len(jax.tree.leaves(like.get("opt_state", ())))
    tail = len(expected) - n_state  # the params and the step, last in both
    if len(saved) != len(expected) and len(saved) >= tail:
        ours = [(shape, dtype) for _, shape, dtype in expected[n_state:]]
        if saved[len(saved) - tail :] == ours:
            return (
                f"its optimizer state has {len(saved) - tail} arrays where this run's has "
                f"{n_state}: it was written by another optimizer (or fit method: a scipy run "
                "saves no optimizer state)"
            )
    order = sorted(range(len(expected)), key=lambda i: "'params'" not in expected[i][0])
    for index in order:  # the params first: a difference there explains the rest
        name, shape, dtype = expected[index]
        if index >= len(saved):
            return f"it ends after {len(saved)} arrays; this run's state has {len(expected)}"
        part = (
            "params" if "'params'" in name else "optimizer state" if "opt_state" in name else name
        )
        if saved[index][0] != shape:
            return (
                f"array {index} ({part}: {name}) was saved with shape {saved[index][0]}, this "
                f"run's has shape {shape}"
            )
        if saved[index][1] != dtype:
            return (
                f"array {index} ({part}: {name}) was saved as {saved[index][1]}, this run's is "
                f"{dtype}: cast the params to the saved dtype to resume"
            )
    return (
        f"it holds {len(saved)} arrays like this run's state, but they do not load (a different "
        "model, optimizer or fit method, or a damaged file)"
    )


def _load(path: str, like: dict) -> dict:
    like = dict(like)
    steps = like.pop("history").shape[0]
    try:
        state = eqx.tree_deserialise_leaves(path, like)
        saved = np.load(f"{path}.history.npy")[: min(int(state["step"]), steps)]
    except Exception as error:
        raise ValueError(
            f"jprop.fit: cannot resume from the checkpoint {path!r}: {_mismatch(path, like)}. "
            "Delete it to start afresh, or pass another `checkpoint` path."
        ) from error
    history = np.full(steps, np.nan)
    history[: saved.size] = saved
    return {**state, "history": history}


def _check_checkpoint(path: Any) -> str:
    """The checkpoint path as a string, checked before any training: its folder must exist."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or os.path.isdir(path):
        raise ValueError(
            f"jprop.fit: `checkpoint` must be a file path (or None for no checkpoint); got {path!r}."
        )
    if not os.path.isdir(folder):
        raise ValueError(
            f"jprop.fit: the checkpoint {path!r} cannot be written: its folder {folder!r} does not "
            "exist (or is not a folder). Create it first, or pass another path."
        )
    try:  # written as every save writes: a temporary file in the folder, then removed
        descriptor, probe = tempfile.mkstemp(prefix=".jprop-probe.", suffix=".tmp", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(
            f"jprop.fit: the checkpoint {path!r} cannot be written: creating a file in its folder "
            f"{folder!r} fails ({error.strerror or error}). Pass a path in a writable folder."
        ) from None
    # Temporary files a killed run left mid-write (each save writes its own, then renames it).
    for name in (os.path.basename(path), os.path.basename(path) + ".history.npy"):
        for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp")):
            os.unlink(stale)
    return path


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
    - `progress`: a tqdm bar with the current value (if tqdm is installed and stderr is a
      terminal).
    - `checkpoint`: a file path in an existing folder (checked before training). If it exists,
      training resumes from it; it is rewritten every `checkpoint_every` steps with the last
      state whose value was finite (resuming redoes that step) and at the end. A checkpoint
      beyond `steps` is refused rather than returned as finished. An optax run resumes exactly;
      a scipy run restarts its optimiser at the checkpoint's parameters (scipy keeps its memory
      to itself), so it converges to the same kind of point by a path of its own. A save that
      fails mid-run is a warning: the result is still returned.

    **Returns:** a `FitResult(params, history, success, message)`. A non-finite value stops
    training, and so does a non-finite gradient: `params` are then the last ones with a finite
    value (never a non-finite update), `success` is False and `message` says where. A scipy run
    succeeds when scipy converges or reaches `steps`; scipy's other stops (e.g. "precision
    loss" in a line search) give `success=False` with scipy's message.

    Examples:
        >>> import jax, jax.numpy as jnp, optax, jprop
        >>> loss = lambda p, x: jnp.sum((p - x) ** 2)
        >>> result = jprop.fit(loss, jnp.zeros(3), jnp.ones(3), optimizer=optax.sgd(0.25),
        ...                    steps=20, progress=False)
        >>> bool(jnp.allclose(result.params, 1.0)), result.success
        (True, True)
    """
    steps = check_size(steps, "steps", "jprop.fit")
    progress = switch(progress, "progress", "jprop.fit")
    checkpoint_every = check_size(checkpoint_every, "checkpoint_every", "jprop.fit")
    if not callable(objective):
        raise TypeError(
            "jprop.fit: `objective` must be a scalar loss (params, *data) -> value, e.g. a jprop "
            f"objective or a sum of losses; got {type_name(objective)}."
        )
    _check_data(data)
    stateful = (
        " A loss that carries a state from step to step, such as jprop.SpectralNorm's "
        "(value, state), is trained in a loop of your own: jax.value_and_grad(loss, "
        "has_aux=True) and an optax update, passing the new state to the next step."
    )
    try:
        out = jax.eval_shape(objective, params, *data)
    except TypeError as error:
        if isinstance(objective, SpectralNorm):
            raise TypeError(f"jprop.fit: {error}.{stateful}") from None
        raise
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        pair = (
            isinstance(out, tuple)
            and len(out) == 2
            and jax.tree.structure(out[1]) == jax.tree.structure(params)
        )
        hint = (
            " A function returning (value, grads) pairs is the old form: pass the loss itself, "
            "and fit differentiates it."
            if pair
            else stateful
            if isinstance(out, tuple)
            else ""
        )
        raise TypeError(
            "jprop.fit: `objective(params, *data)` must return a scalar loss; it returned "
            f"{shape}.{hint}"
        )
    objective = jax.value_and_grad(objective)
    checkpoint = None if checkpoint is None else _check_checkpoint(checkpoint)
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
            f"or 'cg' / 'lbfgs'; got {type_name(optimizer)}."
        )
    return _fit_optax(
        objective, params, data, optimizer, steps, progress, checkpoint, checkpoint_every
    )


def _check_data(data: tuple) -> None:
    """Each of fit's data arguments is arrays (or numbers): an optimizer or a method name passed
    after them by position would otherwise reach JAX as data."""
    for index, item in enumerate(data):
        if all_arrays(item):
            continue
        what = (
            "an optax GradientTransformation"
            if isinstance(item, optax.GradientTransformation)
            else repr(item)
            if isinstance(item, str)
            else type_name(item)
        )
        raise TypeError(
            f"jprop.fit: data argument {index + 1} (after params) is {what}; `objective(params, "
            "*data)` takes arrays, or pytrees of them, after params. The optimizer goes by name: "
            "jprop.fit(loss, params, x, y, optimizer=optax.adam(1e-3), steps=1000)."
        )


def _stopped(step: int, value: float | str) -> str:
    what = value if isinstance(value, str) else f"the objective became {value}"
    return (
        f"stopped: {what} at step {step}; returning the parameters of the last finite step. "
        "Lower the learning rate, or check the data for non-finite values."
    )


def _fit_optax(objective, params, data, optimizer, steps, progress, checkpoint, every):
    @jax.jit
    def step_fn(params, opt_state, *data):
        value, grads = objective(params, *data)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        finite = jnp.asarray(True)
        for leaf in jax.tree.leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        return optax.apply_updates(params, updates), opt_state, value, finite

    state = {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": jnp.asarray(0),
        "history": np.full(steps, np.nan),
    }
    if checkpoint and os.path.exists(checkpoint):
        state = _load(checkpoint, state)
    start = _resumed_step(state, steps, checkpoint)
    params, opt_state, history = state["params"], state["opt_state"], np.array(state["history"])
    bar = _progress(steps, start, progress, "fit")
    success, message = True, f"finished {steps} steps"
    # `good` is the last state whose value was seen to be finite: what a stop returns, and what a
    # checkpoint holds (resuming redoes its step), so a non-finite update is never kept.
    good = {"params": params, "opt_state": opt_state, "step": jnp.asarray(start)}
    for step in range(start, steps):
        new_params, new_opt_state, value, finite = step_fn(params, opt_state, *data)
        value = float(value)  # the value at `params`, before this step's update
        if not np.isfinite(value):
            success, message = False, _stopped(step, value)
            break
        good = {"params": params, "opt_state": opt_state, "step": jnp.asarray(step)}
        if not finite:
            history[step] = value
            success, message = False, _stopped(step, "the gradient became non-finite")
            break
        params, opt_state, history[step] = new_params, new_opt_state, value
        if bar is not None:
            bar.set_postfix(value=f"{value:.4g}", refresh=False)
            bar.update()
        if checkpoint and (step + 1) % every == 0 and step + 1 < steps:
            _save_or_warn(checkpoint, {**good, "history": history})
    if success:
        good = {"params": params, "opt_state": opt_state, "step": jnp.asarray(steps)}
    if checkpoint:
        _save_or_warn(checkpoint, {**good, "history": history})
    if bar is not None:
        bar.close()
    if not success:
        warnings.warn(f"jprop.fit: {message}", RuntimeWarning, stacklevel=3)
    return FitResult(good["params"], history[~np.isnan(history)], success, message)


def _resumed_step(state: dict, steps: int, checkpoint: str | None) -> int:
    start = int(state["step"])
    if start > steps:
        raise ValueError(
            f"jprop.fit: the checkpoint {checkpoint!r} is at step {start}, beyond steps={steps}; "
            f"pass steps >= {start} to continue it, or another checkpoint path to start afresh."
        )
    return start


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
    start, history = _resumed_step(state, steps, checkpoint), np.array(state["history"])
    dtype = flat.dtype

    @jax.jit
    def value_and_flat_grad(w, *data):
        value, grads = objective(unravel(w), *data)
        return value, ravel_pytree(grads)[0]

    last = {"w": np.asarray(flat, np.float64)}

    def fun(w):
        value, grad = value_and_flat_grad(jnp.asarray(w, dtype), *data)
        value, grad = float(value), np.asarray(grad, np.float64)
        if not np.isfinite(value):
            raise _NonFinite(value)
        if not np.all(np.isfinite(grad)):  # stop before scipy's line search meets it
            raise _NonFinite("the gradient became non-finite")
        return value, grad

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
            _save_or_warn(checkpoint, {**state, "history": history})

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
        # scipy's status: 0 converged, 1 the iteration limit (the steps asked for, as optax's
        # runs end); anything else (a line search lost to rounding, "precision loss") is not a
        # success, though the parameters returned are the best scipy found
        success = result.status in (0, 1)
        if not (np.isfinite(result.fun) and np.all(np.isfinite(w))) or "nan" in message.lower():
            # scipy met a non-finite value without raising (CG's "NaN result encountered")
            w, success = last["w"], False
            message = f"{message}; returning the parameters of the last finite iteration"
            warnings.warn(f"jprop.fit: {message}", RuntimeWarning, stacklevel=3)
    except _NonFinite as bad:
        w, success = last["w"], False
        message = _stopped(counter["step"], bad.args[0])
        warnings.warn(f"jprop.fit: {message}", RuntimeWarning, stacklevel=3)
    if bar is not None:
        bar.close()
    params = unravel(jnp.asarray(w, dtype))
    if checkpoint:
        _save_or_warn(
            checkpoint,
            {
                "params": params,
                "step": jnp.asarray(counter["step"]),
                "history": history,
            },
        )
    return FitResult(params, history[~np.isnan(history)], success, message)
