"""Trace-time checks shared by every public entry point.

Everything here looks only at shapes, dtypes and pytree structure, which are static under `jit`, so
the checks fire when a function is traced and cost nothing per call. Each error says what was
expected, what came, and how to fix it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._program import type_name


def float_dtype(dtype: Any, where: str) -> np.dtype:
    """A floating dtype for new parameters: None gives JAX's default float type (float64 when
    `jax_enable_x64` is on, float32 otherwise); a name, a NumPy or JAX type are read as NumPy
    reads them; anything else, or an integer or complex dtype, is refused by name."""
    if dtype is None:
        return jnp.zeros(0).dtype
    try:
        read = jnp.dtype(dtype)
    except TypeError:
        read = None
    if read is None or not jnp.issubdtype(read, jnp.floating):
        raise TypeError(
            f"{where}: `dtype` must be a floating dtype such as jnp.float32 or jnp.float64; got "
            f"{f'{dtype!r}, which is no dtype' if read is None else read.name}."
        )
    return read


def not_params(value: Any) -> str:
    """What came where a model's params were expected, for messages (`type_name`), with the hint
    that the arguments come as (params, x) when it is an array, as x would be."""
    hint = ". The arguments are (params, x), params first"
    return type_name(value) + (hint if isinstance(value, (jax.Array, np.ndarray)) else "")


def as_float_array(value: Any, name: str, where: str) -> jax.Array:
    """`value` as a JAX array with a floating dtype, or a `TypeError` that says so."""
    if value is None:
        raise TypeError(f"{where}: `{name}` is None; pass an array of floats.")
    if isinstance(value, (list, tuple)):  # nested Python numbers, as jnp.asarray takes them
        try:
            value = jnp.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{where}: `{name}` must be an array of floats; got a {type(value).__name__} "
                f"that is not one ({error})."
            ) from None
    try:
        dtype = jnp.result_type(value)
    except TypeError as error:
        raise TypeError(
            f"{where}: `{name}` must be an array of floats; got {type(value).__name__} ({error})."
        ) from None
    if not jnp.issubdtype(dtype, jnp.floating):
        code = re.sub(r" \(\w+\)", "", name)  # "params[0] (Dense)['W']" as code: params[0]['W']
        raise TypeError(
            f"{where}: `{name}` must have a floating dtype (float32 or float64); got {dtype}. "
            f"Convert it first, e.g. `{code}.astype(jnp.float32)`."
        )
    return jnp.asarray(value)


def as_float_scalar(value: Any, name: str, where: str) -> jax.Array:
    """A weight: a Python number (an int such as 0 included) or a floating 0-d array."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return jnp.asarray(float(value))
    value = as_float_array(value, name, where)
    if value.ndim:
        raise ValueError(
            f"{where}: `{name}` must be a scalar (a number or a 0-d array); got shape "
            f"{value.shape}."
        )
    return value


def check_input(x: Any, where: str, n: int | None = None) -> jax.Array:
    """Check the network input `x`: floating, at least 1-D, last axis `n` when `n` is known."""
    x = as_float_array(x, "x", where)
    if x.ndim == 0:
        raise ValueError(
            f"{where}: `x` must have shape (n,) or (..., n); got a scalar. "
            "For a one-input network pass `x` of shape (1,)."
        )
    if n is not None and x.shape[-1] != n:
        raise ValueError(
            f"{where}: the last axis of `x` must be the network's input size n = {n}; "
            f"got x of shape {x.shape} (last axis {x.shape[-1]})."
        )
    return x


def check_like(
    value: Any, name: str, shape: tuple[int, ...], where: str, hint: str = ""
) -> jax.Array:
    """Check that `value` is a floating array of exactly `shape`."""
    value = as_float_array(value, name, where)
    if value.shape != tuple(shape):
        raise ValueError(
            f"{where}: `{name}` must have shape {tuple(shape)}; got {value.shape}.{hint}"
        )
    return value


def check_extra(
    value: Any,
    name: str,
    shape: tuple[int, ...],
    given: Any,
    dtype: Any,
    where: str,
    hint: str = "",
) -> jax.Array:
    """An extra argument (a weighting, direction, target or tangent): a floating array of exactly
    `shape`, in the dtype `given` for x (`check_same_dtype`), returned cast to the computation
    dtype `dtype`. The one check every transform and objective applies to its extra arguments."""
    value = check_like(value, name, shape, where, hint)
    check_same_dtype(value, name, given, where)
    return value.astype(dtype)


