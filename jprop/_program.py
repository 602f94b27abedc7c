"""How a transform becomes a program: built once per recipe, traced once per argument shapes.

`cached` memoises transform construction: building `jprop.hessian(net)` twice with the same
options returns the same function, so the jitted program inside it is traced and compiled once
however often a user writes the transform inline. `program` is the one wrapper every transform,
objective and weight-curvature product is served by: one `jax.jit`, validation when traced, jprop's
own messages for arguments `jax.jit` would refuse, and an out-of-memory error that says how to
bound memory.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import weakref
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

_MEMOS: list[Any] = []


# Transforms built on a user's function are kept only as long as the function lives, so no
# closure (nor the arrays it holds, nor its compiled programs) outlives the user's last reference.
# The builder sees the function through `_Weak`, which refers to it weakly: nothing built (nor
# JAX's caches of what was traced) then keeps it alive, and its table entry goes with it. What
# `cached` returns holds the function itself, so a transform in the user's hands always works.
_BUILT_ON: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Weak:
    """A user's function seen through a weak reference: called, hashed, compared and asked for
    attributes as the function itself."""

    __slots__ = ("ref", "__weakref__")

    def __init__(self, f: Any):
        self.ref = weakref.ref(f)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ref()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ref(), name)

    def __hash__(self) -> int:
        return hash(self.ref())

    def __eq__(self, other: Any) -> bool:
        other = other.ref() if isinstance(other, _Weak) else other
        return self.ref() == other

    def __repr__(self) -> str:
        return repr(self.ref())


def _owner(args: tuple) -> Any:
    """The user's function a transform is built on, if any: a plain function (a lambda, a `def`, a
    `functools.partial`) given as it is, seen through `_Weak`, or wrapped in a jprop dataclass (a
    loss, a scalar-output adapter). None for jprop's own models, which are values hashed by their
    structure and kept in a table of the most recent."""
    for arg in args:
        while dataclasses.is_dataclass(arg) and not isinstance(arg, type) and hasattr(arg, "f"):
            arg = arg.f
        if isinstance(arg, _Weak):
            return arg.ref()
        if isinstance(arg, (types.FunctionType, functools.partial)):
            return arg
    return None


def type_name(value: Any) -> str:
    """What `value` is, for messages: the name of its type (of the user's function itself where a
    builder sees it through its `_Weak` view), or an array's shape and dtype (its type's name,
    e.g. ArrayImpl or a tracer's, would say nothing to its user)."""
    value = value.ref() if isinstance(value, _Weak) else value
    if isinstance(value, (jax.Array, np.ndarray)):
        return f"an array of shape {tuple(value.shape)} ({value.dtype})"
    return type(value).__name__


def _seen_weakly(value: Any, owner: Any) -> Any:
    """`value` with `owner` replaced by its `_Weak` view, directly or inside a jprop dataclass."""
    if value is owner:
        return _Weak(owner)
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and hasattr(value, "f"):
        inner = _seen_weakly(value.f, owner)
        return value if inner is value.f else dataclasses.replace(value, f=inner)
    return value


def clear_caches() -> None:
    """Forget every built transform (tests that swap an internal rule use this)."""
    for memo in _MEMOS:
        memo.cache_clear()
    _BUILT_ON.clear()


