"""Derivatives with respect to the input, and second-order operators along input directions.

- `_transforms.py`: the public transforms (`jprop.jacobian`, `hessian`, `laplacian`,
  `hessian_diagonal`, `hessian_vector_product`, `R`, `hessian_trace`), each one program built from
  its quantity's record in `jprop/_dispatch.py`.
- `_closed.py`: the closed forms on a `jprop.MLP` over a batch.
- `_forward_laplacian.py`, `_trained_jacobian.py`, `_trained_curvature.py`: the hand-written
  tangent passes `jax.grad` runs through those closed forms.
- `_operators.py`: tr(σσᵀ∇²f), sampled and probed estimators, and tangents in chunks.

A `jprop.Network`'s passes are in `jprop/layers/_network.py`. Users import every public name from
`jprop` itself.
"""

__all__: list[str] = []  # internal: the public names are exported from jprop itself
