"""The source question answered: the Jacobian and Hessian of a tansig network's output at an input.

A question often asked about MATLAB networks has A = W_n tansig(... tansig(W_1 I + B_1) ...) + B_n
and gets as far as the Jacobian product J = W_n D_{n-1} W_{n-1} ... D_1 W_1; the Hessian is never
delivered (docs/math.md §1 lists the mistakes made along the way). jprop gives both, exactly, and
this script checks them against float64 central differences and against JAX's own autodiff.

Run: python examples/jacobian_hessian.py
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jprop


def main() -> dict[str, float]:
    sizes = (4, 16, 16, 3)
    net = jprop.MLP(sizes, activation="tansig", output="linear")
    params = net.init(jax.random.key(0), jnp.float32)
    x = jnp.linspace(-1.0, 1.0, sizes[0], dtype=jnp.float32)

    # The closed forms, forced: on a net this small `method="auto"` hands the Jacobian (m < n) and
    # the Hessian to JAX's own transforms, which are as fast there.
    J = jprop.jacobian(net, method="closed")(params, x)
    H = jprop.hessian(net, method="closed")(params, x)
    L = jprop.laplacian(net)(params, x)

    np.set_printoptions(precision=4, suppress=True)
    print(f"network {sizes}, tansig hidden units, linear output; input x = {np.asarray(x)}")
    print(f"f(x) = {np.asarray(net(params, x))}")
    print(f"Jacobian J = df/dx, shape {J.shape}:\n{np.asarray(J)}")
    print(
        f"Hessian of output 0, d2f_0/dx2, shape {H.shape[1:]} (one per output):\n{np.asarray(H[0])}"
    )
    print(f"Laplacian (trace of each Hessian): {np.asarray(L)}")

    errors = {
        "jacobian": jprop.check(jprop.jacobian, net, params, x, method="closed"),
        "hessian": jprop.check(jprop.hessian, net, params, x, method="closed"),
        "laplacian": jprop.check(jprop.laplacian, net, params, x),
    }
    for name, err in errors.items():
        print(f"{name:9s} vs float64 central differences: relative error {err:.1e}")
    # The closed forms against JAX's own autodiff (jax.jacfwd, jax.hessian) on the same numbers.
    autodiff = {
        "jacobian": jax.jacfwd(lambda v: net(params, v))(x),
        "hessian": jax.hessian(lambda v: net(params, v))(x),
    }
    agreement = {
        "jacobian": jprop.relative_error(J, autodiff["jacobian"]),
        "hessian": jprop.relative_error(H, autodiff["hessian"]),
    }
    for name, err in agreement.items():
        print(f"{name:9s} closed form vs jax autodiff: relative error {err:.1e}")
    # float32 arithmetic against a float64 oracle: ~1e-7 rounding, so 1e-4 is a generous bound;
    # two float32 computations of the same quantity agree to a few roundings.
    assert all(err < 1e-4 for err in errors.values()), errors
    assert all(err < 1e-5 for err in agreement.values()), agreement
    return errors


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help only
    main()
