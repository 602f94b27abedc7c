"""The test runner's own economy for the user lane: tracing builds many short-lived Python
objects, and the collector's default thresholds run a full collection over every live one
thousands of times per file, so collections run less often (as in tests/conftest.py). Nothing of
JAX's configuration or XLA's flags is set here: the lane runs them as a user does."""

import gc

gc.set_threshold(200_000, 50, 100)
