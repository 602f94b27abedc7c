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

import dataclasses
import functools
import types
import weakref
from collections.abc import Callable
from typing import Any

import jax

from ._validation import check_method
from .layers import Network
from .models._mlp import MLP

METHODS = ("auto", "closed", "autodiff")


@dataclasses.dataclass(frozen=True)
class Road:
    """The road a transform takes: `"closed"` or `"autodiff"`, and why.

    Examples:
        >>> import jprop
        >>> jprop.road(jprop.MLP((2, 64, 1)), "laplacian").road
        'closed'
    """

    road: str
    reason: str


def _is_closed_loss(f: Any) -> bool:
    # Weight-space curvature: a SquaredError / CrossEntropy of an MLP has closed passes. Imported
    # lazily: the losses module builds on this one.
    from .curvature._losses import CrossEntropy, SquaredError

    return isinstance(f, (SquaredError, CrossEntropy)) and isinstance(f.f, MLP)


# Rules for `auto` on a model with closed passes, (takes the closed road?, reason), gathered per
# quantity in `REGISTRY` below. Reasons state the rule and why in words; the races behind each choice are in
# `benchmarks/results/` (written by the scripts in `benchmarks/`).
def _always(reason: str) -> Callable[[MLP], tuple[bool, str]]:
    return lambda f: (True, reason)


def _with_softmax(
    rule: Callable[[MLP], tuple[bool, str]], softmax_reason: str
) -> Callable[[MLP], tuple[bool, str]]:
    """A softmax output couples the outputs, so the elementwise tangent passes do not apply; the
    closed form still does, trained by JAX's derivative of it."""
    return lambda f: (True, softmax_reason) if f.output == "softmax" else rule(f)


def _hessian_rule(f: MLP) -> tuple[bool, str]:
    # `benchmarks/closed_forms.py` races the sum over units against vmap(jax.hessian).
    if f.depth == 1:
        return True, "no hidden layer: the output layer's own curvature"
    n, width, m = f.sizes[0], f.sizes[1], f.n_outputs
    if m == 1:
        return False, (
            "one output: jax.hessian pushes the n input tangents through a single reverse pass "
            "as flat matrix products, as fast as the sum over hidden units; method='closed' "
            "forces the sum over units"
        )
    if width < 64:
        return False, (
            f"a first hidden width of {width} (under 64): the per-example Gram products of the "
            "sum over units are too small to beat jax.hessian; method='closed' forces them"
        )
    if 2 * n > width:
        return False, (
            f"n = {n} inputs is more than half the first hidden width {width}: per-example n × n "
            "Gram matrices then cost more than jax.hessian's forward-over-reverse; "
            "method='closed' forces them"
        )
    return True, (
        "the sum over hidden units: several outputs share each layer's Gram products, "
        "and jax.grad runs its hand-written tangent pass"
    )


def _jacobian_rule(f: MLP) -> tuple[bool, str]:
    # `benchmarks/pinn_step.py` races both rules under jax.grad of mean(J²).
    if f.output == "softmax":
        return False, (
            "a softmax output: jax.jacrev computes the same products as the closed rows pass; "
            "method='closed' forces the rows pass"
        )
    if f.n_inputs <= f.n_outputs:
        return True, (
            "the columns (forwards) pass, n ≤ m: jax.grad runs its hand-written tangent pass, "
            "which does fewer products than JAX's derivative of jacfwd"
        )
    return False, (
        "m < n: JAX's jacrev compiles to the same products as the closed rows pass, and so does "
        "its derivative; method='closed' forces the rows pass"
    )


def _jprop_v_rule(f: MLP) -> tuple[bool, str]:
    return False, (
        "jax.grad of the jvp composition compiles to the same matrix products as J-prop's "
        "passes; method='closed' forces the passes"
    )


def _network_jacobian_rule(f: Network) -> tuple[bool, str]:
    if f.n_inputs <= f.n_outputs:
        return (
            True,
            "the columns pass, n ≤ m: each layer's tangent step, differentiated by jax.grad",
        )
    return False, (
        "m < n: jax.jacrev's m reverse sweeps do less than n forward tangents; method='closed' "
        "forces the columns pass"
    )


def _network_rows_rule(f: Network) -> tuple[bool, str]:
    # `benchmarks/architectures.py` races both roads of jprop_u on a Network.
    return False, (
        "Jᵀu: one reverse sweep through the layers does less than the n forward tangents of J's "
        "columns; method='closed' forces the columns, each layer's tangent step"
    )


