"""The models jprop knows the structure of, and the passes that run through them.

- `_mlp.py`: `jprop.MLP`, a dense network with one activation per layer.
- `_activations.py`: the activations, each with its hand-derived derivatives.
- `_passes.py`: J-prop's four passes through an MLP (forward, backward, R-forward, R-backward),
  the engine of the MLP's closed road and of its weight curvature.
- `_fourier.py`: Fourier features in front of an MLP.
- `_rbf.py`: Gaussian radial-basis-function networks (served by the generic road).
- `_equinox.py`: equinox interop.

The networks of layers (`jprop.Network`) live in `jprop/layers/`. Users import every public name
from `jprop` itself.
"""

__all__: list[str] = []  # internal: the public names are exported from jprop itself