def as_key(key: Any, where: str) -> jax.Array:
    """A typed PRNG key array from a `jax.random.key` or raw uint32 key data (`jax.random.PRNGKey`)
    of the PRNG implementation JAX is configured with (its key data's last axis: 2 words for the
    default threefry, 4 for "rbg"); any leading shape."""
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{where}: `key` must be a JAX PRNG key, e.g. jax.random.key(0) (split it for new "
            f"draws); got {type(key).__name__}."
        )
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    words = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
    if key.dtype != jnp.uint32 or key.shape[key.ndim - len(words) :] != words:
        raise TypeError(
            f"{where}: `key` must be a JAX PRNG key, e.g. jax.random.key(0), or raw key data "
            f"(jax.random.PRNGKey) of dtype uint32 ending in shape {words}; got an array of "
            f"dtype {key.dtype} and shape {key.shape}."
        )
    return jax.random.wrap_key_data(key)


def positive_number(
    value: Any, name: str, where: str, meaning: str = "", example: str = "1.0"
) -> float:
    """A positive real number (bools, strings and NaN refused), as a Python float."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if not number or not value > 0:
        described = f"`{name}`, {meaning}," if meaning else f"`{name}`"
        raise ValueError(
            f"{where}: {described} must be a positive number such as {example}; got {value!r}."
        )
    return float(value)


def switch(value: Any, name: str, where: str) -> bool:
    """An on/off option as a bool; anything else (a string such as "no", which Python counts as
    true) refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: `{name}` must be True or False; got {value!r}.")
    return bool(value)


def check_method(method: str, allowed: tuple[str, ...], where: str, what: str = "method") -> str:
    if not isinstance(method, str) or method not in allowed:
        raise ValueError(
            f"{where}: unknown {what} {method!r}; choose one of "
            + ", ".join(repr(a) for a in allowed)
            + "."
        )
    return method


def check_size(value: Any, name: str, where: str, minimum: int = 1) -> int:
    """A positive Python integer (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{where}: `{name}` must be an int; got {value!r} ({type(value).__name__})."
        )
    if value < minimum:
        raise ValueError(f"{where}: `{name}` must be at least {minimum}; got {value}.")
    return int(value)


def optional_size(value: Any, name: str, where: str) -> int | None:
    """None, or a positive Python integer as for `check_size`."""
    return None if value is None else check_size(value, name, where)


def single_array_output(out: Any, where: str) -> jax.ShapeDtypeStruct:
    """The abstract output of `f` must be one floating array (not a tuple or dict)."""
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise TypeError(
            f"{where}: `f(params, x)` must return a single array of shape (m,) for x of shape (n,); "
            f"it returned a {type(out).__name__}. For pytree outputs use jprop.R."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{where}: `f(params, x)` must return floats; it returned {out.dtype}.")
    return out


def check_same_dtype(value: jax.Array, name: str, given: Any, where: str) -> None:
    """An extra argument must have the dtype `given` for x (strict about it: a float64 target
    beside a float32 x is a mistake, not a request for float64)."""
    if value.dtype != given:
        raise TypeError(
            f"{where}: `{name}` must have the dtype of `x` ({given}); got {value.dtype}. "
            f"Cast it, e.g. `{name}.astype(x.dtype)`."
        )


def _is_floating(leaf: Any) -> bool:
    """A floating array or number; anything else a model keeps in its params (ints, strings,
    objects) takes no part in the dtype."""
    try:
        return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.floating))
    except TypeError:
        return False


def computation_dtype(params: Any, x: jax.Array) -> Any:
    """The one dtype jprop computes and returns input-space results in: JAX's standard promotion
    of x with the floating leaves of params (weak Python floats defer to the arrays), the dtype
    `f(params, x)` itself has. bfloat16 x with float32 params computes in float32 on every road."""
    floats = [leaf for leaf in jax.tree.leaves(params) if _is_floating(leaf)]
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(x, *floats)


def in_dtype(tree: Any, dtype: Any) -> Any:
    """`tree` with its floating leaves in `dtype`, the computation dtype: the closed road computes
    every product at that precision (float32 params with float64 x give float64 accuracy, as
    autodiff of `f` does), and gradients flow back through the cast to the params' own dtypes."""
    return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype) if _is_floating(a) else a, tree)