def cached(build: Callable[..., Any]) -> Callable[..., Any]:
    """Memoise a transform builder on its (hashable) arguments.

    Built once per model and options, a transform is traced once per argument shapes and dtypes,
    as `jax.jit` is: what a function reads from its closure or globals is fixed when it is traced.
    On a user's function the transform is kept while the function lives (`_BUILT_ON`); on jprop's
    models in a table of the 512 most recent. A model that cannot be hashed (a plain equinox
    module holding arrays) is built afresh each time, which is correct but recompiles.
    """
    memo = functools.lru_cache(maxsize=512)(build)
    _MEMOS.append(memo)

    @functools.wraps(build)
    def builder(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:
            return build(*args, **kwargs)
        owner = _owner(args)
        if owner is None:
            return memo(*args, **kwargs)
        # the table's keys and values refer to the function only weakly, or it would never go
        args = tuple(_seen_weakly(a, owner) for a in args)
        kwargs = {k: _seen_weakly(v, owner) for k, v in kwargs.items()}
        key = (build, args, tuple(sorted(kwargs.items())))
        table = _BUILT_ON.setdefault(owner, {})
        if key not in table:
            table[key] = build(*args, **kwargs)
        return _holding(table[key], owner)

    return builder


def _holding(built: Any, owner: Any) -> Any:
    """`built` for the user: the same callable, holding the function it was built on."""

    @functools.wraps(built)
    def transform(*args: Any, **kwargs: Any) -> Any:
        return built(*args, **kwargs)

    transform.model = owner
    return transform


def broadcasting(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` run (and traced) with NumPy's rank promotion allowed, whatever the user's
    `jax_numpy_rank_promotion` says: jprop's code adds a bias to a batch and scales a batch of
    tangents by a batch of slopes by broadcasting, which "raise" would refuse. Every entry point
    that traces such code wears it — a model's call, each program, `top_eigenpairs` and each
    hand-derived training rule (traced when differentiated, possibly outside any program) — so
    jprop runs under a user's "raise" or "warn" setting; a user's `f` traced inside a jprop
    program is then traced with promotion allowed too."""

    @functools.wraps(fn)
    def allowed(*args: Any, **kwargs: Any) -> Any:
        with jax.numpy_rank_promotion("allow"):
            return fn(*args, **kwargs)

    return allowed


def all_arrays(*trees: Any) -> bool:
    """True when every leaf is already an array or a Python/NumPy number, so `jax.jit` takes the
    arguments as they are and validation can run at trace time; otherwise the caller validates
    eagerly first, which turns a string or an object into jprop's own error message."""
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if not isinstance(leaf, (jax.Array, int, float)) and not hasattr(leaf, "__array__"):
                return False
    return True


def _signature(validate: Callable[..., Any], names: tuple[str, ...] | None) -> inspect.Signature:
    """The arguments a program takes: `names`, in order, or `validate`'s own signature."""
    if names is None:
        return inspect.signature(validate)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature([inspect.Parameter(name, kind) for name in names])


def _arity(signature: inspect.Signature) -> tuple[int, float, str]:
    """The fewest and most positional arguments of `signature`, and the signature as text."""
    kinds = [p.kind for p in signature.parameters.values()]
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    fewest = sum(p.default is p.empty for p in positional)
    most = float("inf") if inspect.Parameter.VAR_POSITIONAL in kinds else len(positional)
    return fewest, most, str(signature)


def _by_position(
    where: str, signature: inspect.Signature, expected: str, args: tuple, kwargs: dict
) -> tuple:
    """`args` with the arguments passed by name (`key=...`, `b=...`) put in their places, and any
    left out before them at their defaults."""
    unknown = [name for name in kwargs if name not in signature.parameters]
    try:
        if unknown:  # the wrong name is the mistake, not the argument it left out
            raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(f"{where}: {error}; the arguments are {expected}.") from None
    bound.apply_defaults()
    return bound.args


def program(
    where: str,
    compute: Callable[..., Any],
    validate: Callable[..., Any],
    names: tuple[str, ...] | None = None,
) -> Callable[..., Any]:
    """The one wrapper every transform, objective and weight-curvature product is served by.

    `compute(*args)` is the whole computation, validation included (it calls `validate` first, so
    checks run when the program is traced and an eager call costs one dispatch of the compiled
    program). The wrapper jits it once, takes the arguments by position or by the names `names`
    gives them (None: `validate`'s signature), checks their number, validates eagerly first when an
    argument is not yet an array (a string, an object: `jax.jit` would refuse it in its own words),
    and turns the device's out-of-memory error into one that says how to bound memory. Built inside
    a `cached` builder, the program is traced once per argument shapes however often the transform
    is rebuilt. `inspect.signature` of the result (and `help`) shows those arguments.
    """
    compiled = jax.jit(broadcasting(compute))
    signature = _signature(validate, names)
    fewest, most, expected = _arity(signature)

    @functools.wraps(compute)
    def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            args = _by_position(where, signature, expected, args, kwargs)
        if not fewest <= len(args) <= most:
            raise TypeError(f"{where}: expected arguments {expected}; got {len(args)}.")
        if not all_arrays(*args):
            broadcasting(validate)(*args)
        return run_compiled(compiled, where, *args)

    call.__signature__ = signature  # what `help` and editors show, not `compute`'s *others
    return call


def run_compiled(compute: Callable[..., Any], where: str, *args: Any) -> Any:
    """Call a transform's compiled program; if the device runs out of memory, say how to bound it
    (`batch_size`) instead of XLA's bare RESOURCE_EXHAUSTED."""
    try:
        return compute(*args)
    except jax.errors.JaxRuntimeError as error:
        text = str(error)
        if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
            raise
        shapes = ", ".join(str(a.shape) for a in args[1:] if hasattr(a, "shape"))
        raise MemoryError(
            f"{where}: the device ran out of memory (arrays after params of shapes {shapes}). "
            "Pass batch_size=k to "
            "the transform to process the batch k examples at a time, with memory bounded by one "
            "chunk, or shard the batch over devices (jprop.shard_batch)."
        ) from error
