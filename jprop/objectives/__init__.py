"""Scalar losses on the input Jacobian, with their exact gradients in the weights.

- `_jprop.py`: J-prop (Flake & Pearlmutter 1999): `jprop.bilinear`, `jprop_u`, `jprop_v` and
  `double_backprop`, on an MLP's four passes, a Network's layer steps, or JAX's compositions.
- `_regularisers.py`: Tangent Prop, derivative targets (Sobolev training) and the Jacobian
  penalty, built on those objectives.
- `_whole_jacobian.py`: functions of the whole Jacobian: its spectral norm and log|det J|.

Users import every public name from `jprop` itself.
"""

__all__: list[str] = []  # internal: the public names are exported from jprop itself
