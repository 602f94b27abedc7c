"""Curvature of a loss with respect to the weights (docs/math.md §6; Bishop §8.1.6; Pearlmutter 1994).

A loss is either a `jprop.SquaredError` / `jprop.CrossEntropy` built on a model — the closed road
when the model is a `jprop.MLP` — or any callable `E(params, *data)` (the autodiff road). Both
losses are batch means: E = (1/B) Σ_b e(f(x_b), t_b).

Closed road, per MLP (all batch-wide matrix products):
- Hessian-vector product Hv: forward; backward with ∂E/∂y; the weight-space R-forward
  (rz^l = W^l ry^{l-1} + V^l y^{l-1} + V_b^l); the R-backward with output injection E''(y) ry^L
  and the extra V^lᵀ gz^l term; then ∂/∂W^l = rgz^lᵀ y^{l-1} + gz^lᵀ ry^{l-1}, as in J-prop.
- Gauss-Newton G v = J_wᵀ H_out J_w v: the weight-space R-forward gives J_w v; one linear backward
  pass from H_out J_w v (ry^L for squared error, taken through y; for cross-entropy with its
  canonical logsig/softmax output, H_z R{z^L} = R{y^L}, taken through z) gives J_wᵀ of it.
- Becker–LeCun's diagonal: the exact diagonal of ∂²E/∂(z^L)², then
  d^l = (s1^l)² ∘ (d^{l+1} (W^{l+1})²) + s2^l ∘ gy^l, and ∂²E/∂W_ji² ≈ d_j y_i².

Flattening: `jprop.param_layout(params)` names each leaf's slice of the flat vector that the
matrices here index (`jax.flatten_util.ravel_pytree` order).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._batch import mean_over_batch
from .._dispatch import REGISTRY, check_loss, choose
from .._program import broadcasting, cached, program, type_name
from .._validation import as_key, check_size, switch
from ..models._mlp import MLP
from . import _rules
from ._lanczos import Eigenpairs, lanczos
from ._losses import CrossEntropy, SquaredError, check_data


def _like_params(result: Any, params: Any) -> Any:
    """A weight-space result in the params' own dtypes, leaf by leaf (as jax.grad gives)."""
    return jax.tree.map(lambda r, p: r.astype(jnp.result_type(p)), result, params)


def _like_flat_params(matrix: jax.Array, params: Any) -> jax.Array:
    """A (P, P) matrix in the dtype of the flattened params."""
    return matrix.astype(ravel_pytree(params)[0].dtype)


def _road(loss: Any, method: str, where: str) -> str:
    if not callable(loss):
        raise TypeError(
            f"{where}: `loss` must be jprop.SquaredError(f), jprop.CrossEntropy(net) or a callable "
            f"E(params, *data); got {type_name(loss)}."
        )
    return choose(loss, "weight_curvature", method, where).road


def _check_direction(params: Any, v: Any, where: str, name: str = "v") -> Any:
    """`v` must be a pytree with params' structure, shapes and dtypes."""
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params)
    v_leaves, v_tree = jax.tree_util.tree_flatten_with_path(v)
    if p_tree != v_tree:
        raise ValueError(
            f"{where}: `{name}` must be a pytree shaped like params ({p_tree}); got {v_tree}. "
            f"Build it with jax.tree.map over params, e.g. jax.tree.map(jnp.ones_like, params)."
        )
    for (path, p), (_, leaf) in zip(p_leaves, v_leaves):
        leaf = jnp.asarray(leaf)
        if leaf.shape != jnp.shape(p) or leaf.dtype != jnp.result_type(p):
            raise ValueError(
                f"{where}: `{name}` at {jax.tree_util.keystr(path)} must have shape "
                f"{jnp.shape(p)} and dtype {jnp.result_type(p)} like params; got {leaf.shape} "
                f"{leaf.dtype}."
            )
    return v


def _check_batch_size(loss: Any, batch_size: Any, where: str) -> int | None:
    """`batch_size` chunks the data of a batch-mean loss; a generic E(params, *data) is not one."""
    if batch_size is None:
        return None
    batch_size = check_size(batch_size, "batch_size", where)
    if not isinstance(loss, (SquaredError, CrossEntropy)):
        raise ValueError(
            f"{where}: batch_size needs a jprop.SquaredError or jprop.CrossEntropy loss, whose "
            f"value is a mean over the examples of (x, t); got {type_name(loss)}, which jprop "
            "cannot split. Chunk inside your E(params, *data) instead, or drop batch_size."
        )
    return batch_size


