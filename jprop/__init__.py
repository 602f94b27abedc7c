"""jprop: exact input Jacobians, Hessians and Laplacians of feed-forward networks, and J-prop."""

import importlib.metadata as _metadata

from . import layers as layers
from ._activations import derivatives as derivatives
from ._activations import gelu as gelu
from ._activations import logsig as logsig
from ._activations import purelin as purelin
from ._activations import silu as silu
from ._activations import sin as sin
from ._activations import softmax as softmax
from ._activations import softplus as softplus
from ._activations import tansig as tansig
from ._check import check as check
from ._check import fd_hessian as fd_hessian
from ._check import fd_jacobian as fd_jacobian
from ._check import relative_error as relative_error
from ._devices import batch_sharding as batch_sharding
from ._devices import shard_batch as shard_batch
from ._dispatch import Road as Road
from ._dispatch import road as road
from ._equinox import equinox_function as equinox_function
from ._equinox import from_equinox as from_equinox
from ._equinox import to_equinox as to_equinox
from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._fourier import fourier_features as fourier_features
from ._jprop import bilinear as bilinear
from ._jprop import double_backprop as double_backprop
from ._jprop import jprop_u as jprop_u
from ._jprop import jprop_v as jprop_v
from ._lanczos import Eigenpairs as Eigenpairs
from ._losses import CrossEntropy as CrossEntropy
from ._losses import SquaredError as SquaredError
from ._mlp import MLP as MLP
from ._operators import unbiased_square as unbiased_square
from ._rbf import RBFNetwork as RBFNetwork
from ._regularisers import derivative_targets as derivative_targets
from ._regularisers import jacobian_penalty as jacobian_penalty
from ._regularisers import tangent_prop as tangent_prop
from ._transforms import R as R
from ._transforms import hessian as hessian
from ._transforms import hessian_diagonal as hessian_diagonal
from ._transforms import hessian_trace as hessian_trace
from ._transforms import hessian_vector_product as hessian_vector_product
from ._transforms import jacobian as jacobian
from ._transforms import laplacian as laplacian
from ._weight_curvature import ParamSlice as ParamSlice
from ._weight_curvature import curvature_along as curvature_along
from ._weight_curvature import gauss_newton as gauss_newton
from ._weight_curvature import gauss_newton_vector_product as gauss_newton_vector_product
from ._weight_curvature import param_layout as param_layout
from ._weight_curvature import top_eigenpairs as top_eigenpairs
from ._weight_curvature import weight_hessian as weight_hessian
from ._weight_curvature import weight_hessian_diagonal as weight_hessian_diagonal
from ._weight_curvature import weight_hessian_vector_product as weight_hessian_vector_product
from ._whole_jacobian import SpectralNorm as SpectralNorm
from ._whole_jacobian import SpectralState as SpectralState
from ._whole_jacobian import log_abs_det_jacobian as log_abs_det_jacobian
from .layers import Network as Network
from .layers import modified_mlp as modified_mlp
from .layers import pirate_net as pirate_net

try:
    __version__ = _metadata.version("jprop")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