def _softmax_trace_rule(f: MLP) -> tuple[bool, str]:
    if f.output == "softmax":
        return False, (
            "a softmax output couples the outputs: folx's forward Laplacian along the directions"
        )
    return True, (
        "the forward Laplacian started from the directions instead of the identity, trained "
        "through its hand-written tangent pass"
    )


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One quantity's record: the rule `auto` applies to a `jprop.MLP` and to a `jprop.Network`
    ((takes the closed road?, reason); None: no closed road there), and what computes it on the
    autodiff road where that is not JAX's own transforms."""

    mlp: Callable[[MLP], tuple[bool, str]]
    network: Callable[[Network], tuple[bool, str]] | None = None
    engine: str = ""


_SOFTMAX_CURVATURE = (
    "the sum over hidden units with the softmax's own term, trained by JAX's derivative of it"
)
_ONE_TANGENT = "one input tangent through each layer's own step, differentiated by jax.grad"
_FOLX = "; folx's forward Laplacian computes it"

# Every quantity jprop computes, one record each (the composites below take their primitive's).
REGISTRY: dict[str, Quantity] = {
    "jacobian": Quantity(_jacobian_rule, _network_jacobian_rule),
    "hessian": Quantity(_with_softmax(_hessian_rule, _SOFTMAX_CURVATURE)),
    "laplacian": Quantity(
        _with_softmax(
            _always("the forward Laplacian, trained through its hand-written tangent pass"),
            _SOFTMAX_CURVATURE,
        ),
        _always(
            "the forward Laplacian through each layer's own step, differentiated by jax.grad as "
            "plain matrix products and elementwise products"
        ),
        _FOLX,
    ),
    "hessian_diagonal": Quantity(
        _with_softmax(
            _always(
                "the sum over hidden units, no n × n matrix formed; trained through the forward "
                "Laplacian's tangent pass kept per input for up to 4 chosen inputs, and through "
                "the sum's own tangent pass above"
            ),
            _SOFTMAX_CURVATURE,
        ),
        _always(
            "the forward Laplacian through each layer's own step, each input's term kept apart"
        ),
    ),
    "hessian_vector_product": Quantity(
        _with_softmax(
            _always(
                "the R-backward pass's by-product, trained through its hand-written tangent pass"
            ),
            "the R-backward pass's by-product with the softmax's own term, trained by JAX's "
            "derivative of it",
        )
    ),
    "hessian_trace": Quantity(
        _softmax_trace_rule,
        _always("the forward Laplacian through each layer's own step, started from the directions"),
        "; folx's forward Laplacian of z ↦ f(x + Dᵀz) at z = 0 computes it",
    ),
    "R": Quantity(
        _always("the R-forward pass"), _always("one input tangent through each layer's own step")
    ),
    "bilinear": Quantity(_always("J-prop's four passes"), _always(_ONE_TANGENT)),
    "jprop_u": Quantity(_always("J-prop's four passes"), _network_rows_rule),
    "jprop_v": Quantity(_jprop_v_rule, _always(_ONE_TANGENT)),
    "double_backprop": Quantity(
        _always("J-prop's passes with the output injection"), _network_rows_rule
    ),
    "weight_curvature": Quantity(_always("Pearlmutter's weight-space R passes")),
}


# Objectives built from the primitives above take their primitive's road: quantity -> (the
# primitive for a given f, what the objective does with it).
def _by_fewer(f: MLP) -> str:
    return "jprop_v" if f.n_inputs <= f.n_outputs else "jprop_u"


_COMPOSITES: dict[str, tuple[Callable[[MLP], str], str]] = {
    "tangent_prop": (lambda f: "jprop_v", "E_v over each example's tangents"),
    "derivative_targets": (_by_fewer, "one J-prop objective per column (n ≤ m) or row of J"),
    "jacobian_penalty": (
        _by_fewer,
        "exact: one J-prop objective per column (n ≤ m) or row of J; with num_probes, "
        "jprop.jprop_v over the probes",
    ),
    "SpectralNorm": (lambda f: "bilinear", "the bilinear primitive at the power iteration's pair"),
    "log_abs_det_jacobian": (lambda f: "bilinear", "the Jacobian, then the bilinear primitive"),
}
QUANTITIES = tuple(REGISTRY) + tuple(_COMPOSITES)
_NETWORK_ELSEWHERE = (
    "a jprop.Network: the sum over hidden units does not extend through gates and skips, and "
    "JAX's own transforms compute this as fast as a pass written for it"
)

