"""The closed road equals the autodiff road on random MLPs, dtype pairs (float16, bfloat16,
float32, float64), input scales, batch shapes, quantities and targets, as users run jprop
(user_lane/differential.py says what a case is and what fails it)."""

import jax.numpy as jnp
from differential import cases, check
from hypothesis import HealthCheck, given, settings

DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


@settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(cases(DTYPES))
def test_the_closed_road_equals_the_autodiff_road(case):
    check(case)
