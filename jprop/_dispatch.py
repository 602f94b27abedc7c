"""Every quantity jprop computes, one record each, and which road computes it.

A quantity's record (`Quantity`, in `REGISTRY`) holds the rules `auto` applies to a `jprop.MLP` and
to a `jprop.Network`, what computes it on each road (the MLP's closed form and its hand-written
tangent pass, the Network's layer pass, the generic road's rule) and the arguments it takes after
x. The transforms and objectives build themselves from the record; `choose(f, quantity, method)`
decides the road, and `jprop.road(f, quantity)` tells a user the same answer with its reason.
How a built transform becomes one compiled program is `_program.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ._program import type_name
from ._validation import check_method
from .curvature import _rules as curvature_rules
from .curvature._losses import CrossEntropy, SquaredError
from .layers import Network
from .layers import _network as layer_passes
from .models._mlp import MLP
from .models._rbf import RBFNetwork
from .objectives import _roads as objective_roads
from .quantities import _autodiff, _closed, _forward_laplacian, _trained_curvature
from .quantities._trained_jacobian import jacobian as trained_jacobian

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


def check_loss(f: Any, where: str) -> None:
    """Weight curvature is of a scalar loss; a jprop model is not one (its output is an array per
    example), and taken as one it fails inside jax.grad with no word of the fix."""
    if isinstance(f, (MLP, Network, RBFNetwork)):
        wrap = "jprop.SquaredError(net)" + (
            " or jprop.CrossEntropy(net) for its softmax output"
            if isinstance(f, MLP) and f.output == "softmax"
            else ""
        )
        raise TypeError(
            f"{where}: weight curvature is of a scalar loss E(params, *data); got a "
            f"jprop.{type(f).__name__}, a model, whose output is an array per example. Wrap it in "
            f"a loss: {wrap}, or write E(params, *data) that returns a scalar."
        )


def check_model(f: Any, where: str) -> None:
    """Input derivatives and objectives are of a model f(params, x); a jprop loss is not one (it
    takes targets too), and taken as one it fails on a missing argument."""
    if isinstance(f, (SquaredError, CrossEntropy)):
        rest = ", ..." if where == "jprop.road" else ""  # road takes the quantity too
        raise TypeError(
            f"{where}: `f` must be a model f(params, x); got a jprop.{type(f).__name__}, a loss "
            f"of (params, x, t). Pass its model instead, e.g. {where}(net{rest}) for "
            f"jprop.{type(f).__name__}(net)."
        )


def _loss_elsewhere(f: Any) -> str:
    """Why a loss takes JAX's jvp of its gradient rather than the weight-space R passes."""
    if isinstance(f, (SquaredError, CrossEntropy)):
        return (
            "the weight-space R passes cover jprop.SquaredError and jprop.CrossEntropy of a "
            f"jprop.MLP; this {type(f).__name__}'s model is a {type_name(f.f)}: jax.jvp of "
            "jax.grad of the loss"
        )
    return f"jprop knows no closed form for this {type_name(f)}: jax.jvp of jax.grad of the loss"


def _is_closed_loss(f: Any) -> bool:
    # Weight-space curvature: a SquaredError / CrossEntropy of an MLP has closed passes.
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


def _fewer_text(h: int, units: str) -> str:
    """The road's note on running more directions than a first layer's h units as h."""
    return (
        f"; more than {h} inputs or shared directions ({units}) run as {h} directions with the "
        "same first-layer Gram matrix, exactly"
    )


def _fewer(f: MLP) -> str:
    """What the forward Laplacian of an MLP does with more directions than first-layer units."""
    if not _forward_laplacian.fewer_pay(f, f.n_inputs):
        return ""
    return _fewer_text(f.sizes[1], "the first layer's units")


def _fewer_layers(f: Network) -> str:
    """What the forward Laplacian of a Network does with more directions than a first `Dense`
    layer's units."""
    if not layer_passes.fewer_pay(f, f.n_inputs):
        return ""
    return _fewer_text(f.layers[0].width, "the first Dense layer's units")


def _through_layers(reason: str) -> Callable[[Network], tuple[bool, str]]:
    return lambda f: (True, reason + _fewer_layers(f))


def _laplacian_rule(f: MLP) -> tuple[bool, str]:
    return True, (
        "the forward Laplacian, trained through its hand-written tangent pass" + _fewer(f)
    )