# What an estimator samples (`jprop.laplacian(..., estimator=...)`, `jprop.hessian_trace`).
ESTIMATORS = {
    "sparse": (
        "sparse estimator: k of the N coordinates (or of σ's N columns) sampled without "
        "replacement from the key, their second derivatives summed and scaled by N/k"
    ),
    "rademacher": (
        "dense estimator: k Rademacher probes v drawn from the key, the mean of vᵀσᵀ∇²f σv"
    ),
    "gaussian": "dense estimator: k Gaussian probes v drawn from the key, the mean of vᵀσᵀ∇²f σv",
}


def estimated(chosen: Road, estimator: str | None) -> Road:
    """`chosen` with the estimator named in its reason (None: exact)."""
    if estimator is None:
        return chosen
    return Road(chosen.road, f"{ESTIMATORS[estimator]}; {chosen.reason}")


def choose(f: Any, quantity: str, method: str = "auto", where: str | None = None) -> Road:
    """The road for `quantity` of `f` under `method`, or a clear error (internal form of `road`)."""
    where = where or f"jprop.{quantity}"
    if quantity not in QUANTITIES:  # a programming error inside jprop, or a user typo in road()
        raise ValueError(
            f"jprop.road: unknown quantity {quantity!r}; known: "
            + ", ".join(map(repr, QUANTITIES))
            + "."
        )
    if not callable(f):
        raise TypeError(f"{where}: `f` must be a callable f(params, x); got {type(f).__name__}.")
    check_method(method, METHODS, where)
    if quantity in _COMPOSITES:
        primitive, what = _COMPOSITES[quantity]
        # the primitive's own check: an error for method="closed"
        if not isinstance(f, (MLP, Network)):
            inner = choose(f, "bilinear", method, where)
            return Road(inner.road, f"{what}: {inner.reason}")
        name = primitive(f)
        inner = choose(f, name, method, where)
        return Road(inner.road, f"{what}, through jprop.{name}: {inner.reason}")
    network = isinstance(f, Network)
    record = REGISTRY[quantity]
    if quantity == "weight_curvature":
        closed_ok = _is_closed_loss(f)
    else:
        closed_ok = isinstance(f, MLP) or (network and record.network is not None)
    if method == "closed":
        if not closed_ok:
            needs = (
                "jprop.SquaredError or jprop.CrossEntropy of a jprop.MLP"
                if quantity == "weight_curvature"
                else "a jprop.MLP, whose structure jprop knows"
            )
            if network:
                covered = [name for name, r in REGISTRY.items() if r.network is not None]
                needs += "; for a jprop.Network the closed road covers " + ", ".join(covered)
            raise ValueError(
                f"{where}: method='closed' needs {needs}; got {type(f).__name__}. Use "
                "method='autodiff' (or 'auto') for other models."
            )
        return Road("closed", "forced by method='closed'")
    engine = record.engine
    if method == "autodiff":
        return Road("autodiff", "forced by method='autodiff'" + engine)
    if not closed_ok:
        if network:
            return Road("autodiff", _NETWORK_ELSEWHERE + engine)
        return Road("autodiff", f"jprop knows no closed form for a {type(f).__name__}" + engine)
    if network:
        takes_closed, reason = record.network(f)
        return Road("closed" if takes_closed else "autodiff", reason)
    takes_closed, reason = record.mlp(f.f if quantity == "weight_curvature" else f)
    return Road("closed" if takes_closed else "autodiff", reason)


