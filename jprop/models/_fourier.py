"""Fourier features as the first layer of a `jprop.MLP`.

The embedding of Tancik et al. (2020) and Wang, Wang & Perdikaris (2021), γ(x) = [cos Bx, sin Bx]
with B ∈ ℝ^{F×n} drawn from N(0, s²), is a sine layer: cos z = sin(z + π/2), so

    γ(x) = sin(W x + b),   W = [B; B],   b = [π/2, …, π/2, 0, …, 0].

A `jprop.MLP` whose first hidden layer has 2F units and activation "sin" therefore computes a
Fourier-feature network exactly, and every closed form and hand-derived training rule of the MLP
applies to it unchanged (docs/howto/architectures.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._validation import check_size, float_dtype, positive_number


def fourier_features(
    key: jax.Array, n_inputs: int, features: int, *, scale: float = 1.0, dtype: Any = None
) -> dict[str, jax.Array]:
    r"""The first layer of a Fourier-feature network, $\gamma(x) = [\cos Bx, \sin Bx]$, as the
    parameters of a `jprop.MLP` sine layer.

    Since $\cos z = \sin(z + \pi/2)$, $\gamma(x) = \sin(Wx + b)$ with $W = [B; B]$ and
    $b = [\pi/2, \dots, \pi/2, 0, \dots, 0]$: put the returned dict first in the params of a
    `jprop.MLP((n, 2 * features, ...), activation=("sin", ...))` and the network is the
    Fourier-feature network, with every closed form. The field keeps $B$ fixed: hold it with
    `jax.lax.stop_gradient(params[0])` inside the loss (or mask it in the optimizer); left free,
    $W$ and $b$ train as an ordinary sine layer.

    **Arguments:**

    - `key`: a `jax.random.key` for $B$.
    - `n_inputs`: the input size n.
    - `features`: the number F of frequencies; the layer has 2F units.
    - `scale`: the standard deviation s of $B$'s entries (the field uses 1 to 10).
    - `dtype`: the parameters' dtype (default: JAX's default float).

    **Returns:** `{"W": (2F, n), "b": (2F,)}`.

    Examples:
        >>> import jax, jax.numpy as jnp, jprop
        >>> net = jprop.MLP((2, 16, 32, 1), activation=("sin", "tanh"))
        >>> params = net.init(jax.random.key(0))
        >>> params[0] = jprop.fourier_features(jax.random.key(1), 2, 8, scale=2.0)
        >>> B = params[0]["W"][:8]
        >>> x = jnp.array([0.3, -0.5])
        >>> gamma = jnp.sin(params[0]["W"] @ x + params[0]["b"])
        >>> bool(jnp.allclose(gamma, jnp.concatenate([jnp.cos(B @ x), jnp.sin(B @ x)]), atol=1e-6))
        True
    """
    where = "jprop.fourier_features"
    n_inputs = check_size(n_inputs, "n_inputs", where)
    features = check_size(features, "features", where)
    scale = positive_number(
        scale, "scale", where, "the standard deviation of B's entries", "1.0 or 10.0"
    )
    dtype = float_dtype(dtype, where)
    frequencies = scale * jax.random.normal(key, (features, n_inputs), dtype)
    phases = jnp.concatenate([jnp.full(features, jnp.pi / 2, dtype), jnp.zeros(features, dtype)])
    return {"W": jnp.concatenate([frequencies, frequencies]), "b": phases}
