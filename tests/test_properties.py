"""Property tests over random architectures: every transform against float64 finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import FD_FLOOR, assert_close, normal
from hypothesis import given, settings
from hypothesis import strategies as st

import jprop


@st.composite
def networks(draw):
    n = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 5), min_size=0, max_size=3))
    m = draw(st.integers(1, 3))
    output = draw(st.sampled_from(["linear", "tansig", "logsig"] + (["softmax"] if m > 1 else [])))
    activation = draw(
        st.sampled_from(["tansig", "logsig", "purelin", "sin", "softplus", "silu", "gelu"])
    )
    return jprop.MLP((n, *hidden, m), activation=activation, output=output), draw(
        st.integers(0, 2**16)
    )


@settings(max_examples=6, deadline=None, derandomize=True)  # the same cases on every run
@given(networks())
def test_transforms_agree_with_finite_differences(case):
    net, seed = case
    params = net.init(jax.random.key(seed), jnp.float64)
    x = 2 * normal(seed, (2, net.sizes[0]))
    J, H, L = jax.jit(  # the three in one compiled program
        lambda p, x: [
            getattr(jprop, name)(net)(p, x) for name in ("jacobian", "hessian", "laplacian")
        ]
    )(params, x)
    assert_close(J, jprop.fd_jacobian(net)(params, x), 1e-7, "J", FD_FLOOR)
    assert_close(H, jprop.fd_hessian(net)(params, x), 1e-5, "H", FD_FLOOR)
    np.testing.assert_allclose(H, np.swapaxes(H, -1, -2), atol=1e-14)
    assert_close(L, np.trace(H, axis1=-2, axis2=-1), 1e-12, "L", 1e-12)