def _mean_of(rule_sums: Callable, batch_size: int | None) -> Callable:
    """`(params, v, x, t) ->` the batch mean of `rule_sums(params, v, x, t)`, which gives sums over
    the examples it is handed (`mean_over_batch`: chunks of `batch_size` examples in one loop with
    a running sum, so memory is bounded by one chunk)."""

    def mean(params, v, x, t):
        return mean_over_batch(lambda x, t: rule_sums(params, v, x, t), x, t, batch_size=batch_size)

    return mean


# ----------------------------------------------------------------------------------------------
# Public transforms


def _scalar(loss: Callable, where: str) -> Callable:
    """A loss of the user's own, refused when traced if it does not return a scalar (jax.grad's
    own error would name neither the transform nor the fix)."""

    def value(params, *data):
        out = loss(params, *data)
        if jnp.shape(out) != ():
            raise TypeError(
                f"{where}: the loss must return a scalar; E(params, *data) returned shape "
                f"{jnp.shape(out)}. Reduce it to one number (e.g. jnp.mean over the examples), "
                "or use jprop.SquaredError(f)."
            )
        return out

    return value


def _hvp_fn(loss, road, where, batch_size=None):
    record = REGISTRY["weight_curvature"]
    if road == "closed":

        def rule(params, v, x, t):
            return record.closed(loss, params, x, t, v)
    else:
        value = loss if isinstance(loss, (SquaredError, CrossEntropy)) else _scalar(loss, where)

        def rule(params, v, *data):
            return record.autodiff(value, params, v, *data)

    if not isinstance(loss, (SquaredError, CrossEntropy)):  # not a batch mean: as it is
        return rule
    return _mean_of(rule, batch_size)


def _validate_data(loss, params, *data, where):
    """The data after params: (x, t) checked for a jprop loss, as they are for any other."""
    if isinstance(loss, (SquaredError, CrossEntropy)):
        if len(data) != 2:
            raise TypeError(
                f"{where}: a {type(loss).__name__} loss takes data (x, t) after params (and v); "
                f"got {len(data)} data argument{'s' if len(data) != 1 else ''}. Pass the targets t "
                "of shape (B, m) too."
            )
        return check_data(loss, params, *data, where)
    return data


def _directional(loss: Any, where: str) -> Callable:
    """`(params, v, *data) -> (v, data)` checked: v shaped like params, the data as for the loss."""

    def validate(params, v, *data):
        data = _validate_data(loss, params, *data, where=where)
        return _check_direction(params, v, where), data

    return validate


@cached
def weight_hessian_vector_product(
    loss: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., Any]:
    r"""The exact Hessian-vector product $H v$ of a loss with respect to the weights (Pearlmutter).

    **Arguments:** `loss`: `jprop.SquaredError(f)`, `jprop.CrossEntropy(net)` or any callable
    `E(params, *data)`; `method`: "auto" (closed passes for an MLP loss), "closed" or "autodiff"
    (`jax.jvp(jax.grad(E))`); `batch_size`: sum the product over chunks of this many examples
    (`jax.lax.scan`) for bounded memory (a `SquaredError` or `CrossEntropy` loss).

    **Returns:** a function `(params, v, *data) -> Hv`, `v` and `Hv` pytrees shaped like params.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 4, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((3, 2)), jnp.zeros((3, 1))
        >>> Hv = jprop.weight_hessian_vector_product(jprop.SquaredError(net))(p, jax.tree.map(jnp.ones_like, p), x, t)
        >>> jax.tree.map(jnp.shape, Hv) == jax.tree.map(jnp.shape, p)
        True
    """
    where = "jprop.weight_hessian_vector_product"
    road = _road(loss, method, where)
    product = _hvp_fn(loss, road, where, _check_batch_size(loss, batch_size, where))
    validate = _directional(loss, where)

    def hvp(params, v, *data):
        v, data = validate(params, v, *data)
        return _like_params(product(params, v, *data), params)

    return program(where, hvp, validate)


