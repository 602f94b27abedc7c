"""The losses the weight-curvature transforms read: `jprop.SquaredError` and `jprop.CrossEntropy`,
each a batch mean E = (1/B) Σ_b e(f(x_b), t_b) over data (x (B, n), t (B, m)), with the exact
diagonal of e's second derivative in the output layer's net input (Becker–LeCun's start)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .._program import type_name
from .._validation import check_batch_objective, per_example_outputs
from ..models._activations import activation_function
from ..models._mlp import MLP, Params


def check_data(loss, params, x, t, where) -> tuple[jax.Array, jax.Array]:
    """x and t checked, in the computation dtype (JAX's promotion of params and x, as for the
    input transforms); the transforms give weight-space results the params' dtypes. A
    cross-entropy's integer class labels become their one-hot rows first."""
    if isinstance(loss, CrossEntropy):
        t = loss.targets(t, x, where)
    x, _, checked = check_batch_objective(loss.f, params, x, where, t=(t, ("B", "m")))
    return x, checked["t"]


@dataclasses.dataclass(frozen=True)
class SquaredError:
    r"""$E = \frac1B\sum_b \tfrac12\|f(x_b) - t_b\|^2$ for any model `f`; a loss the curvature
    transforms read as data `(x (B, n), t (B, m))`. On a `jprop.MLP` they take the closed road.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 4, 1)); p = net.init(jax.random.key(0))
        >>> float(jprop.SquaredError(net)(p, jnp.zeros((3, 2)), net(p, jnp.zeros((3, 2)))))
        0.0
    """

    f: Any

    def __post_init__(self):
        if not callable(self.f):
            raise TypeError(
                "jprop.SquaredError: `f` must be the model, a callable f(params, x) such as a "
                f"jprop.MLP; got {type_name(self.f)}."
            )

    def __call__(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        return self.value(params, *check_data(self, params, x, t, "jprop.SquaredError"))

    def value(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        """The loss on checked data: x (B, n), t (B, m) (m = 1 for a scalar-output f)."""
        return self.total(params, x, t) / x.shape[0]

    def total(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        """Σ_b e(f(x_b), t_b) on checked data: the sum every curvature rule works with."""
        out = per_example_outputs(self.f, params, x)
        return 0.5 * jnp.sum((out - t) ** 2)

    def output_hessian_diagonal(self, net: MLP, params: Params, x, t) -> jax.Array:
        """diag ∂²e/∂(z^L)² per example, (B, m), exactly (m is small)."""
        output = activation_function(net.output)

        def e(z, ti):  # the per-example loss as a function of the output layer's net input
            return 0.5 * jnp.sum((output(z) - ti) ** 2)

        return _diagonal_of_hessian(e, logits(net, params, x), t)


@dataclasses.dataclass(frozen=True)
class CrossEntropy:
    r"""Cross-entropy for a `jprop.MLP` with a logsig (independent classes) or softmax output:
    $-\frac1B\sum_b\sum_k [t\log y + (1-t)\log(1-y)]$ or $-\frac1B\sum_b\sum_k t\log y$, computed
    from the output's net input so it stays finite when the output saturates.

    Targets `t` (B, m) need not sum to 1: soft labels, a row of zeros (a masked example) and a
    weighted one-hot row (an example's weight) are losses like any other, and the curvature
    transforms use their exact curvature, $(\sum_k t_k)(\mathrm{diag}\,y - yy^\top)$ for softmax.
    Integer class labels (B,) are accepted for a softmax output (optax's
    `softmax_cross_entropy_with_integer_labels` convention) and 0/1 integer labels (B, m) for
    logsig.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 4, 3), output="softmax"); p = net.init(jax.random.key(0))
        >>> E = jprop.CrossEntropy(net)(p, jnp.zeros((2, 2)), jnp.array([[1., 0, 0], [0, 1, 0]]))
        >>> bool(E > 0)
        True
    """

    f: MLP

    def __post_init__(self):
        if not isinstance(self.f, MLP) or self.f.output not in ("sigmoid", "softmax"):
            if isinstance(self.f, MLP):
                got = f"an MLP with output {self.f.output!r}"
            else:
                got = type(self.f).__name__
            raise ValueError(
                "jprop.CrossEntropy: needs a jprop.MLP with a 'sigmoid' or 'softmax' output (its "
                f"curvature is taken through the output's net input); got {got}. For other models "
                "write the loss as a function E(params, *data) and use the autodiff road."
            )

    def __call__(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        return self.value(params, *check_data(self, params, x, t, "jprop.CrossEntropy"))

    def targets(self, t: Any, x: Any, where: str) -> Any:
        """Integer targets as floats in x's dtype: class labels (B,) for a softmax output become
        one-hot rows (a label outside [0, m) gives a row of zeros, a masked example); 0/1 labels
        (B, m) for a logsig output are cast. Floating targets pass as they are."""
        try:
            dtype = jnp.result_type(t)
        except TypeError:
            return t  # not an array: check_data says so
        if not jnp.issubdtype(dtype, jnp.integer):
            return t
        t, m = jnp.asarray(t), self.f.n_outputs
        x_dtype = jnp.result_type(x)
        if not jnp.issubdtype(x_dtype, jnp.floating):
            return t  # x itself is refused by check_data
        if self.f.output == "softmax":
            if t.ndim != 1:
                raise ValueError(
                    f"{where}: integer targets for a softmax output are class labels of shape "
                    f"(B,), one per example; got shape {t.shape}. Pass labels (B,) or one-hot / "
                    f"soft targets of shape (B, {m}) as floats."
                )
            return jax.nn.one_hot(t, m, dtype=x_dtype)
        return t.astype(x_dtype)

    def value(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        """The loss on checked data: x (B, n), t (B, m)."""
        return self.total(params, x, t) / x.shape[0]

    def total(self, params: Any, x: jax.Array, t: jax.Array) -> jax.Array:
        """Σ_b e(z_b, t_b) on checked data: the sum every curvature rule works with."""
        return jnp.sum(jax.vmap(self._per_example)(logits(self.f, params, x), t))

    def _per_example(self, z, t):
        if self.f.output == "softmax":
            return -jnp.sum(t * jax.nn.log_softmax(z))
        return jnp.sum(jax.nn.softplus(z) - t * z)  # -[t log σ(z) + (1-t) log(1-σ(z))]

    def output_hessian_diagonal(self, net: MLP, params: Params, x, t) -> jax.Array:
        return _diagonal_of_hessian(self._per_example, logits(net, params, x), t)


def logits(net: MLP, params: Params, x) -> jax.Array:
    """z^L, the output layer's net input, (B, m)."""
    linear = MLP(net.sizes, activation=net.activations()[:-1] or "tanh", output="linear")
    return linear(params, x)


def _diagonal_of_hessian(e, z, t):
    return jax.vmap(lambda zi, ti: jnp.diagonal(jax.hessian(e)(zi, ti)))(z, t)
