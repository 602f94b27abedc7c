"""Architectures, parameters and tolerances shared by the tests."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import jprop

# Several depths (1-4), n != m, m = 1, every output activation, both hidden activations; named
# for what each one covers, so a test that needs a property says which.
WIDER_IN = jprop.MLP((3, 5, 2))  # n > m, one hidden layer
SCALAR_OUT = jprop.MLP((4, 6, 5, 1))  # m = 1, two hidden layers
LOGSIG = jprop.MLP((2, 7, 3), activation="logsig", output="tansig")  # n < m, curved output
DEEP = jprop.MLP((5, 4, 4, 4, 3), output="logsig")  # three hidden layers
SOFTMAX = jprop.MLP((3, 6, 4), output="softmax")
ONE_INPUT = jprop.MLP((1, 10, 1))  # n = 1
NO_HIDDEN = jprop.MLP((4, 3), output="tansig")
LINEAR_HIDDEN = jprop.MLP((2, 3, 3, 2), activation="purelin")
ARCHITECTURES = [WIDER_IN, SCALAR_OUT, LOGSIG, DEEP, SOFTMAX, ONE_INPUT, NO_HIDDEN, LINEAR_HIDDEN]
ARCH_IDS = ["-".join(map(str, a.sizes)) + f"-{a.activation}-{a.output}" for a in ARCHITECTURES]

DTYPES = [jnp.float32, jnp.float64]

# Normwise relative error allowed, keyed by dtype. Float32 carries ~1e-7 rounding per operation and
# the paths differ in summation order; float64 against float64 autodiff agrees to ~1e-14.
TOL_EXACT = {jnp.float32: 2e-5, jnp.float64: 1e-11}
# Against float64 central differences the oracle itself has O(eps²) truncation error: ~1e-9 for
# first and up to ~1e-6 for second derivatives at the default steps, so float64 cannot be held
# tighter than that.
TOL_FD = {jnp.float32: 5e-5, jnp.float64: 1e-5}
# Second differences carry an absolute rounding floor of ~1e-16/eps² = 1e-8 times |f|: references
# smaller than FD_FLOOR (a linear net's zero Hessian) are compared absolutely: error <= tol * FD_FLOOR.
FD_FLOOR = 1e-2


def params_and_input(net, dtype, seed=0, batch=()):
    """Random parameters (biases non-zero) and an input of shape batch + (n,)."""
    params = net.init(jax.random.key(seed), dtype)
    return params, normal(seed, tuple(batch) + (net.sizes[0],), dtype)


def normal(seed, shape, dtype=jnp.float64):
    """Standard normal numbers drawn by NumPy, put on the device: a test's inputs cost no compiled
    program (each new shape drawn eagerly by `jax.random`, or copied by `jnp.asarray`, compiles
    one)."""
    return jax.device_put(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def cosines_like(tree):
    """cos(0), cos(1), ... in each leaf's shape and dtype: a fixed direction (NumPy, no compiled
    program)."""
    return jax.tree.map(
        lambda a: jax.device_put(np.cos(np.arange(a.size)).reshape(a.shape).astype(a.dtype)), tree
    )


def flat(tree):
    """Every leaf of a pytree, raveled into one NumPy vector (the order of ravel_pytree)."""
    leaves = [np.ravel(np.asarray(leaf)) for leaf in jax.tree.leaves(tree)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def dense_jacobian(f, params, x):
    """J (B, m, n) by jax.jacfwd per example: the dense oracle."""
    return jax.vmap(lambda xi: jax.jacfwd(lambda v: f(params, v))(xi))(x)


def assert_close(a, b, tol, what="", floor=0.0):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shapes {a.shape} != {b.shape}"
    err = jprop.relative_error(a, b, floor)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def central_differences(fn, point, eps=1e-6):
    """float64 central differences of the scalar fn at the flat point, one compiled program."""
    point = np.asarray(point)
    steps = eps * np.eye(point.size, dtype=point.dtype)
    values = np.asarray(
        jax.jit(lambda w: jax.lax.map(fn, w))(np.concatenate([point + steps, point - steps]))
    )
    return (values[: point.size] - values[point.size :]) / (2 * eps)


def pair(objective):
    """`(value, grads)` of a jprop loss, jitted as a training step is (one program to compile;
    tests/test_citizen.py takes the gradient of objectives eagerly too)."""
    return jax.jit(jax.value_and_grad(objective))


def swap_road(monkeypatch, quantity, **fields):
    """Replace what `quantity`'s record computes on a road (`closed=`, `trained=`, ...) for one
    test, with transforms rebuilt; returns the original record."""
    from jprop import _dispatch, _program

    record = _dispatch.REGISTRY[quantity]
    monkeypatch.setitem(_dispatch.REGISTRY, quantity, dataclasses.replace(record, **fields))
    _program.clear_caches()
    return record


def first_tangents_by_slices(monkeypatch) -> tuple[list, bool]:
    """Make the Laplacian's rule keep its first layer's tangents by their factors and form them
    by slices of the batch (`_forward_laplacian.FirstTangents`) whatever their size, for a test on
    a small batch; returns the list that each slicing appends its s1's shape to, and whether the
    slices run at all: not under a JAX that cannot transpose a loop inside a rule
    (`_closed.RULES_MAY_LOOP`), where the rule keeps the whole arrays."""
    from jprop.quantities import _closed, _forward_laplacian

    slices = []
    second_layer = _forward_laplacian.FirstTangents.second_layer
    monkeypatch.setattr(_forward_laplacian, "RECOMPUTED_FROM", 0)
    monkeypatch.setattr(
        _forward_laplacian.FirstTangents,
        "second_layer",
        lambda self, dw, w: slices.append(self.s1.shape) or second_layer(self, dw, w),
    )
    return slices, _closed.RULES_MAY_LOOP
