"""Derivatives with respect to the input: Jacobian, Hessian, Laplacian, Hessian diagonal, input-space
Hessian-vector product, and the R-operator.

Each transform takes `f(params, x)` and returns a function of `(params, x, ...)`, in the manner of
`jax.jacobian`. Two roads lead to every quantity: the generic autodiff road,
built from `jax.jvp`/`jax.vjp` compositions, which works for any `f`; and the closed-form road for a
`jprop.MLP` (`_closed.py`, built on the four passes of `models/_passes.py`). `method="auto"` picks the
closed form when it exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._batch import map_batches, map_examples
from .._dispatch import REGISTRY, choose, computed_as
from .._program import broadcasting, cached, program
from .._validation import (
    check_extra,
    check_input,
    computation_dtype,
    in_dtype,
    optional_size,
    prepare_call,
)
from ..layers import Network
from ..models._mlp import MLP
from ._forward_laplacian import supports
from ._operators import check_drift, check_estimator, diagonal_estimate, operator_transform

Function = Callable[[Any, jax.Array], jax.Array]

_EXTRA_HINTS = {
    "g": " `g` weights the outputs: shape (m,), with x's batch axes in front.",
    "r": " `r` is a direction in input space, shaped like x.",
}


def _validate(f: Any, params: Any, x: Any, others: tuple, extra: tuple[str, ...], where: str):
    """Check params, x and the extra arguments; return x, the checked extras and the abstract
    per-example output (trace time)."""
    x, out, given = prepare_call(f, params, x, where)
    checked = []
    for name, value in zip(extra, others):
        shape = x.shape[:-1] + (out.shape if name == "g" else x.shape[-1:])
        checked.append(check_extra(value, name, shape, given, x.dtype, where, _EXTRA_HINTS[name]))
    return x, tuple(checked), out


def _indices(value: Any, name: str, where: str) -> tuple[int, ...] | None:
    """None, or a non-empty tuple of distinct non-negative ints (range checked when traced)."""
    if value is None:
        return None
    if isinstance(value, (jax.Array, np.ndarray)):
        traced = isinstance(value, jax.core.Tracer)
        raise TypeError(
            f"{where}: `{name}` must be static Python ints (a tuple), chosen when the transform is "
            f"built; got {'a traced' if traced else 'an'} array {value!r}. Pass e.g. "
            f"{name}=(0, 2)"
            + (
                ", and under jax.jit mark the argument it comes from static (static_argnums)."
                if traced
                else f", or {name}=tuple(int(i) for i in {name}) for a concrete array."
            )
        )
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if (
        not items
        or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in items)
        or min(items) < 0
        or len(set(items)) != len(items)
    ):
        raise TypeError(
            f"{where}: `{name}` must be a non-empty sequence of distinct non-negative ints, e.g. "
            f"{name}=(1, 2); got {value!r}."
        )
    return tuple(int(i) for i in items)


def _check_outputs(outputs: tuple[int, ...] | None, out: jax.Array, where: str) -> None:
    """`outputs` (None: all) must pick from a vector output `out` (one example's value)."""
    if outputs is None:
        return
    if len(out.shape) != 1:
        raise ValueError(
            f"{where}: `outputs` selects from a vector output; f(params, x) has shape "
            f"{out.shape} per example."
        )
    _check_range(outputs, out.shape[0], "outputs", "output", where)


def _check_range(indices, size: int, name: str, space: str, where: str) -> None:
    if indices is not None and max(indices) >= size:
        there = f"is only 1 {space} (index 0)" if size == 1 else f"are only {size} {space}s"
        there += "" if size == 1 else f" (indices 0..{size - 1})"
        raise ValueError(
            f"{where}: `{name}` = {indices} picks {space} {max(indices)}, but there {there}."
        )


def _subnet(net: MLP, outputs: tuple[int, ...]) -> MLP:
    """The sub-network computing only `outputs` of an MLP with an elementwise output layer."""
    return MLP(net.sizes[:-1] + (len(outputs),), activation=net.activation, output=net.output)


def _subparams(params: Any, outputs: tuple[int, ...]) -> Any:
    last = params[-1]
    rows = np.asarray(outputs)
    return [*params[:-1], {"W": last["W"][rows], "b": last["b"][rows]}]


@cached
def _input_transform(
    quantity: str,
    f: Any,
    method: str,
    batch_size: Any,
    dims: tuple[int, ...] | None = None,
    outputs: tuple[int, ...] | None = None,
) -> Callable[..., jax.Array]:
    """Build `(params, x, *arguments) -> result` from the quantity's record (`_dispatch.py`).

    On the closed road the record's `closed` (or `trained`, `layers`) form computes a whole batch
    (B, n); on the autodiff road its `autodiff` rule one example, mapped over x's leading axes.
    The record's `arguments` are per-example: "g" (shaped like the output) and "r" (like x).
    Validation runs when the program is traced, so an eager call costs one dispatch of the
    compiled program; the builder is cached, so rebuilding the transform reuses that program.
    """
    where = f"jprop.{quantity}"
    road = choose(f, quantity, method, where).road
    batch_size = optional_size(batch_size, "batch_size", where)
    record = REGISTRY[quantity]
    extra = tuple(name for name, _ in record.arguments)
    closed, autodiff = record.closed, record.autodiff
    # What computes: f itself, or on the closed road for a Network of plain Dense layers its MLP
    # (`computed_as`; the same params). `f` keeps validating the arguments, so errors name the
    # Network's own layers.
    computing = computed_as(f, road)
    # Output selection on the closed road: a sub-network computing only those outputs, unless a
    # softmax couples them (then all are computed and the chosen ones kept).
    subnet = (
        road == "closed"
        and isinstance(computing, MLP)
        and outputs is not None
        and computing.output != "softmax"
    )
    net = _subnet(computing, outputs) if subnet else computing
    if dims is not None:
        closed = functools.partial(closed, dims=dims)
        autodiff = functools.partial(_over_inputs, autodiff, dims)
    if road == "closed" and isinstance(computing, Network):  # each layer's own step (layers/)
        closed = record.layers
        if dims is not None:
            closed = functools.partial(closed, dims=dims)
    elif road == "closed" and record.trained is not None and supports(net):
        fast = record.trained(net, dims)
        closed = lambda net, params, *args: fast(params, *args)  # noqa: E731

    def plain(params, x, *others):
        if road == "closed":
            params = in_dtype(_subparams(params, outputs) if subnet else params, x.dtype)
            batch = lambda *args: closed(net, params, *args)  # noqa: E731
            out = map_batches(batch, x, *others, batch_size=batch_size)
            return _pick(out, outputs, quantity) if outputs is not None and not subnet else out
        model = f if outputs is None else _picked_model(f, outputs)
        one = lambda xi, *oi: autodiff(model, params, xi, *oi)  # noqa: E731
        return map_examples(one, x, *others, batch_size=batch_size)

    def validate(params, x, *others):
        x, others, out = _validate(f, params, x, others, extra, where)
        _check_range(dims, x.shape[-1], "dims", "input", where)
        _check_outputs(outputs, out, where)
        return x, others

    def compute(params, x, *others):
        x, others = validate(params, x, *others)
        return _vmap_is_the_batch(plain)(params, x, *others)

    return program(where, compute, validate, ("params", "x") + extra)


def _over_inputs(rule: Callable, dims: tuple[int, ...], f: Function, params: Any, x: jax.Array):
    """An autodiff per-example rule over the chosen inputs only: differentiate the function of
    x[dims] with the other inputs held, so only k tangents are pushed."""
    index = jnp.asarray(dims)
    return rule(lambda p, xd: f(p, x.at[index].set(xd)), params, x[index])


def _picked_model(f: Function, outputs: tuple[int, ...]) -> Function:
    # a NumPy index: a transform built while JAX traces (and cached) must hold no traced value
    index = np.asarray(outputs)
    return lambda p, x: f(p, x)[index]


def _pick(out: jax.Array, outputs: tuple[int, ...], quantity: str) -> jax.Array:
    """Keep the chosen outputs of a result whose output axis is last (Laplacian, the operator
    tr(σσᵀ∇²f)) or next to last (Hessian diagonal)."""
    axis = -2 if quantity == "hessian_diagonal" else -1
    return jnp.take(out, jnp.asarray(outputs), axis=axis)


def _vmap_is_the_batch(plain: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """`plain(params, x (..., n), *others)` with a batching rule: under a user's `jax.vmap` over
    x (and the per-example arguments) the mapped axis joins x's leading axes, so the closed form
    runs on the whole batch at once, as large matrix products, instead of being vectorised
    example by example. Mapped parameters (an ensemble) are
    vectorised as usual.

    `jax.custom_batching.custom_vmap` has no reverse mode, so it sits under a `jax.custom_jvp`
    whose rule is `plain`'s own derivative (the hand-written rules where `plain` has them)."""

    @jax.custom_batching.custom_vmap
    def batched(params, x, *others):
        return plain(params, x, *others)

    @batched.def_vmap
    def _rule(axis_size, in_batched, params, x, *others):
        params_batched, x_batched, *others_batched = in_batched
        if any(jax.tree.leaves(params_batched)):
            axes = (
                jax.tree.map(lambda b: 0 if b else None, params_batched),
                0 if x_batched else None,
                *(0 if b else None for b in others_batched),
            )
            out = jax.vmap(plain, in_axes=axes)(params, x, *others)
        else:
            out = _join_the_batch(plain, axis_size, params, x, others, x_batched, others_batched)
        return out, jax.tree.map(lambda _: True, out)  # every output mapped (a tuple for drift)

    @jax.custom_jvp
    def differentiable(params, x, *others):
        return batched(params, x, *others)

    @differentiable.defjvp
    @broadcasting
    def _jvp(primals, tangents):
        return jax.jvp(plain, primals, tangents)

    return differentiable


def _join_the_batch(plain, axis_size, params, x, others, x_batched, others_batched):
    """`plain` on the whole batch with the mapped axis in front of x's leading axes; arguments
    that are not mapped are broadcast to it."""
    x = x if x_batched else jnp.broadcast_to(x, (axis_size, *x.shape))
    others = [
        o if b else jnp.broadcast_to(o, (axis_size, *o.shape))
        for o, b in zip(others, others_batched)
    ]
    return plain(params, x, *others)


def jacobian(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The Jacobian of `f` with respect to its input, $J_{kj} = \partial f_k / \partial x_j$.

    **Arguments:**

    - `f`: a `jprop.MLP` or any function `f(params, x)` taking `x` of shape `(n,)`.
    - `method`: `"auto"`, `"closed"` or `"autodiff"`. The closed road for a `jprop.MLP` carries
      hand-written derivative rules, so `jax.grad` of a loss on J (Sobolev training, Jacobian
      penalties) runs their adjoint passes (docs/math.md §9); `"auto"` takes it when `n <= m`
      (its rule does fewer products than JAX's derivative of `jacfwd`) and `jax.jacrev` otherwise (its derivative
      compiles to the same products as the backwards rule).
    - `batch_size`: map over the batch in chunks of at most this many examples (strided when the
      batch splits evenly, so a sharded batch stays split) to bound memory, under `jax.grad`
      too (each chunk's forward runs again in the backward pass); `None` (default) maps the
      whole batch at once.

    **Returns:** a function `(params, x) -> J`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `J` has shape `(m, n)`; `x` of shape `(..., n)` gives `(..., m, n)`. Both roads propagate
    forwards when `n < m` and backwards otherwise (Bishop §8.1.5).

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> jprop.jacobian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
        (2, 3)
    """
    return _input_transform("jacobian", f, method, batch_size)


def hessian(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array], jax.Array]:
    r"""The input Hessian of every output, $H_{kij} = \partial^2 f_k/\partial x_i \partial x_j$.

    For a `jprop.MLP`, the sum over hidden units (docs/math.md §4), and `jax.grad` of a loss on
    it runs hand-written adjoint passes (§10); otherwise `jax.hessian`.

    **Arguments:** as for `jprop.jacobian`, except that `method="auto"` takes the closed form for a
    `jprop.MLP` with several outputs, a first hidden layer at least 64 wide and no more inputs than
    half of it; otherwise `jax.hessian`, which is as fast there (`jprop.road(f,
    "hessian")` says which, and why).

    **Returns:** a function `(params, x) -> H`. If `f(params, x)` has shape `(m,)` for `x` of shape
    `(n,)`, `H` has shape `(m, n, n)`, symmetric in its last two axes; `x` of shape `(..., n)` gives
    `(..., m, n, n)`.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> jprop.hessian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
        (2, 3, 3)
    """
    return _input_transform("hessian", f, method, batch_size)


def laplacian(
    f: Function,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    dims: Any = None,
    outputs: Any = None,
    tangent_chunk: int | None = None,
    estimator: str | None = None,
    probes: int | None = None,
    drift: str | None = None,
) -> Callable[..., Any]:
    r"""The Laplacian of every output, $\Delta f_k = \sum_i \partial^2 f_k / \partial x_i^2$.

    For a `jprop.MLP` it is the forward Laplacian — input-tangents and the Laplacian's running
    value pushed through each layer as matrix products, no $n \times n$ matrix formed — and
    `jax.grad` of anything built on it runs that pass's hand-written tangent pass, transposed.
    For any other `f` (and with `method="autodiff"`) it is folx's forward Laplacian, the same
    pass interpreted from `f`'s operations, which `jax.grad` differentiates.

    **Arguments:** `f`, `method`, `batch_size` as for `jprop.jacobian`, and

    - `dims`: the input coordinates to sum over, e.g. `dims=(1, 2)` for $\Delta_x u$ of
      $u(t, x_1, x_2)$; the closed road then pushes only those k tangents (default: all n), or
      on an MLP (or a Network whose first layer is `Dense`) with k above its first width h₁, h₁
      directions giving the same sum.
    - `outputs`: the outputs to compute, e.g. `outputs=(0,)` (default: all m); the closed road
      then runs a network with only those output rows.
    - `tangent_chunk`: push the input tangents at most this many at a time, summing their
      chunks in a loop, so that memory grows with B · chunk · width rather than B · n · width,
      under `jax.grad` too (each chunk is recomputed backwards); for thousands of inputs.
    - `estimator`, `probes`: estimate the Laplacian from `probes` = k random directions drawn
      from a key given at each call: `"sparse"`, k of the N coordinates (N = n, or `len(dims)`)
      without replacement, scaled by N/k (SDGD/STDE; exact when k = N); `"rademacher"` or
      `"gaussian"`, the mean of vᵀ∇²f v over k probes (Hutchinson). Both are unbiased; their
      variances and the unbiased squared residual (`jprop.unbiased_square`) are in
      docs/howto/high-dimensional.md.
    - `drift`: `"x"` to return the triple `(f, x·∇f, L)` instead of `L`: the value and the
      derivative along x itself, the first-order terms of a residual such as Black–Scholes'
      r x·∇u or the Laplacian of (1 − ‖x‖²)·f. On a `jprop.MLP` or `jprop.Network` all three
      come from one pass, whose derivative forms the first layer's weight gradient once; for
      other functions (or with `tangent_chunk`) f and x·∇f come from one `jax.jvp`.
      `"given"` returns `(f, b·∇f, L)` for a field b passed at each call after x — an advection
      velocity, a Fokker–Planck drift — of x's shape (per example) or `(n,)` (shared), the same
      way; `jax.grad` differentiates b too. Default `None`.

    **Returns:** a function `(params, x) -> L`, or `(params, x, key) -> L` with an estimator,
    where `key` is a `jax.random.key` (one draw shared by the batch) or keys with x's batch axes
    (a draw per example); with `drift="given"`, b comes after x: `(params, x, b[, key])`. If
    `f(params, x)` has shape `(m,)` for `x` of shape `(n,)`, `L` has shape `(m,)` (or
    `(len(outputs),)`); `x` of shape `(..., n)` gives `(..., m)`. An `f` with a scalar output per
    example gives `()` per example.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> jprop.laplacian(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
        (2,)
        >>> estimate = jprop.laplacian(net, estimator="sparse", probes=2)
        >>> estimate(net.init(jax.random.key(0)), jax.numpy.ones(3), jax.random.key(1)).shape
        (2,)
    """
    where = "jprop.laplacian"
    dims, outputs = _indices(dims, "dims", where), _indices(outputs, "outputs", where)
    estimator, probes = check_estimator(estimator, probes, where)
    drift = check_drift(drift, where)
    if estimator is not None or tangent_chunk is not None or drift:
        return operator_transform(
            f,
            method,
            batch_size,
            False,
            dims,
            outputs,
            estimator,
            probes,
            tangent_chunk,
            drift=drift,
        )
    return _input_transform("laplacian", f, method, batch_size, dims, outputs)


def hessian_trace(
    f: Function,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    outputs: Any = None,
    tangent_chunk: int | None = None,
    estimator: str | None = None,
    probes: int | None = None,
    drift: str | None = None,
) -> Callable[..., Any]:
    r"""The second-order operator $\operatorname{tr}(\sigma\sigma^\top \nabla^2 f_k) =
    \sum_c \sigma_c^\top \nabla^2 f_k\, \sigma_c$ of every output, for a diffusion matrix
    $A = \sigma\sigma^\top$ given by its factor σ (n × r).

    The diffusion term of a Kolmogorov, Black–Scholes or Fokker–Planck equation, or an anisotropic
    heat equation; σ = I gives the Laplacian. It is the forward Laplacian started from σ's r
    columns instead of the identity's n, so it costs r + 2 streams per layer and no n × n matrix;
    `jax.grad` of a loss on it runs the same hand-written tangent pass as `jprop.laplacian`
    (in params, x and σ) for a `jprop.MLP`.

    **Arguments:** `f`, `method`, `batch_size`, `outputs`, `tangent_chunk` as for
    `jprop.laplacian`, and `estimator`, `probes` to estimate it from k random directions: `"sparse"`
    samples k of σ's r columns without replacement and scales by r/k; `"rademacher"` and
    `"gaussian"` take the mean of $(\sigma v)^\top \nabla^2 f\, (\sigma v)$ over k probes v;
    `drift="x"` to return `(f, x·∇f, T)`, as for `jprop.laplacian` (the generator
    $r\,x\cdot\nabla u + \tfrac12 \operatorname{tr}(\sigma\sigma^\top \nabla^2 u)$ of a
    Black–Scholes equation needs all three), or `drift="given"` for `(f, b·∇f, T)` with a field b
    passed after σ (the generator $b\cdot\nabla u + \tfrac12 \operatorname{tr}(\sigma\sigma^\top
    \nabla^2 u)$ of any diffusion).

    **Returns:** a function `(params, x, sigma) -> T`, or `(params, x, sigma, key) -> T` with an
    estimator (`(params, x, sigma, b[, key])` with `drift="given"`); `sigma` has shape
    `(n, r)` (shared by the batch) or x's batch axes in front, `(..., n, r)` (e.g.
    $\sigma(x) = \operatorname{diag}(s \odot x)$ for Black–Scholes); `T` is shaped as
    `jprop.laplacian`'s result.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> p, x = net.init(jax.random.key(0)), jnp.ones(3)
        >>> trace = jprop.hessian_trace(net)(p, x, jnp.eye(3))
        >>> bool(jnp.allclose(trace, jprop.laplacian(net)(p, x), atol=1e-6))
        True
    """
    where = "jprop.hessian_trace"
    outputs = _indices(outputs, "outputs", where)
    estimator, probes = check_estimator(estimator, probes, where)
    return operator_transform(
        f,
        method,
        batch_size,
        True,
        None,
        outputs,
        estimator,
        probes,
        tangent_chunk,
        drift=check_drift(drift, where),
    )


def hessian_diagonal(
    f: Function,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    dims: Any = None,
    outputs: Any = None,
    tangent_chunk: int | None = None,
    estimator: str | None = None,
    probes: int | None = None,
) -> Callable[..., jax.Array]:
    r"""The diagonal of every output's input Hessian, $D_{ki} = \partial^2 f_k / \partial x_i^2$.

    For a `jprop.MLP` it never forms an $n \times n$ matrix (docs/math.md §4), and `jax.grad` of a
    loss on it runs hand-written adjoint passes (§8, §10) rather than JAX's derivative of the
    closed form.

    **Arguments:** as for `jprop.laplacian`, with `dims` the inputs whose diagonal entries are
    wanted, `outputs` the outputs, and `tangent_chunk` to push the input tangents that many at a
    time through the forward Laplacian with each tangent's term kept apart, for bounded memory at
    thousands of inputs. `estimator="rademacher"` or `"gaussian"` with `probes` = k estimates
    every entry at once as the mean of $v \odot \nabla^2 f_k\, v$ over k probes drawn from a key,
    one `jprop.hessian_vector_product` per probe and output (its road and training rule); the
    variance of an entry is $\sum_{j \ne i} H_{ij}^2 / k$ for Rademacher probes
    (docs/howto/high-dimensional.md).

    **Returns:** a function `(params, x) -> D`, or `(params, x, key) -> D` with an estimator. If
    `f(params, x)` has shape `(m,)` for `x` of shape `(n,)`, `D` has shape `(m, n)` (or
    `(len(outputs), len(dims))`); `x` of shape `(..., n)` gives `(..., m, n)`.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> jprop.hessian_diagonal(net)(net.init(jax.random.key(0)), jax.numpy.ones(3)).shape
        (2, 3)
    """
    where = "jprop.hessian_diagonal"
    dims, outputs = _indices(dims, "dims", where), _indices(outputs, "outputs", where)
    estimator, probes = check_estimator(estimator, probes, where)
    if estimator is not None:
        if tangent_chunk is not None:
            raise ValueError(
                f"{where}: `tangent_chunk` splits the exact diagonal's input tangents; an estimate "
                "pushes its probes through Hessian-vector products, bounded by `batch_size`. "
                "Pass one of them."
            )
        return diagonal_estimate(f, method, batch_size, dims, outputs, estimator, probes)
    if tangent_chunk is not None:
        return operator_transform(
            f, method, batch_size, False, dims, outputs, None, None, tangent_chunk, True
        )
    return _input_transform("hessian_diagonal", f, method, batch_size, dims, outputs)


def hessian_vector_product(
    f: Function, *, method: str = "auto", batch_size: int | None = None
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], jax.Array]:
    r"""The input-space Hessian-vector product $v = \sum_k g_k \nabla^2_x f_k\, r$.

    For a `jprop.MLP` this is the by-product of J-prop's R-backward pass (docs/math.md §3): forward,
    backward with output weighting `g`, R-forward along `r`, R-backward; about two gradients' cost
    and no $n \times n$ matrix; `jax.grad` of a loss on it (in the weights, x, `g` or `r`) runs the
    four passes' hand-written tangent, transposed (§10). Otherwise forward-over-reverse autodiff.

    **Arguments:** as for `jprop.jacobian`.

    **Returns:** a function `(params, x, g, r) -> v` with `g` of shape `(m,)`, `r` and `v` of shape
    `(n,)`; with batch axes, `x`, `r`, `v` of shape `(..., n)` and `g` of shape `(..., m)`.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> p = net.init(jax.random.key(0))
        >>> jprop.hessian_vector_product(net)(p, jnp.ones(3), jnp.ones(2), jnp.ones(3)).shape
        (3,)
    """
    return _input_transform("hessian_vector_product", f, method, batch_size)


def R(f: Callable[[Any, jax.Array], Any], *, method: str = "auto") -> Callable[..., Any]:
    r"""The input-space R-operator, $\mathcal{R}_r\{f\} = \partial_\varepsilon f(w, x + \varepsilon r)|_{\varepsilon=0}$.

    Perturbs the *input* and holds the weights (Flake & Pearlmutter 1999; docs/math.md §3). For a network
    output (a vector), $\mathcal{R}_r\{f\} = J r$.

    **Arguments:**

    - `f`: any function `f(params, x)`; its output may be any pytree of arrays.
    - `method`: `"auto"`, `"closed"` (the R-forward pass; `f` must be a `jprop.MLP`) or
      `"autodiff"` (`jax.jvp`).

    **Returns:** a function `(params, x, r)`, with `r` of the same shape and dtype as `x`, returning
    a pytree shaped like `f(params, x)`. `f` sees `x` exactly as given, so a batch-aware `f` gets
    the whole batch.

    Examples:
        >>> import jax, jprop
        >>> net = jprop.MLP((3, 8, 2))
        >>> p, x = net.init(jax.random.key(0)), jax.numpy.ones(3)
        >>> jprop.R(net)(p, x, x).shape
        (2,)
    """
    return _r_operator(f, method)


@cached
def _r_operator(f: Any, method: str) -> Callable[..., Any]:
    where = "jprop.R"
    road = choose(f, "R", method, where).road
    computing = computed_as(f, road)

    known = isinstance(f, (MLP, Network))

    def validate(params, x, r):
        if known:
            f.check_params(params, where)
        x = check_input(x, where, f.n_inputs if known else None)
        dtype = computation_dtype(params, x)
        return x.astype(dtype), check_extra(
            r, "r", x.shape, x.dtype, dtype, where, _EXTRA_HINTS["r"]
        )

    def compute(params, x, r):
        x, r = validate(params, x, r)
        record = REGISTRY["R"]
        if road == "closed":  # one tangent forwards; it takes any leading batch axes as they are
            rule = record.layers if isinstance(computing, Network) else record.closed
            return rule(computing, in_dtype(params, x.dtype), x, r)
        return record.autodiff(f, params, x, r)

    return program(where, compute, validate, ("params", "x", "r"))