def _softmax_trace_rule(f: MLP) -> tuple[bool, str]:
    if f.output == "softmax":
        return False, (
            "a softmax output couples the outputs: folx's forward Laplacian along the directions"
        )
    return True, (
        "the forward Laplacian started from the directions instead of the identity, trained "
        "through its hand-written tangent pass" + _fewer(f)
    )


Rule = Callable[[Any], tuple[bool, str]]


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One quantity's record.

    - `mlp`, `network`: the rule `auto` applies to a `jprop.MLP` and to a `jprop.Network`, giving
      (takes the closed road?, reason); `network` None: no layer road.
    - `closed`: the MLP's closed form over a batch, `(net, params, x (B, n), *arguments)`; for an
      objective it gives (Σ value, Σ weight-gradients) from J-prop's passes.
    - `trained`: `(net, dims) -> (params, x, *arguments) -> value`, the closed form carrying its
      hand-written tangent pass, which `jax.grad` runs (None: JAX differentiates `closed`).
    - `layers`: the Network's pass over a batch, `(net, params, x, *arguments)`.
    - `autodiff`: the generic road for any `f`, one example: `(f, params, x_i, *arguments_i)`.
    - `arguments`: the per-example arguments after x, each with the space it lives in ("m": the
      output's, "n": the input's); `scalars`: shared scalar arguments after them.
    - `engine`: what computes it on the generic road where that is not JAX's own transforms.
    """

    mlp: Rule
    network: Rule | None = None
    closed: Callable[..., Any] | None = None
    trained: Callable[..., Any] | None = None
    layers: Callable[..., Any] | None = None
    autodiff: Callable[..., Any] | None = None
    arguments: tuple[tuple[str, str], ...] = ()
    scalars: tuple[str, ...] = ()
    engine: str = ""


_SOFTMAX_CURVATURE = (
    "the sum over hidden units with the softmax's own term, trained by JAX's derivative of it"
)
_ONE_TANGENT = "one input tangent through each layer's own step, differentiated by jax.grad"
_FOLX = "; folx's forward Laplacian computes it"


def _objective(name: str, mlp: Rule, network: Rule, *arguments: str, scalars=()) -> Quantity:
    """A J-prop objective's record: its three roads are `objective_roads.<road>_<name>`;
    `arguments` as "name space" pairs ("g m": g in the output space)."""
    return Quantity(
        mlp,
        network,
        closed=getattr(objective_roads, f"closed_{name}"),
        layers=getattr(objective_roads, f"layers_{name}"),
        autodiff=getattr(objective_roads, f"autodiff_{name}"),
        arguments=tuple(tuple(pair.split()) for pair in arguments),
        scalars=scalars,
    )


# Every quantity jprop computes, one record each (the composites below take their primitive's).
REGISTRY: dict[str, Quantity] = {
    "jacobian": Quantity(
        _jacobian_rule,
        _network_jacobian_rule,
        closed=_closed.jacobian,
        trained=trained_jacobian,
        layers=layer_passes.jacobian,
        autodiff=_autodiff.jacobian,
    ),
    "hessian": Quantity(
        _with_softmax(_hessian_rule, _SOFTMAX_CURVATURE),
        closed=_closed.hessian,
        trained=lambda net, dims: _trained_curvature.hessian(net),
        autodiff=_autodiff.hessian,
    ),
    "laplacian": Quantity(
        _with_softmax(_laplacian_rule, _SOFTMAX_CURVATURE),
        _through_layers(
            "the forward Laplacian through each layer's own step, differentiated by jax.grad as "
            "plain matrix products and elementwise products"
        ),
        closed=_closed.laplacian,
        trained=_forward_laplacian.laplacian,
        layers=layer_passes.laplacian,
        autodiff=_autodiff.laplacian,
        engine=_FOLX,
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
        closed=_closed.hessian_diagonal,
        trained=_trained_curvature.diagonal_for,
        layers=layer_passes.hessian_diagonal,
        autodiff=_autodiff.hessian_diagonal,
    ),
    "hessian_vector_product": Quantity(
        _with_softmax(
            _always(
                "the R-backward pass's by-product, trained through its hand-written tangent pass"
            ),
            "the R-backward pass's by-product with the softmax's own term, trained by JAX's "
            "derivative of it",
        ),
        closed=_closed.hessian_vector_product,
        trained=lambda net, dims: _trained_curvature.hessian_vector_product(net),
        autodiff=_autodiff.hvp,
        arguments=(("g", "m"), ("r", "n")),
    ),
    "hessian_trace": Quantity(
        _softmax_trace_rule,
        _through_layers(
            "the forward Laplacian through each layer's own step, started from the directions"
        ),
        engine="; folx's forward Laplacian of z ↦ f(x + Dᵀz) at z = 0 computes it",
    ),
    "R": Quantity(
        _always("the R-forward pass"),
        _always("one input tangent through each layer's own step"),
        closed=_closed.jacobian_vector_product,
        layers=layer_passes.jacobian_vector_product,
        autodiff=_autodiff.jacobian_vector_product,
        arguments=(("r", "n"),),
    ),
    "bilinear": _objective(
        "bilinear", _always("J-prop's four passes"), _always(_ONE_TANGENT), "g m", "r n"
    ),
    "jprop_u": _objective(
        "jprop_u", _always("J-prop's four passes"), _network_rows_rule, "u m", "a n"
    ),
    "jprop_v": _objective("jprop_v", _jprop_v_rule, _always(_ONE_TANGENT), "v n", "b m"),
    "double_backprop": _objective(
        "double_backprop",
        _always("J-prop's passes with the output injection"),
        _network_rows_rule,
        "t m",
        scalars=("lam",),
    ),
    # the Hessian-vector product of a loss in the weights (`(loss, params, x, t, v)` closed,
    # `(loss, params, v, *data)` for any loss); the Gauss-Newton product takes the same road
    "weight_curvature": Quantity(
        _always("Pearlmutter's weight-space R passes"),
        closed=curvature_rules.closed_hvp,
        autodiff=curvature_rules.autodiff_hvp,
    ),
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
_PLAIN_NETWORK = "a jprop.Network of plain Dense layers, run as its jprop.MLP (net.as_mlp()): "

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


def computed_as(f: Any, road: str) -> Any:
    """What computes `f`'s quantities on `road`: on the closed road a `jprop.Network` of plain
    Dense layers runs as its `jprop.MLP` (`Network.as_mlp`, the same function and parameters),
    whose passes are written for that one structure — the hand-derived training rules among
    them — where each layer's own step would be differentiated by `jax.grad`; anything else runs
    as itself. `choose` gives such a network the MLP's road, and says so."""
    if road == "closed" and isinstance(f, Network) and not f._not_an_mlp():
        return f.as_mlp()
    return f


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
        raise TypeError(f"{where}: `f` must be a callable f(params, x); got {type_name(f)}.")
    check_method(method, METHODS, where)
    if quantity == "weight_curvature":
        check_loss(f, where)
    else:
        check_model(f, where)
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
    if network and quantity != "weight_curvature" and not f._not_an_mlp():
        # the MLP's road, on which `computed_as` hands that MLP to the builders
        inner = choose(f.as_mlp(), quantity, method, where)
        return Road(inner.road, _PLAIN_NETWORK + inner.reason)
    if quantity == "weight_curvature":
        closed_ok = _is_closed_loss(f)
    else:
        closed_ok = isinstance(f, MLP) or (network and record.network is not None)
    if method == "closed":
        if not closed_ok:
            needs = (
                "jprop.SquaredError or jprop.CrossEntropy of a jprop.MLP"
                if quantity == "weight_curvature"
                else "a jprop.MLP"
                + (" or a jprop.Network" if record.network is not None else "")
                + ", whose structure jprop knows"
            )
            if network:
                covered = [name for name, r in REGISTRY.items() if r.network is not None]
                needs += "; for a jprop.Network the closed road covers " + ", ".join(covered)
            raise ValueError(
                f"{where}: method='closed' needs {needs}; got {type_name(f)}. Use "
                "method='autodiff' (or 'auto') for other models."
            )
        return Road("closed", "forced by method='closed'")
    engine = record.engine
    if method == "autodiff":
        return Road("autodiff", "forced by method='autodiff'" + engine)
    if not closed_ok:
        if quantity == "weight_curvature":
            return Road("autodiff", _loss_elsewhere(f))
        if network:
            return Road("autodiff", _NETWORK_ELSEWHERE + engine)
        return Road("autodiff", f"jprop knows no closed form for this {type_name(f)}" + engine)
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
