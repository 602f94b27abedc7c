"""The differential test: the closed road against the autodiff road, drawn by hypothesis.

A case is an MLP (depth, widths, an activation per hidden layer from all of jprop's, an output
kind), a dtype for its params and one for x, inputs from ordinary to the input dtype's overflow
scale, a batch shape (empty, one, odd, rank 2), and one of: an input quantity with the gradient in
the params of a weighted sum of it (which runs its hand-written tangent rule), a J-prop objective
with its gradient, or a weight-curvature product, for a cross-entropy with targets one-hot, masked,
weighted, soft or integer labels. Both roads compute it in the dtypes drawn; the autodiff road
again in float64 from the same (rounded) numbers is the reference.

A case fails when
- one road raises and the other does not (or they raise different errors);
- the closed road gives NaN or inf where the autodiff road is finite;
- the autodiff road is accurate (within 10% of the reference) and the closed road is less accurate
  than `max(4 × the autodiff road's error, 100 × the condition, TOLERANCE[promoted dtype])`,
  errors normwise relative to the reference (its largest entry's magnitude); the condition is how
  far the reference moves when every input is rounded once at the promoted precision. Where the
  autodiff road has itself lost the answer (a sine of 1e19, an overflowing silu) only finiteness
  is compared.

`user_lane/test_differential.py` runs it as users run jprop: JAX's default configuration and XLA's
default flags, with float64 enabled (`jax.enable_x64`) for the cases that draw it.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import jprop

HIDDEN = ["tanh", "sigmoid", "identity", "sin", "softplus", "silu", "gelu"]
OUTPUTS = ["linear", "tanh", "sigmoid", "softmax"]
INPUT_QUANTITIES = ["jacobian", "hessian", "laplacian", "hessian_diagonal"]
OBJECTIVES = {  # name -> the arguments after x: (space, ...) with "m" output, "n" input, "" scalar
    "bilinear": ("m", "n"),
    "jprop_u": ("m", "n"),
    "jprop_v": ("n", "m"),
    "double_backprop": ("m", ""),
}
CURVATURE = ["weight_hessian_vector_product", "gauss_newton_vector_product"]
QUANTITIES = INPUT_QUANTITIES + ["hessian_vector_product", "R"] + list(OBJECTIVES) + CURVATURE
TARGETS = ["one-hot", "masked", "weighted", "soft", "integer"]
SCALES = ["ordinary", "large", "overflow"]
LEADS = [(0,), (1,), (3,), (2, 2)]

# Normwise relative error the closed road may always have, by promoted dtype: half its digits,
# √eps (float16 3.1e-2, bfloat16 8.8e-2, float32 3.5e-4, float64 1.5e-8). The two roads evaluate
# the same formulas in different orders, and a saturated unit's 1 − tanh² amplifies one rounding
# of tanh by up to 1/(1 − tanh²); a wrong formula is off by O(1), a computation at a lower
# precision than the promoted one by that precision's epsilon (bfloat16 params with float32 x:
# 5e-3; float32 params with float64 x: 5e-8): both beyond it.
TOLERANCE = {
    jnp.dtype(d): float(np.sqrt(jnp.finfo(d).eps))
    for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
}


@st.composite
def cases(draw, dtypes):
    """One case for `check`: a dict of what was drawn."""
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 5), max_size=3))
    activations = tuple(draw(st.sampled_from(HIDDEN)) for _ in hidden)
    output = draw(st.sampled_from(OUTPUTS if m > 1 else OUTPUTS[:3]))
    quantity = draw(st.sampled_from(QUANTITIES))
    net = jprop.MLP((n, *hidden, m), activation=activations or "tanh", output=output)
    return {
        "net": net,
        "params_dtype": draw(st.sampled_from(dtypes)),
        "x_dtype": draw(st.sampled_from(dtypes)),
        "scale": draw(st.sampled_from(SCALES)),
        "lead": draw(st.sampled_from(LEADS)),
        "quantity": quantity,
        "loss": draw(st.sampled_from(["squared", "cross_entropy"])),
        "targets": draw(st.sampled_from(TARGETS)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _promoted(case) -> jnp.dtype:
    with jax.numpy_dtype_promotion("standard"):
        return jnp.dtype(jnp.promote_types(case["params_dtype"], case["x_dtype"]))


def _data(case):
    """params, x and the quantity's other arguments, as numpy float64 (rounded to the dtypes
    drawn), and how to build the computation from them at a given road."""
    net, lead = case["net"], case["lead"]
    rng = np.random.default_rng(case["seed"])
    n, m = net.n_inputs, net.n_outputs
    scale = {
        "ordinary": 1.0,
        "large": 1e2,
        "overflow": float(np.sqrt(float(jnp.finfo(case["x_dtype"]).max))),  # x² overflows
    }[case["scale"]]

    def rounded(array, dtype):  # the numbers the dtype holds (float64 is held as it is)
        if jnp.dtype(dtype) == jnp.float64:
            return np.asarray(array, np.float64)
        return np.asarray(jnp.asarray(array, dtype)).astype(np.float64)

    params = [
        {
            "W": rounded(rng.normal(0, 1 / np.sqrt(a), (b, a)), case["params_dtype"]),
            "b": rounded(rng.normal(0, 0.5, b), case["params_dtype"]),
        }
        for a, b in zip(net.sizes[:-1], net.sizes[1:])
    ]
    x = rounded(scale * rng.normal(size=lead + (n,)), case["x_dtype"])
    space = {"n": lead + (n,), "m": lead + (m,)}
    quantity = case["quantity"]
    if quantity in OBJECTIVES:
        extra = [
            rounded(rng.normal(size=space[s]), case["x_dtype"]) if s else 0.3
            for s in OBJECTIVES[quantity]
        ]
    elif quantity == "hessian_vector_product":
        extra = [rounded(rng.normal(size=space[s]), case["x_dtype"]) for s in ("m", "n")]
    elif quantity == "R":
        extra = [rounded(rng.normal(size=space["n"]), case["x_dtype"])]
    elif quantity in CURVATURE:
        batch = int(np.prod(lead))
        x = x.reshape(batch, n)
        extra = [_targets(case, rng, batch, m)]
    else:
        extra = []
    return params, x, extra


def _targets(case, rng, batch, m):
    net, kind = case["net"], case["targets"]
    if not _cross_entropy(case):
        return rng.normal(size=(batch, m))
    labels = rng.integers(0, m, batch)
    one_hot = np.eye(m)[labels]
    if net.output == "sigmoid":
        one_hot = rng.integers(0, 2, (batch, m)).astype(np.float64)
    if kind == "integer":
        return labels if net.output == "softmax" else one_hot.astype(np.int32)
    if kind == "masked":
        return one_hot * (rng.random((batch, 1)) < 0.5)
    if kind == "weighted":
        return one_hot * rng.uniform(0, 3, (batch, 1))
    if kind == "soft":
        return rng.uniform(0, 1, (batch, m))
    return one_hot


def _cross_entropy(case) -> bool:
    return case["loss"] == "cross_entropy" and case["net"].output in ("sigmoid", "softmax")


def _compute(case, method, params, x, extra, dtypes):
    """The quantity on one road, in `dtypes` = (params dtype, x dtype): a flat float64 vector."""
    net, quantity = case["net"], case["quantity"]
    params = jax.tree.map(lambda a: jnp.asarray(a, dtypes[0]), params)
    x = jnp.asarray(x, dtypes[1])
    extra = [
        e if np.isscalar(e) else jnp.asarray(e, e.dtype if e.dtype.kind == "i" else dtypes[1])
        for e in extra
    ]
    if quantity in INPUT_QUANTITIES + ["hessian_vector_product", "R"]:
        transform = getattr(jprop, quantity)(net, method=method)
        out = transform(params, x, *extra)
        if quantity != "R":  # and the hand-written rule jax.grad runs: a weighted sum's gradient
            weights = jnp.cos(jnp.arange(out.size, dtype=out.dtype)).reshape(out.shape)
            total = lambda p: jnp.sum(weights * transform(p, x, *extra))  # noqa: E731
            out = (out, jax.grad(total)(params))
    elif quantity in OBJECTIVES:
        objective = getattr(jprop, quantity)(net, method=method)
        out = jax.value_and_grad(objective)(params, x, *extra)
    else:
        loss = (jprop.CrossEntropy if _cross_entropy(case) else jprop.SquaredError)(net)
        v = jax.tree.map(
            lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), params
        )
        out = getattr(jprop, quantity)(loss, method=method)(params, v, x, *extra)
    leaves = [np.asarray(a).astype(np.float64).ravel() for a in jax.tree.leaves(out)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def _outcome(function):
    try:
        return function(), None
    except (ValueError, TypeError) as error:
        return None, type(error)


def check(case) -> None:
    """Fail (AssertionError) where the closed road departs from the autodiff road."""
    dtypes = (case["params_dtype"], case["x_dtype"])
    wide = jnp.dtype(jnp.float64) in map(jnp.dtype, dtypes)
    with jax.enable_x64(True) if wide else contextlib.nullcontext():  # as a float64 user would
        params, x, extra = _data(case)
        closed, closed_error = _outcome(lambda: _compute(case, "closed", params, x, extra, dtypes))
        autodiff, autodiff_error = _outcome(
            lambda: _compute(case, "autodiff", params, x, extra, dtypes)
        )
    assert closed_error == autodiff_error, (
        f"one road raised: closed {closed_error}, autodiff {autodiff_error}"
    )
    if closed_error is not None:
        return
    # The reference, and its sensitivity to a rounding of every input at the promoted precision:
    # the condition of the quantity, which no road computing in that precision can beat.
    eps = float(jnp.finfo(_promoted(case)).eps)
    rng = np.random.default_rng(case["seed"] + 1)

    def rounding(a):
        if np.isscalar(a) or a.dtype.kind == "i":
            return a
        return a * (1 + eps * rng.choice([-1.0, 1.0], np.shape(a)))

    with jax.enable_x64(True):
        f64 = (jnp.float64, jnp.float64)
        reference = _compute(case, "autodiff", params, x, extra, f64)
        perturbed = [jax.tree.map(rounding, a) for a in (params, x)] + [list(map(rounding, extra))]
        nearby = _compute(case, "autodiff", *perturbed, f64)
    assert closed.shape == autodiff.shape == reference.shape
    finite = np.isfinite(autodiff)
    bad = finite & ~np.isfinite(closed)
    assert not bad.any(), f"closed road non-finite where autodiff is finite: {closed[bad][:4]}"
    usable = finite & np.isfinite(reference) & np.isfinite(nearby)
    if not usable.any():
        return
    scale = max(float(np.max(np.abs(reference[usable]))), 1e-30)

    def error(a):
        return float(np.max(np.abs(a - reference)[usable])) / scale

    if error(autodiff) > 0.1:  # the autodiff road has itself lost the answer
        return
    allowed = max(4 * error(autodiff), 100 * error(nearby), TOLERANCE[_promoted(case)])
    assert error(closed) <= allowed, (
        f"closed road error {error(closed):.3g} against float64, autodiff road's "
        f"{error(autodiff):.3g}, condition {error(nearby):.3g} (allowed {allowed:.3g})"
    )
