"""Docstring examples run as a user runs them: JAX's default config (float32, standard promotion),
scoped to each example, whatever tests/conftest.py sets for the test suite.

The suite is dominated by XLA compiling hundreds of small programs, so it asks the CPU backend for
its lowest LLVM optimisation level (measured 25% less wall time) and for its older loop emitters
in place of the MLIR fusion emitters (a further 30-35% on test_transforms/test_jprop), where this
XLA knows that flag; XLA aborts on flags it does not know, so a child process tries it first.
Results are checked against oracles with tolerances, never timed here. Benchmarks run as
scripts, with XLA's defaults.
"""

import contextlib
import os
import subprocess
import sys

import pytest

_FAST_COMPILE = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flag: str) -> bool:
    probe = "import jax; jax.devices()"
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    return (
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0
    )


_flags = os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
if _xla_accepts(_FAST_COMPILE):
    _flags += " " + _FAST_COMPILE
os.environ["XLA_FLAGS"] = _flags.strip()

import jax  # noqa: E402  (after XLA_FLAGS, which XLA reads when its backend starts)


@pytest.fixture(autouse=True)
def _user_config_for_doctests(request):
    if isinstance(request.node, pytest.DoctestItem):
        with contextlib.ExitStack() as stack:
            stack.enter_context(jax.enable_x64(False))
            stack.enter_context(jax.numpy_dtype_promotion("standard"))
            yield
    else:
        yield
