"""Sharded inputs over 8 simulated CPU devices: the compiled programs keep the batch split (no
all-gather) and give the single-device results (a child process: the device count is an XLA flag
read when the backend starts; it compiles at XLA's lowest optimisation level, since what it checks is
where the work runs and what it computes, not how fast, with the other compile-speed flags
tests/conftest.py found this XLA to know when it started this lane)."""

import os
import subprocess
import sys

SHARDED = r"""
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jprop
from jax.flatten_util import ravel_pytree

pair = jax.value_and_grad  # (value, grads) of a jprop loss
assert len(jax.devices()) == 8, jax.devices()
net = jprop.MLP((3, 16, 16, 2))
params = net.init(jax.random.key(0), jnp.float64)
x = jax.random.normal(jax.random.key(1), (64, 3), jnp.float64)
v = jax.random.normal(jax.random.key(2), (64, 3), jnp.float64)
b = jax.random.normal(jax.random.key(3), (64, 2), jnp.float64)
keys = jax.random.split(jax.random.key(4), 64)  # one draw per example, sharded with the batch
xs, vs, bs, ks = jprop.shard_batch(x, v, b, keys)
assert len(xs.sharding.device_set) == 8 and len(ks.sharding.device_set) == 8
pirate = jprop.pirate_net(3, 2, width=8, blocks=1)  # a network of layers: gates and a skip
pirate_params = pirate.init(jax.random.key(5), jnp.float64)
L = jprop.layers  # and every other layer kind: a trained periodic embedding, factorised weights,
mixed = jprop.Network(3, [  # gated layers, a residual block
    L.PeriodicEmbedding(axes=(0,), trainable=True), L.Dense(8, factorised=True), L.Gates(8),
    L.GatedDense(), L.Residual(), L.Dense(2, "identity"),
])
mixed_params = mixed.init(jax.random.key(6), jnp.float64)
loss = jprop.SquaredError(net)
direction = jax.tree.map(jnp.ones_like, params)
# One transform of each kind of program: closed and autodiff input derivatives, the Laplacian's
# hand-written rule, a J-prop loss, a composite, weight curvature; whole, and each way of chunking
# (per-example results, the Hessian's contraction, running sums) in chunks of 16 (4 strided steps
# of 2 examples per device).
kinds = {
    "jacobian": lambda x, v, b, k, **kw: jprop.jacobian(net, **kw)(params, x),
    "hessian": lambda x, v, b, k, **kw: jprop.hessian(net, **kw)(params, x),
    "laplacian_training": lambda x, v, b, k, **kw: jax.grad(
        lambda p: jnp.mean(jprop.laplacian(net, **kw)(p, x) ** 2)
    )(params),
    "hessian_autodiff": lambda x, v, b, k, **kw: jprop.hessian(net, method="autodiff", **kw)(params, x),
    "jprop_v": lambda x, v, b, k, **kw: pair(jprop.jprop_v(net, **kw))(params, x, v, b),
    "tangent_prop": lambda x, v, b, k, **kw: pair(jprop.tangent_prop(net, **kw))(params, x, v[:, None]),
    "weight_hessian_vector_product": lambda x, v, b, k, **kw: jprop.weight_hessian_vector_product(
        loss, **kw
    )(params, direction, x, b),
    "network_laplacian_training": lambda x, v, b, k, **kw: [
        jax.grad(lambda p: jnp.mean(jprop.laplacian(f, **kw)(p, x) ** 2))(p)
        for f, p in ((pirate, pirate_params), (mixed, mixed_params))
    ],
    "network_jprop_u": lambda x, v, b, k, **kw: pair(jprop.jprop_u(pirate, **kw))(
        pirate_params, x, b, v
    ),
    "sparse_estimate_training": lambda x, v, b, k, **kw: jax.grad(
        lambda p: jnp.mean(jprop.laplacian(net, estimator="sparse", probes=2, **kw)(p, x, k) ** 2)
    )(params),
    "given_drift_training": lambda x, v, b, k, **kw: jax.grad(  # a drift field per example
        lambda p: sum(jnp.mean(t**2) for t in jprop.laplacian(net, drift="given", **kw)(p, x, v))
    )(params),
}
per_example = {"jacobian", "hessian", "hessian_autodiff"}
for name, kind in kinds.items():
    chunked = name not in ("jacobian", "tangent_prop")  # chunked as hessian, jprop_v are
    plain = ravel_pytree(jax.jit(kind)(x, v, b, keys))[0]  # one device, whole batch: the reference
    for options in ({}, {"batch_size": 16}) if chunked else ({},):
        job = lambda x, v, b, k: kind(x, v, b, k, **options)
        label = f"{name} {options}"
        compiled = jax.jit(job).lower(xs, vs, bs, ks).compile()
        # The work stays split: no device gathers the batch (a batch mean may all-reduce)...
        assert "all-gather" not in compiled.as_text(), label
        sharded = compiled(xs, vs, bs, ks)
        if name in per_example:  # ...and per-example results stay spread over the devices.
            assert sharded.sharding.spec[0] == "batch", (label, sharded.sharding)
        err = jprop.relative_error(ravel_pytree(sharded)[0], plain)
        assert err < 1e-12, (label, err)
try:
    jprop.shard_batch(jnp.ones((12, 3)))
except ValueError as error:
    assert "must divide evenly over 8 devices" in str(error)
else:
    raise AssertionError("a batch of 12 over 8 devices should be refused")
print("ok")
"""


def test_sharded_inputs_give_the_plain_results_on_8_devices():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    speed = os.environ.get("JPROP_TEST_SPEED_FLAGS", "--xla_backend_optimization_level=0")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 " + speed.strip()
    done = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