def road(
    f: Any,
    quantity: str,
    *,
    method: str = "auto",
    estimator: str | None = None,
    tangent_chunk: int | None = None,
) -> Road:
    """Which road `jprop.<quantity>(f, method=method)` takes, and why.

    **Arguments:**

    - `f`: a model `f(params, x)` (a `jprop.MLP`, a `jprop.Network` or any callable), or for
      `"weight_curvature"` a loss (`jprop.SquaredError`, `jprop.CrossEntropy` or any
      `E(params, *data)`).
    - `quantity`: one of `"jacobian"`, `"hessian"`, `"laplacian"`, `"hessian_diagonal"`,
      `"hessian_vector_product"`, `"R"`, `"bilinear"`, `"jprop_u"`, `"jprop_v"`,
      `"double_backprop"`, `"weight_curvature"`, `"hessian_trace"`.
    - `method`: `"auto"` (default), `"closed"` or `"autodiff"`.
    - `estimator`: for `"laplacian"` and `"hessian_trace"`, the randomized estimator
      (`"sparse"`, `"rademacher"` or `"gaussian"`), and for `"hessian_diagonal"` a dense one,
      named in the reason; None (default): exact.
    - `tangent_chunk`: for `"laplacian"`, `"hessian_diagonal"` and `"hessian_trace"`, the road
      of the transform built with that option (it runs the forward Laplacian along directions).

    **Returns:** a `Road(road, reason)` with `road` either `"closed"` or `"autodiff"`.

    On either road the transform is built once per model and options and traced once per
    argument shapes, as `jax.jit` is: a value a function reads from its closure or globals is
    fixed at that trace, so what changes between calls belongs in `params` or the data.

    Examples:
        >>> import jprop
        >>> jprop.road(jprop.MLP((2, 64, 1)), "laplacian").road
        'closed'
        >>> jprop.road(jprop.MLP((64, 32, 1)), "hessian").road
        'autodiff'
    """
    chosen = choose(f, quantity, method, where="jprop.road")
    along = {"laplacian", "hessian_trace", "hessian_diagonal"}
    for name, value in (("estimator", estimator), ("tangent_chunk", tangent_chunk)):
        if value is not None and quantity not in along:
            raise ValueError(
                f"jprop.road: `{name}` applies to "
                + ", ".join(map(repr, sorted(along)))
                + f"; got quantity {quantity!r}."
            )
    if estimator is not None:
        check_method(estimator, tuple(ESTIMATORS), "jprop.road", "estimator")
    if quantity == "hessian_diagonal" and estimator is not None:
        if estimator == "sparse" or tangent_chunk is not None:
            raise ValueError(
                "jprop.road: the Hessian diagonal's estimate takes estimator='rademacher' or "
                "'gaussian' and no tangent_chunk (jprop.hessian_diagonal refuses the others)."
            )
        inner = choose(f, "hessian_vector_product", method, where="jprop.road")
        return Road(
            inner.road,
            f"dense estimator of the diagonal: k {estimator.capitalize()} probes v drawn from the "
            f"key, the mean of v ⊙ ∇²f v, each ∇²f v a Hessian-vector product: {inner.reason}",
        )
    if (estimator is not None or tangent_chunk is not None) and quantity != "hessian_trace":
        # the transform then runs the forward Laplacian along directions (`_operators`)
        chosen = choose(f, "hessian_trace", method, where="jprop.road")
        if tangent_chunk is not None:
            chosen = Road(chosen.road, f"in chunks of input tangents: {chosen.reason}")
    return estimated(chosen, estimator)


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


def all_arrays(*trees: Any) -> bool:
    """True when every leaf is already an array or a Python/NumPy number, so `jax.jit` takes the
    arguments as they are and validation can run at trace time; otherwise the caller validates
    eagerly first, which turns a string or an object into jprop's own error message."""
    for tree in trees:
        for leaf in jax.tree.leaves(tree):
            if not isinstance(leaf, (jax.Array, int, float)) and not hasattr(leaf, "__array__"):
                return False
    return True


def program(
    where: str,
    compute: Callable[..., Any],
    validate: Callable[..., Any],
    names: tuple[str, ...] | None = None,
) -> Callable[..., Any]:
    """The one wrapper every transform, objective and weight-curvature product is served by.

    `compute(*args)` is the whole computation, validation included (it calls `validate` first, so
    checks run when the program is traced and an eager call costs one dispatch of the compiled
    program). The wrapper jits it once, checks the number of arguments against `names` (None:
    `validate` checks them), validates eagerly first when an argument is not yet an array (a
    string, an object: `jax.jit` would refuse it in its own words), and turns the device's
    out-of-memory error into one that says how to bound memory. Built inside a `cached` builder,
    the program is traced once per argument shapes however often the transform is rebuilt.
    """
    compiled = jax.jit(compute)

    @functools.wraps(compute)
    def call(*args: Any) -> Any:
        if names is not None and len(args) != len(names):
            raise TypeError(f"{where}: expected arguments ({', '.join(names)}); got {len(args)}.")
        if not all_arrays(*args):
            validate(*args)
        return run_compiled(compiled, where, *args)

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
