"""The test runner's own economy for the user lane: tracing builds many short-lived Python
objects: at the collector's default thresholds a test file runs thousands of collections, each
full one scanning every live object, so collections run less often (as in tests/conftest.py). Nothing of
JAX's configuration or XLA's flags is set here: the lane runs them as a user does."""

import gc

gc.set_threshold(200_000, 50, 100)
