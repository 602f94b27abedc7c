"""Layer kinds for `jprop.Network`, each in its own module with its own derivative step.

Adding a kind: write a module with a frozen dataclass implementing `_base.Layer` (its width, its
parameters' shapes and initialiser, and one `jet` step in the operations of `_jet.py`), and export
it here. Every quantity jprop computes for a `Network` then covers it.
"""

from ._network import Network as Network
from ._network import modified_mlp as modified_mlp
from ._network import pirate_net as pirate_net
from .dense import Dense as Dense
from .fourier import FourierFeatures as FourierFeatures
from .gated import GatedDense as GatedDense
from .gated import Gates as Gates
from .periodic import PeriodicEmbedding as PeriodicEmbedding
from .pirate import PirateBlock as PirateBlock
from .residual import Residual as Residual

__all__ = [
    "Dense",
    "FourierFeatures",
    "GatedDense",
    "Gates",
    "PeriodicEmbedding",
    "PirateBlock",
    "Residual",
]
