"""Docstring examples run as a user runs them: JAX's default config (float32, standard promotion),
scoped to each example, whatever tests/conftest.py sets for the test suite."""

import contextlib

import jax
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