@cached
def gauss_newton_vector_product(
    loss: SquaredError | CrossEntropy, *, method: str = "auto", batch_size: int | None = None
) -> Callable:
    r"""The Gauss-Newton (outer-product) matrix times a vector, $G v = J_w^\top H_{out} J_w v$.

    Squared error: $G = \frac1B\sum_b J_y^\top J_y$ (Levenberg-Marquardt; drops the residual term).
    Cross-entropy with logsig/softmax outputs: $G = \frac1B\sum_b J_z^\top H_z J_z$, with
    $H_z = \mathrm{diag}(y(1-y))$ or $(\sum_k t_k)(\mathrm{diag}(y) - yy^\top)$. Positive semi-definite.
    `batch_size` as for `jprop.weight_hessian_vector_product`.

    **Returns:** a function `(params, v, x, t) -> Gv`, pytrees shaped like params.


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> Gv = jprop.gauss_newton_vector_product(jprop.SquaredError(net))(p, p, x, t)
        >>> jax.tree.map(jnp.shape, Gv) == jax.tree.map(jnp.shape, p)
        True
    """
    where = "jprop.gauss_newton_vector_product"
    product = _gauss_newton_product(loss, method, batch_size, where)
    validate = _directional(loss, where)

    def gvp(params, v, *data):  # (x, t): counted with a message naming this function
        v, data = validate(params, v, *data)
        return _like_params(product(params, v, *data), params)

    return program(where, gvp, validate)


def _gauss_newton_product(loss: Any, method: str, batch_size: Any, where: str) -> Callable:
    """`(params, v, x, t) -> Gv` on data already checked."""
    check_loss(loss, where)
    if not isinstance(loss, (SquaredError, CrossEntropy)):
        raise TypeError(
            f"{where}: needs a jprop.SquaredError or jprop.CrossEntropy loss (Gauss-Newton needs "
            f"the model and the loss apart); got {type_name(loss)}."
        )
    road = _road(loss, method, where)
    rule = _rules.closed_gauss_newton if road == "closed" else _rules.autodiff_gauss_newton
    product = lambda params, v, x, t: rule(loss, params, x, t, v)  # noqa: E731
    return _mean_of(product, _check_batch_size(loss, batch_size, where))


@dataclasses.dataclass(frozen=True)
class ParamSlice:
    """Where one parameter leaf lives in the flat vector: its path, slice and shape.

    Examples:
        >>> import jax, jprop
        >>> bias = jprop.param_layout(jprop.MLP((2, 3, 1)).init(jax.random.key(0)))[1]
        >>> bias.start, bias.stop, bias.shape  # the first layer's b, after its W
        (6, 9, (3,))
    """

    name: str
    start: int
    stop: int
    shape: tuple[int, ...]


def param_layout(params: Any) -> list[ParamSlice]:
    """The flat order used by the weight-space matrices (`ravel_pytree`): one entry per leaf.

    Examples:
        >>> import jax, jprop
        >>> first = jprop.param_layout(jprop.MLP((2, 3, 1)).init(jax.random.key(0)))[0]
        >>> first.start, first.stop, first.shape  # the first layer's W, named by its key path
        (0, 6, (3, 2))
    """
    layout, start = [], 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        size = int(np.prod(jnp.shape(leaf), dtype=int))
        layout.append(ParamSlice(jax.tree_util.keystr(path), start, start + size, jnp.shape(leaf)))
        start += size
    return layout


