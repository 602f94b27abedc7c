"""Docstring examples run as a user runs them: JAX's default config (float32, standard promotion),
scoped to each example, whatever tests/conftest.py sets for the test suite.

The suite is dominated by XLA compiling hundreds of small programs, so it asks the CPU backend for
its lowest LLVM optimisation level (measured 25% less wall time); results are checked against
oracles with tolerances, never timed here. Benchmarks run as scripts, at the default level.
"""

import contextlib
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

import jax  # noqa: E402  (after XLA_FLAGS, which XLA reads when its backend starts)
import pytest


@pytest.fixture(autouse=True)
def _user_config_for_doctests(request):
    if isinstance(request.node, pytest.DoctestItem):
        with contextlib.ExitStack() as stack:
            stack.enter_context(jax.enable_x64(False))
            stack.enter_context(jax.numpy_dtype_promotion("standard"))
            yield
    else:
        yield
