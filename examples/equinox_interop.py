"""An equinox model through jprop: the generic road as it is, and the closed forms after conversion.

1. `jprop.equinox_function` splits an `eqx.nn.MLP` into `f(params, x)` and its arrays, so every
   jprop transform (here the input Hessian and a J-prop gradient) runs on it by autodiff.
2. `jprop.from_equinox` turns the same model into a `jprop.MLP` and params: the closed forms give
   the same Hessian, and the script times both roads.
3. The converted net is trained on derivative targets with J-prop, and `jprop.to_equinox` hands
   the trained weights back as an `eqx.nn.MLP`.

Run: python examples/equinox_interop.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import jprop


def _median_ms(fn, *args, repeats):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def main(quick: bool = False) -> dict:
    width, batch = (16, 32) if quick else (64, 256)
    model = eqx.nn.MLP(8, 3, width, 2, activation=jnp.tanh, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (batch, 8))

    f, arrays = jprop.equinox_function(model)  # 1. the generic road
    h_generic = jprop.hessian(f)(arrays, x)
    net, params = jprop.from_equinox(model)  # 2. the closed forms
    h_closed = jprop.hessian(net)(params, x)
    error = jprop.relative_error(h_closed, h_generic)
    repeats = 3 if quick else 20
    ms_generic = _median_ms(jprop.hessian(f), arrays, x, repeats=repeats)
    ms_closed = _median_ms(jprop.hessian(net), params, x, repeats=repeats)
    print(f"eqx.nn.MLP(8 -> {width} -> {width} -> 3, tanh) is jprop.MLP{net.sizes}")
    print(f"input Hessians {h_closed.shape}: closed vs generic road differ by {error:.1e}")
    print(f"time: generic road {ms_generic:.2f} ms, closed forms {ms_closed:.2f} ms")

    # 3. train the converted net so that ∂f_0/∂x_0 = 1 everywhere (a J-prop objective), return it
    v = jnp.zeros_like(x).at[:, 0].set(1.0)
    b = jnp.zeros((batch, 3)).at[:, 0].set(1.0)
    with jax.numpy_dtype_promotion("standard"):
        result = jprop.fit(
            jprop.jprop_v(net),
            params,
            x,
            v,
            b,
            optimizer=optax.adam(1e-2),
            steps=50 if quick else 300,
            progress=False,
        )
    trained = jprop.to_equinox(net, result.params)
    same = jprop.relative_error(jax.vmap(trained)(x), net(result.params, x))
    slope = jax.vmap(jax.jacfwd(trained))(x)[:, 0, 0]
    print(
        f"J-prop training: E_v {result.history[0]:.3f} -> {result.history[-1]:.4f}; the "
        f"returned eqx.nn.MLP matches to {same:.0e}, mean ∂f_0/∂x_0 = {float(slope.mean()):.3f}"
    )
    assert error < 1e-5 and same < 1e-6
    assert result.history[-1] < 0.1 * result.history[0]
    return {"error": error, "ms_generic": ms_generic, "ms_closed": ms_closed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