def _dense(product, params, data, max_bytes, where, what):
    flat, unravel = ravel_pytree(params)
    size = flat.size
    need = size * size * flat.dtype.itemsize
    if need > max_bytes:
        raise ValueError(
            f"{where}: the {what} over P = {size} parameters is a {size} × {size} matrix of "
            f"{flat.dtype}, {need / 2**20:.1f} MiB, over max_bytes = {max_bytes / 2**20:.1f} MiB. "
            f"Pass max_bytes={need} (or more) to allow it, or use matrix-free products and "
            "jprop.top_eigenpairs instead."
        )
    # Blocks of `width` products against unit vectors, written in place into the (P, P) result:
    # no P × P identity and no stacked copy beside it (the last block overlaps the one before).
    width = min(size, 64)

    def block(start):
        units = jax.nn.one_hot(start + jnp.arange(width), size, dtype=flat.dtype)
        return jax.vmap(lambda u: ravel_pytree(product(params, unravel(u), *data))[0])(units)

    def fill(index, out):
        start = jnp.minimum(index * width, size - width)
        return jax.lax.dynamic_update_slice(out, block(start), (start, 0))

    blocks = -(-size // width)
    return jax.lax.fori_loop(0, blocks, fill, jnp.zeros((size, size), flat.dtype))


def _matrix(loss: Any, product: Callable, max_bytes: int, where: str, what: str) -> Callable:
    """`(params, *data) -> (P, P)`: the matrix of `product` column by column, as one program."""
    validate = functools.partial(_validate_data, loss, where=where)

    def matrix(params, *data):
        data = validate(params, *data)
        return _like_flat_params(_dense(product, params, data, max_bytes, where, what), params)

    return program(where, matrix, validate)


@cached
def weight_hessian(
    loss: Any,
    *,
    method: str = "auto",
    max_bytes: int = 2**30,
    batch_size: int | None = None,
) -> Callable[..., jax.Array]:
    r"""The full weight Hessian as a (P, P) matrix over the flattened parameters, one HVP per column.

    Rows and columns follow `jprop.param_layout(params)`. Refuses, saying the size it would need,
    when P² values exceed `max_bytes` (default 1 GiB); raise it to allow more. `batch_size` as for
    `jprop.weight_hessian_vector_product`.

    **Returns:** a function `(params, *data) -> H`.


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> H = jprop.weight_hessian(jprop.SquaredError(net))(p, x, t)
        >>> H.shape, bool(jnp.allclose(H, H.T, atol=1e-6))  # P = 13 weights
        ((13, 13), True)
    """
    where = "jprop.weight_hessian"
    road = _road(loss, method, where)
    check_size(max_bytes, "max_bytes", where)
    product = _hvp_fn(loss, road, where, _check_batch_size(loss, batch_size, where))
    return _matrix(loss, product, max_bytes, where, "weight Hessian")


@cached
def gauss_newton(
    loss: SquaredError | CrossEntropy,
    *,
    method: str = "auto",
    max_bytes: int = 2**30,
    batch_size: int | None = None,
) -> Callable[..., jax.Array]:
    """The Gauss-Newton matrix (P, P), column by column from `gauss_newton_vector_product`; `max_bytes` and
    `batch_size` as for `jprop.weight_hessian`. **Returns:** a function `(params, x, t) -> G`.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> G = jprop.gauss_newton(jprop.SquaredError(net))(p, x, t)
        >>> G.shape, bool(jnp.linalg.eigvalsh(G).min() > -1e-6)  # positive semi-definite
        ((13, 13), True)
    """
    where = "jprop.gauss_newton"
    gvp = _gauss_newton_product(loss, method, batch_size, where)
    check_size(max_bytes, "max_bytes", where)
    return _matrix(loss, gvp, max_bytes, where, "Gauss-Newton matrix")


@cached
def weight_hessian_diagonal(
    loss: SquaredError | CrossEntropy | Any,
    *,
    exact: bool = False,
    max_bytes: int = 2**30,
    batch_size: int | None = None,
) -> Callable[..., Any]:
    r"""The diagonal of the weight Hessian, shaped like params.

    `exact=False`: Becker–LeCun's O(W) approximation for a `jprop.MLP` loss (exact output-layer
    second derivatives, off-diagonal terms dropped below; exact for a net with no hidden layer).
    `exact=True`: the diagonal of `jprop.weight_hessian`, for small nets and for comparison.
    `batch_size` as for `jprop.weight_hessian_vector_product`.

    **Returns:** a function `(params, *data) -> diagonal` (a pytree like params).


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> d = jprop.weight_hessian_diagonal(jprop.SquaredError(net))(p, x, t)
        >>> jax.tree.map(jnp.shape, d) == jax.tree.map(jnp.shape, p)
        True
    """
    where = "jprop.weight_hessian_diagonal"
    check_loss(loss, where)
    batch_size = _check_batch_size(loss, batch_size, where)
    if switch(exact, "exact", where):
        full = weight_hessian(loss, max_bytes=max_bytes, batch_size=batch_size)

        def diagonal(params, *data):
            return ravel_pytree(params)[1](jnp.diagonal(full(params, *data)))

        return diagonal
    if not (isinstance(loss, (SquaredError, CrossEntropy)) and isinstance(loss.f, MLP)):
        raise ValueError(
            f"{where}: the Becker–LeCun approximation needs jprop.SquaredError or "
            f"jprop.CrossEntropy of a jprop.MLP; got {type_name(loss)}. Pass exact=True for "
            "the exact diagonal of any loss."
        )
    rule = lambda params, _, x, t: _rules.becker_lecun(loss, params, x, t)  # noqa: E731
    chunked = _mean_of(rule, batch_size)
    validate = functools.partial(_validate_data, loss, where=where)

    def approximate(params, x, t):
        x, t = validate(params, x, t)
        return _like_params(chunked(params, None, x, t), params)

    return program(where, approximate, validate, ("params", "x", "t"))


@cached
def curvature_along(
    loss: Any, *, method: str = "auto", batch_size: int | None = None
) -> Callable[..., jax.Array]:
    r"""$v^\top H v / v^\top v$: the loss's curvature along the direction v (one HVP; `batch_size`
    as for `jprop.weight_hessian_vector_product`). A zero v has no curvature: an eager call refuses it with a
    `ValueError`; under `jax.jit`, where v's values are unknown when traced, the result is NaN.

    **Returns:** a function `(params, v, *data) -> scalar`.


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> jprop.curvature_along(jprop.SquaredError(net))(p, p, x, t).shape
        ()
    """
    where = "jprop.curvature_along"
    road = _road(loss, method, where)
    product = _hvp_fn(loss, road, where, _check_batch_size(loss, batch_size, where))
    validate = _directional(loss, where)

    def along(params, v, *data):  # vᵀHv / vᵀv, and whether vᵀv = 0
        v, data = validate(params, v, *data)
        flat_v = ravel_pytree(v)[0]
        flat_hv = ravel_pytree(_like_params(product(params, v, *data), params))[0]
        squared = flat_v @ flat_v
        return flat_v @ flat_hv / squared, squared == 0

    compiled = program(where, along, validate)

    def call(*args):  # (params, v, *data)
        value, zero = compiled(*args)
        if not isinstance(zero, jax.core.Tracer) and bool(zero):
            raise ValueError(
                f"{where}: `v` is zero, and a zero direction has no curvature (vᵀHv / vᵀv = "
                "0/0). Pass a non-zero direction."
            )
        return value

    return call


@cached
def top_eigenpairs(
    loss: Any,
    *,
    k: int = 1,
    num_iterations: int | None = None,
    method: str = "auto",
    operator: str = "hessian",
    batch_size: int | None = None,
) -> Callable[..., Eigenpairs]:
    r"""The k largest eigenvalues of the weight Hessian (or Gauss-Newton matrix) and their vectors.

    Lanczos with full reorthogonalisation on the matrix-free product (`weight_hessian_vector_product`, or
    `gauss_newton_vector_product` with `operator="gauss_newton"`), `num_iterations` steps (default
    min(P, 2k + 30)); the report's residuals say how far each pair is from converged.
    `batch_size` as for `jprop.weight_hessian_vector_product`.

    Every option is keyword-only, `k` included.

    **Returns:** a function `(params, *data, key=None) -> Eigenpairs`. `key` draws Lanczos's random
    start vector; without one the start is drawn from `jax.random.key(0)`, so repeated calls are
    deterministic (pass different keys to check that a result does not depend on the start).


    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 3, 1)); p = net.init(jax.random.key(0))
        >>> x, t = jnp.ones((4, 2)), jnp.zeros((4, 1))
        >>> pairs = jprop.top_eigenpairs(jprop.SquaredError(net), k=2)(p, x, t)
        >>> bool(pairs.eigenvalues[0] >= pairs.eigenvalues[1])
        True
    """
    where = "jprop.top_eigenpairs"
    batch_size = _check_batch_size(loss, batch_size, where)
    k = check_size(k, "k", where)
    if operator not in ("hessian", "gauss_newton"):
        raise ValueError(
            f"{where}: unknown operator {operator!r}; choose 'hessian' or 'gauss_newton'."
        )
    if num_iterations is not None:
        num_iterations = check_size(num_iterations, "num_iterations", where)
    if operator == "hessian":
        road = _road(loss, method, where)
        product = _hvp_fn(loss, road, where, batch_size)
    else:
        gvp = gauss_newton_vector_product(loss, method=method, batch_size=batch_size)
        product = lambda p, v, x, t: gvp(p, v, x, t)  # noqa: E731

    def run(params, data, start, steps):
        unravel = ravel_pytree(params)[1]
        matvec = lambda q: ravel_pytree(product(params, unravel(q), *data))[0]  # noqa: E731
        values, vectors, residuals = lanczos(matvec, start, steps, k)
        return values, jax.vmap(unravel)(vectors), residuals

    run = jax.jit(run, static_argnums=3)

    def eigenpairs(params, *data, key=None):
        data = _validate_data(loss, params, *data, where=where)
        flat = ravel_pytree(params)[0]
        size = flat.size
        steps = min(size, num_iterations or 2 * k + 30)
        if k > steps:
            raise ValueError(
                f"{where}: k = {k} eigenpairs need at least k Lanczos steps; num_iterations "
                f"gives {steps} (P = {size})."
            )
        key = jax.random.key(0) if key is None else as_key(key, where)
        start = jax.random.normal(key, (size,), flat.dtype)
        return Eigenpairs(*run(params, tuple(data), start, steps), steps)

    return broadcasting(eigenpairs)