def prepare_call(f: Any, params: Any, x: Any, where: str) -> tuple[jax.Array, Any, Any]:
    """Validate `x` (and params for a model that can check them); return `x` in the computation
    dtype (`computation_dtype`), the abstract per-example output of `f`, found by `jax.eval_shape`
    (at trace time: no work per call), and the dtype x was given in (extra arguments must have
    it)."""
    check_params = getattr(f, "check_params", None)
    n = getattr(f, "n_inputs", None)
    if callable(check_params):
        check_params(params, where)
    x = check_input(x, where, n if isinstance(n, int) else None)
    given = x.dtype
    x = x.astype(computation_dtype(params, x))
    example = jax.ShapeDtypeStruct(x.shape[-1:], x.dtype)
    out = single_array_output(jax.eval_shape(lambda p, e: f(p, e), params, example), where)
    return x, out, given


@dataclasses.dataclass(frozen=True)
class VectorOutput:
    """A model whose per-example output is a scalar, seen as one with a single output (m = 1).

    Objectives are written for outputs of shape (m,); a scalar `f` runs through them as this
    wrapper, with the user's output-space arguments given the axis the scalar lacks. Attributes
    (a model's own parameter checks) are those of the wrapped model."""

    f: Any

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return jnp.atleast_1d(self.f(params, x))

    def __getattr__(self, name: str) -> Any:
        if name == "f":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.f, name)


def vector_output(f: Any) -> Any:
    """`f` itself when it has a vector output by construction (a `jprop.MLP`, or already wrapped);
    otherwise `VectorOutput(f)`, which leaves vector outputs as they are and gives a scalar one
    the axis of size 1 (whether it is scalar is known only when traced)."""
    if isinstance(f, VectorOutput) or hasattr(f, "n_outputs"):
        return f
    return VectorOutput(f)


def per_example_outputs(f: Any, params: Any, x: jax.Array) -> jax.Array:
    """f over a batch x (B, n) as (B, m): one call per example (the contract `f(params, x)` with x
    of shape (n,)), a scalar output counted as m = 1. A `jprop.MLP` takes the batch whole."""
    f = vector_output(f)
    if hasattr(f, "n_outputs"):
        return f(params, x)
    return jax.vmap(lambda xi: f(params, xi))(x)


def check_not_empty(lead: tuple[int, ...], where: str) -> None:
    """A batch-mean loss needs at least one example: the mean of none is 0/0. Refused when traced,
    the same for every objective."""
    if lead and min(lead) == 0:
        raise ValueError(
            f"{where}: the batch is empty (x's batch axes {lead}); a batch mean needs at least one "
            "example."
        )


def check_batch_objective(
    f: Any, params: Any, x: Any, where: str, **arrays: tuple[Any, tuple]
) -> tuple[jax.Array, int, dict[str, jax.Array]]:
    """Validate x (B, n) and named arrays for the composite objectives; return x, m and the arrays.

    Each array is given as (value, shape), the shape written with the symbols "B", "n", "m" and
    ints, e.g. ("B", "P", "n"), where "P" (a count of tangents or probes) takes the value's own size.
    An `f` with a scalar output per example has m = 1: its arrays are given without the "m" axis
    and returned with it, ready for objectives built on `vector_output(f)`.
    """
    x, out, given = prepare_call(f, params, x, where)
    if x.ndim != 2 or len(out.shape) > 1:
        raise ValueError(
            f"{where}: needs x of shape (B, n) and f(params, x) of shape (m,) or () per example; got "
            f"x of shape {x.shape} and an output of shape {out.shape}."
        )
    scalar = out.shape == ()
    check_not_empty(x.shape[:1], where)
    sizes = {"B": x.shape[0], "n": x.shape[1], "m": 1 if scalar else out.shape[0]}
    checked = {}
    for name, (value, symbols) in arrays.items():
        value = as_float_array(value, name, where)
        if scalar and "m" in symbols:  # the output axis the scalar lacks
            axis = symbols.index("m")
            symbols = symbols[:axis] + symbols[axis + 1 :]
        known = dict(sizes, P=value.shape[1] if value.ndim > 1 else -1)
        if "P" in symbols and known["P"] == 0:
            raise ValueError(
                f"{where}: `{name}` holds no vectors (shape {value.shape}, P = 0); a mean over "
                "them is undefined. Pass at least one per example."
            )
        shape = tuple(known[s] for s in symbols)
        spelled = "(" + ", ".join(symbols) + ") = " + str(shape)
        if scalar and len(symbols) < len(arrays[name][1]):
            spelled += " (f has a scalar output: no output axis)"
        checked[name] = check_extra(
            value, name, shape, given, x.dtype, where, f" Expected {spelled}."
        )
        if scalar and len(symbols) < len(arrays[name][1]):
            checked[name] = jnp.expand_dims(checked[name], axis)
    return x, sizes["m"], checked
