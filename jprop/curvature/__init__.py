"""Curvature of a loss with respect to the weights.

- `_losses.py`: `jprop.SquaredError` and `jprop.CrossEntropy`, the losses with closed passes.
- `_weight_curvature.py`: Hessian- and Gauss-Newton-vector products, the matrices, the diagonal and
  the top eigenpairs.
- `_lanczos.py`: Lanczos with full reorthogonalisation, for the eigenpairs.

Users import every public name from `jprop` itself.
"""

__all__: list[str] = []  # internal: the public names are exported from jprop itself
