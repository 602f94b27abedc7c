"""jprop: exact input Jacobians, Hessians and Laplacians of feed-forward networks, and J-prop."""

import importlib.metadata as _metadata

from . import layers as layers
from ._check import check as check
from ._check import fd_hessian as fd_hessian
from ._check import fd_jacobian as fd_jacobian
from ._check import relative_error as relative_error
from ._dispatch import Road as Road
from ._dispatch import road as road
from .curvature._lanczos import Eigenpairs as Eigenpairs
from .curvature._losses import CrossEntropy as CrossEntropy
from .curvature._losses import SquaredError as SquaredError
from .curvature._weight_curvature import ParamSlice as ParamSlice
from .curvature._weight_curvature import curvature_along as curvature_along
from .curvature._weight_curvature import gauss_newton as gauss_newton
from .curvature._weight_curvature import gauss_newton_vector_product as gauss_newton_vector_product
from .curvature._weight_curvature import param_layout as param_layout
from .curvature._weight_curvature import top_eigenpairs as top_eigenpairs
from .curvature._weight_curvature import weight_hessian as weight_hessian
from .curvature._weight_curvature import weight_hessian_diagonal as weight_hessian_diagonal
from .curvature._weight_curvature import (
    weight_hessian_vector_product as weight_hessian_vector_product,
)
from .layers import Network as Network
from .layers import modified_mlp as modified_mlp
from .layers import pirate_net as pirate_net
from .models._activations import derivatives as derivatives
from .models._activations import gelu as gelu
from .models._activations import logsig as logsig
from .models._activations import purelin as purelin
from .models._activations import silu as silu
from .models._activations import sin as sin
from .models._activations import softmax as softmax
from .models._activations import softplus as softplus
from .models._activations import tansig as tansig
from .models._equinox import equinox_function as equinox_function
from .models._equinox import from_equinox as from_equinox
from .models._equinox import to_equinox as to_equinox
from .models._fourier import fourier_features as fourier_features
from .models._mlp import MLP as MLP
from .models._rbf import RBFNetwork as RBFNetwork
from .objectives._jprop import bilinear as bilinear
from .objectives._jprop import double_backprop as double_backprop
from .objectives._jprop import jprop_u as jprop_u
from .objectives._jprop import jprop_v as jprop_v
from .objectives._regularisers import derivative_targets as derivative_targets
from .objectives._regularisers import jacobian_penalty as jacobian_penalty
from .objectives._regularisers import tangent_prop as tangent_prop
from .objectives._whole_jacobian import SpectralNorm as SpectralNorm
from .objectives._whole_jacobian import SpectralState as SpectralState
from .objectives._whole_jacobian import log_abs_det_jacobian as log_abs_det_jacobian
from .quantities._operators import unbiased_square as unbiased_square
from .quantities._transforms import R as R
from .quantities._transforms import hessian as hessian
from .quantities._transforms import hessian_diagonal as hessian_diagonal
from .quantities._transforms import hessian_trace as hessian_trace
from .quantities._transforms import hessian_vector_product as hessian_vector_product
from .quantities._transforms import jacobian as jacobian
from .quantities._transforms import laplacian as laplacian
from .training._devices import batch_sharding as batch_sharding
from .training._devices import shard_batch as shard_batch
from .training._fit import FitResult as FitResult
from .training._fit import fit as fit

try:
    __version__ = _metadata.version("jprop")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
