"""Chunked and sharded batches give the plain results: J-prop objectives with `batch_size`, and
every transform on inputs sharded over 8 simulated CPU devices (in a fresh process, since the
device count is fixed when XLA starts)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from helpers import ARCHITECTURES, assert_close, params_and_input
from jax.flatten_util import ravel_pytree

import jprop


@pytest.mark.parametrize("road", ["closed", "autodiff"])
def test_jprop_objectives_in_chunks_equal_the_whole_batch(road):
    net = ARCHITECTURES[3]
    params, x = params_and_input(net, jnp.float64, seed=9, batch=(11,))
    key = jax.random.split(jax.random.key(3), 2)
    v = jax.random.normal(key[0], x.shape, jnp.float64)
    t = jax.random.normal(key[1], (11, net.n_outputs), jnp.float64)
    for make, args in [(jprop.jprop_v, (v, t)), (jprop.double_backprop, (t, 0.5))]:
        whole = make(net, method=road)(params, x, *args)
        chunked = make(net, method=road, batch_size=4)(params, x, *args)  # 2 chunks + 3 left
        assert_close(chunked[0], whole[0], 1e-13, f"{make.__name__} value")
        assert_close(ravel_pytree(chunked[1])[0], ravel_pytree(whole[1])[0], 1e-13, "grads")
    with pytest.raises(ValueError, match="`batch_size` must be at least 1"):
        jprop.jprop_u(net, batch_size=0)


SHARDED = r"""
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jprop
from jax.flatten_util import ravel_pytree

assert len(jax.devices()) == 8, jax.devices()
net = jprop.MLP((3, 16, 16, 2))
params = net.init(jax.random.key(0), jnp.float64)
x = jax.random.normal(jax.random.key(1), (16, 3), jnp.float64)
v = jax.random.normal(jax.random.key(2), (16, 3), jnp.float64)
b = jax.random.normal(jax.random.key(3), (16, 2), jnp.float64)
xs, vs, bs = jprop.shard_batch(x, v, b)
assert len(xs.sharding.device_set) == 8
loss = jprop.SquaredError(net)
direction = jax.tree.map(jnp.ones_like, params)
jobs = {
    "jacobian": lambda x, v, b: jprop.jacobian(net)(params, x),
    "hessian": lambda x, v, b: jprop.hessian(net)(params, x),
    "laplacian": lambda x, v, b: jprop.laplacian(net)(params, x),
    "hessian_autodiff": lambda x, v, b: jprop.hessian(net, method="autodiff")(params, x),
    "jprop_v": lambda x, v, b: jprop.jprop_v(net)(params, x, v, b),
    "weight_hvp": lambda x, v, b: jprop.weight_hvp(loss)(params, direction, x, b),
}
for name, job in jobs.items():
    plain = job(x, v, b)
    sharded = jax.jit(job)(xs, vs, bs)
    err = jprop.relative_error(ravel_pytree(sharded)[0], ravel_pytree(plain)[0])
    assert err < 1e-12, (name, err)
hessians = jax.jit(jobs["hessian"])(xs, vs, bs)
assert len(hessians.sharding.device_set) == 8, hessians.sharding  # stays spread over the batch
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
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    done = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
