"""Which road computes a quantity, decided in one place, and transforms built once per recipe.

Every public transform asks `choose(f, quantity, method)` which road runs: the closed-form passes
for a model whose structure jprop knows, or the generic autodiff road. `jprop.road(f, quantity)`
tells a user the same answer with its reason. The weight-curvature transforms key their choice on
their loss through the same function.

`cached` memoises transform construction: building `jprop.hessian(net)` twice with the same
options returns the same function, so the jitted program inside it is traced and compiled once
however often a user writes the transform inline.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from ._mlp import MLP
from ._validation import check_method

METHODS = ("auto", "closed", "autodiff")


class Road(NamedTuple):
    """The road a transform takes: `"closed"` or `"autodiff"`, and why.

    >>> import jprop
    >>> jprop.road(jprop.MLP((2, 64, 1)), "laplacian").road
    'closed'
    """

    road: str
    reason: str


def _is_closed_loss(f: Any) -> bool:
    # Weight-space curvature: a SquaredError / CrossEntropy of an MLP has closed passes. Imported
    # lazily: the losses module builds on this one.
    from ._losses import CrossEntropy, SquaredError

    return isinstance(f, (SquaredError, CrossEntropy)) and isinstance(f.f, MLP)


# quantity -> rule for `auto` on a model with closed passes: (takes the closed road?, reason).
def _always(reason: str) -> Callable[[Any], tuple[bool, str]]:
    return lambda f: (True, reason)


def _hessian_rule(f: MLP) -> tuple[bool, str]:
    # Direct races of the closed sum over units against vmap(jax.hessian) (the closed form's
    # speed-up; session 9's CPU unless marked). One output: 0.66-0.90× on 2-32-32-1, 3-32-32-1,
    # 2-16-16-1, 8-16-16-1, 8-32³-1, 2-64³-1, 3-64³-1, 2-128-128-1 and 32-128³-1, level (0.97-1.03×)
    # on 3-128³-1, 16-128³-1 and 64-256-256-1. Several outputs, first width below 64: 0.71-0.95×
    # (4-32-32-2, 8-32³-4, 16-32³-4, 4-48-48-2, 12-48-48-4). Width 64: 0.73-1.55× (4-64-64-2,
    # 8-64-64-4, 16-64³-4, 32-64³-4); 96 and up: 1.17-4.0× for n ≤ n₁/2. More inputs than half
    # the first width (earlier CPU): n/n₁ = 2: 0.76×; 1: 0.51-0.74×; 0.75: 0.72-0.89×.
    if f.depth == 1:
        return True, "no hidden layer: the output layer's own curvature"
    n, width, m = f.sizes[0], f.sizes[1], f.n_outputs
    if m == 1:
        return False, (
            "one output: jax.hessian pushes the n input tangents through a single reverse pass "
            "as flat matrix products, which the closed form's per-example Gram products did not "
            "beat (measured 0.66-1.03× there); method='closed' forces the sum over units"
        )
    if width < 64:
        return False, (
            f"a first hidden width of {width} (under 64): the per-example Gram products are too "
            "small to pay (measured 0.71-0.95× jax.hessian); method='closed' forces them"
        )
    if 2 * n > width:
        return False, (
            f"n = {n} inputs is more than half the first hidden width {width}: "
            "per-example n × n Gram matrices then cost more than jax.hessian's "
            "forward-over-reverse (measured 0.5-0.9× there)"
        )
    return True, (
        "the sum over hidden units (measured 1.2-4.0× jax.hessian for n ≤ n₁/2 from a first "
        "width of 96, 0.73-1.55× at 64)"
    )


def _jacobian_rule(f: MLP) -> tuple[bool, str]:
    # benchmarks/pinn_step.py, jax.grad of mean(J²): the columns pass's tangent rule (n ≤ m)
    # measured 1.2-1.3× jacfwd + jax.grad; the rows pass's (m < n) 0.85-1.03× jacrev + jax.grad.
    if f.n_inputs <= f.n_outputs and f.output != "softmax":
        return True, (
            "the columns pass with its hand-written tangent (trained through: measured 1.2-1.3× "
            "jax.grad of jacfwd)"
        )
    return False, (
        "JAX's jacrev compiles to the same products as the closed rows pass and its derivative "
        "measured as fast (0.85-1.03× under jax.grad); method='closed' forces the rows pass"
    )


_CLOSED_RULES: dict[str, Callable[[Any], tuple[bool, str]]] = {
    "jacobian": _jacobian_rule,
    "hessian": _hessian_rule,
    "laplacian": _always("the forward Laplacian with a hand-written tangent pass"),
    "hessian_diagonal": _always(
        "the sum over hidden units, no n × n matrix formed; trained through the forward "
        "Laplacian's tangent pass kept per input for up to 4 chosen inputs, through the sum's "
        "own tangent pass above"
    ),
    "hessian_vector_product": _always("the R-backward pass's by-product"),
    "R": _always("the R-forward pass"),
    "bilinear": _always("J-prop's four passes"),
    "jprop_u": _always("J-prop's four passes"),
    "jprop_v": lambda f: (
        False,
        "jax.grad of the jvp composition compiles to the same products as the passes and "
        "measured as fast (0.91-1.10×); method='closed' forces the passes",
    ),
    "double_backprop": _always("J-prop's passes with the output injection"),
    "weight_curvature": _always("Pearlmutter's weight-space R passes"),
}
QUANTITIES = tuple(_CLOSED_RULES)


def choose(f: Any, quantity: str, method: str = "auto", where: str | None = None) -> Road:
    """The road for `quantity` of `f` under `method`, or a clear error (internal form of `road`)."""
    where = where or f"jprop.{quantity}"
    if quantity not in _CLOSED_RULES:  # a programming error inside jprop, or a user typo in road()
        raise ValueError(
            f"jprop.road: unknown quantity {quantity!r}; known: "
            + ", ".join(map(repr, QUANTITIES))
            + "."
        )
    if not callable(f):
        raise TypeError(f"{where}: `f` must be a callable f(params, x); got {type(f).__name__}.")
    check_method(method, METHODS, where)
    closed_ok = _is_closed_loss(f) if quantity == "weight_curvature" else isinstance(f, MLP)
    if method == "closed":
        if not closed_ok:
            needs = (
                "jprop.SquaredError or jprop.CrossEntropy of a jprop.MLP"
                if quantity == "weight_curvature"
                else "a jprop.MLP, whose structure jprop knows"
            )
            raise ValueError(
                f"{where}: method='closed' needs {needs}; got {type(f).__name__}. Use "
                "method='autodiff' (or 'auto') for other models."
            )
        return Road("closed", "forced by method='closed'")
    if method == "autodiff":
        return Road("autodiff", "forced by method='autodiff'")
    if not closed_ok:
        return Road("autodiff", f"jprop knows no closed form for a {type(f).__name__}")
    takes_closed, reason = _CLOSED_RULES[quantity](f)
    return Road("closed" if takes_closed else "autodiff", reason)


def road(f: Any, quantity: str, *, method: str = "auto") -> Road:
    """Which road `jprop.<quantity>(f, method=method)` takes, and why.

    **Arguments:**
    - `f`: a model `f(params, x)` (a `jprop.MLP` or any callable), or for `"weight_curvature"` a
      loss (`jprop.SquaredError`, `jprop.CrossEntropy` or any `E(params, *data)`).
    - `quantity`: one of `"jacobian"`, `"hessian"`, `"laplacian"`, `"hessian_diagonal"`,
      `"hessian_vector_product"`, `"R"`, `"bilinear"`, `"jprop_u"`, `"jprop_v"`,
      `"double_backprop"`, `"weight_curvature"`.
    - `method`: `"auto"` (default), `"closed"` or `"autodiff"`.

    **Returns:** a `Road(road, reason)` with `road` either `"closed"` or `"autodiff"`.

    >>> import jprop
    >>> jprop.road(jprop.MLP((2, 64, 1)), "laplacian").road
    'closed'
    >>> jprop.road(jprop.MLP((64, 32, 1)), "hessian").road
    'autodiff'
    """
    return choose(f, quantity, method, where="jprop.road")


_MEMOS: list[Any] = []


def clear_caches() -> None:
    """Forget every built transform (tests that swap an internal rule use this)."""
    for memo in _MEMOS:
        memo.cache_clear()


def cached(build: Callable[..., Any]) -> Callable[..., Any]:
    """Memoise a transform builder on its (hashable) arguments.

    A model that cannot be hashed (a plain equinox module holding arrays) is built afresh each
    time, which is correct but recompiles; `jprop.MLP`, functions and `jprop.equinox_function`'s
    result are hashable.
    """
    memo = functools.lru_cache(maxsize=512)(build)
    _MEMOS.append(memo)

    @functools.wraps(build)
    def builder(*args: Any, **kwargs: Any) -> Any:
        try:
            hash((args, tuple(sorted(kwargs.items()))))
        except TypeError:
            return build(*args, **kwargs)
        return memo(*args, **kwargs)

    return builder


# Per-quantity trace counters: incremented when a transform's jitted program is traced (which is
# when it compiles), read by the tests to prove that building and calling again reuses it.
TRACES: dict[str, int] = {}


def count_trace(quantity: str) -> None:
    TRACES[quantity] = TRACES.get(quantity, 0) + 1


def all_arrays(*trees: Any) -> bool:
    """True when every leaf is already an array or a Python/NumPy number, so `jax.jit` takes the
    arguments as they are and validation can run at trace time; otherwise the caller validates
    eagerly first, which turns a string or an object into jprop's own error message."""
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if not isinstance(leaf, (jax.Array, int, float)) and not hasattr(leaf, "__array__"):
                return False
    return True


def run_compiled(compute: Callable[..., Any], where: str, *args: Any) -> Any:
    """Call a transform's compiled program; if the device runs out of memory, say how to bound it
    (`batch_size`) instead of XLA's bare RESOURCE_EXHAUSTED."""
    try:
        return compute(*args)
    except jax.errors.JaxRuntimeError as error:
        text = str(error)
        if "RESOURCE_EXHAUSTED" not in text and "out of memory" not in text.lower():
            raise
        shapes = ", ".join(str(getattr(a, "shape", "?")) for a in args[1:2])
        raise MemoryError(
            f"{where}: the device ran out of memory (x of shape {shapes}). Pass batch_size=k to "
            "the transform to process the batch k examples at a time, with memory bounded by one "
            "chunk, or shard the batch over devices (jprop.shard_batch)."
        ) from error
