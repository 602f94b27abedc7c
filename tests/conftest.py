"""Global test configuration, set once: float64 available, strict dtype promotion."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


import pytest  # noqa: E402

from jprop import _dispatch  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_transforms():
    """Transforms are cached by construction; a test that swaps an internal rule must not get one
    built by an earlier test."""
    _dispatch.clear_caches()
    yield
