"""The cost of calling a transform eagerly, rebuilt inline on every call, against the same call
jitted once: what a user pays for writing `jprop.hessian(net)(params, x)` in a loop.

Both are timed with `jax.block_until_ready`, median of many calls after a warm-up; the ratio is
eager / jitted. For scale, eager `vmap(jax.hessian)` (JAX traces it per call) is timed too.

Run from the repository root: python -m benchmarks.eager [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

import jprop
from benchmarks import harness


def _median_ms(call, repeats: int) -> float:
    jax.block_until_ready(call())  # warm-up: the first call compiles
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(quick: bool = False) -> dict:
    repeats = 20 if quick else 200
    net = jprop.MLP((4, 32, 32, 2))
    params = net.init(jax.random.key(0), jnp.float32)
    x = jax.random.normal(jax.random.key(1), (64, 4), jnp.float32)
    jitted = jax.jit(jprop.hessian(net))
    rows = {
        "jprop.hessian(net)(params, x), rebuilt per call": lambda: jprop.hessian(net)(params, x),
        "jax.jit(jprop.hessian(net)), built once": lambda: jitted(params, x),
        "jax.vmap(jax.hessian(f)) eager": lambda: jax.vmap(jax.hessian(lambda v: net(params, v)))(
            x
        ),
    }
    times = {name: _median_ms(call, repeats) for name, call in rows.items()}
    for name, ms in times.items():
        print(f"{name:52s} {ms:8.3f} ms")
    names = list(times)
    ratio = times[names[0]] / times[names[1]]
    print(f"eager rebuilt / jitted: {ratio:.2f}×")
    harness.agree({name: rows[name]() for name in names[:2]}, names[1], names[:1], "eager", 1e-5)
    return {"times_ms": times, "ratio": ratio}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (smoke test)")
    main(parser.parse_args().quick)
