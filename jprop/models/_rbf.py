"""Gaussian radial-basis-function networks: the second model family, served by the generic road."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from .._program import broadcasting
from .._validation import (
    as_float_array,
    as_key,
    check_input,
    check_size,
    float_dtype,
    not_params,
)


@dataclasses.dataclass(frozen=True)
class RBFNetwork:
    r"""$f(x) = W\,\phi(x) + b$ with $\phi_j(x) = \exp(-\|x - c_j\|^2 / (2 s_j^2))$, $s_j = e^{\ell_j}$.

    Flake & Pearlmutter name RBF networks as a model J-prop covers; jprop serves them through the
    generic autodiff road, which makes this class the proof that the road works beyond MLPs.

    **Arguments:** `n_inputs`, `n_centers`, `n_outputs`: positive ints.

    Parameters: `{"centers": (k, n), "log_widths": (k,), "W": (m, k), "b": (m,)}`.

    Examples:
        >>> import jax, jprop
        >>> rbf = jprop.RBFNetwork(2, 5, 3)
        >>> rbf(rbf.init(jax.random.key(0)), jax.numpy.zeros(2)).shape
        (3,)
    """

    n_inputs: int
    n_centers: int
    n_outputs: int

    def __post_init__(self):
        for name in ("n_inputs", "n_centers", "n_outputs"):
            check_size(getattr(self, name), name, "RBFNetwork")

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        n, k, m = self.n_inputs, self.n_centers, self.n_outputs
        return {"centers": (k, n), "log_widths": (k,), "W": (m, k), "b": (m,)}

    def init(self, key: jax.Array, dtype: Any = None) -> dict[str, jax.Array]:
        """Centres uniform in [-1, 1]^n, widths 1, output weights N(0, 1/k), bias 0, in `dtype`, a
        floating dtype (default: JAX's default float type, as for `jprop.MLP.init`)."""
        dtype = float_dtype(dtype, "jprop.RBFNetwork.init")
        kc, kw = jax.random.split(as_key(key, "jprop.RBFNetwork.init"))
        shapes = self._shapes()
        return {
            "centers": jax.random.uniform(kc, shapes["centers"], dtype, -1.0, 1.0),
            "log_widths": jnp.zeros(shapes["log_widths"], dtype),
            "W": jax.random.normal(kw, shapes["W"], dtype) / self.n_centers**0.5,
            "b": jnp.zeros(shapes["b"], dtype),
        }

    def check_params(self, params: Any, where: str = "RBFNetwork") -> dict[str, jax.Array]:
        shapes = self._shapes()
        if not isinstance(params, dict) or set(params) != set(shapes):
            wrong_type = not isinstance(params, dict)
            got = not_params(params) if wrong_type else sorted(params)
            raise (TypeError if wrong_type else ValueError)(
                f"{where}: params must be a dict with keys {sorted(shapes)}; got {got}."
            )
        for name, expected in shapes.items():
            value = as_float_array(params[name], f"params['{name}']", where)
            if value.shape != expected:
                raise ValueError(
                    f"{where}: params['{name}'] must have shape {expected}; got {value.shape}."
                )
        return params

    @broadcasting
    def __call__(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        """`x` of shape `(n,)` or `(..., n)` gives `(m,)` or `(..., m)`."""
        params = self.check_params(params)
        x = check_input(x, "RBFNetwork", self.n_inputs)
        sq = jnp.sum((x[..., None, :] - params["centers"]) ** 2, axis=-1)
        phi = jnp.exp(-0.5 * sq * jnp.exp(-2 * params["log_widths"]))
        return phi @ params["W"].T + params["b"]
