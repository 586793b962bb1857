"""parallel/hostdata.py on one process with 8 devices: reading this process's rows of sharded arrays, gathers,
the sample blocks and their errors, the CPU barrier (the multi-process behaviour is
tests/parallel/test_multiprocess.py)."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from alphagrpo_jax.parallel import hostdata, mesh as mesh_lib

REPO = pathlib.Path(__file__).resolve().parents[2]


def _sharded(x):
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec("fsdp")))


def test_rows_of_a_sharded_array():
    x = np.arange(16 * 3).reshape(16, 3).astype(np.float32)
    a = _sharded(x)
    assert len(a.addressable_shards) == 8
    np.testing.assert_array_equal(hostdata.read_block(a), x)  # one process: its block is every row
    np.testing.assert_array_equal(hostdata.to_host(a), x)


def test_zeros_are_created_sharded():
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    sh = NamedSharding(mesh, PartitionSpec(None, "fsdp"))
    z = hostdata.zeros((2, 16, 4), np.float32, sh)
    assert z.sharding == sh and z.shape == (2, 16, 4) and not np.asarray(z).any()
    assert {s.data.shape for s in z.addressable_shards} == {(2, 2, 4)}


def test_gathers_and_blocks_on_one_process():
    vals = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(hostdata.allgather_rows(np.array([2, 0, 1]), vals, 3), [[2.0], [3.0], [1.0]])
    with pytest.raises(hostdata.HostLayoutError, match="exactly once"):
        hostdata.allgather_rows(np.array([0, 0, 1]), vals, 3)
    assert hostdata.allgather_items(np.array([1, 0]), ["b", "a"], 2) == ["a", "b"]
    assert hostdata.allgather_strings(["x", "y"]) == [["x", "y"]]
    np.testing.assert_array_equal(hostdata.process_block(6), np.arange(6))


# 200 dispatches of a multi-device program with a collective, the host never waiting: with XLA:CPU's pool of 8
# threads for 8 devices this deadlocks (docs/scaling.md); a cpu_barrier every 16 dispatches keeps it running.
_CHAIN = """
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from alphagrpo_jax.parallel import hostdata, mesh as mesh_lib
mesh = mesh_lib.make_mesh(dict(data=1, fsdp=4, tensor=2))
a = jax.device_put(jnp.ones((8, 128)), NamedSharding(mesh, P("fsdp", "tensor")))
f = jax.jit(lambda a: a + jnp.sum(a) * 1e-9)
for i in range(200):
    a = f(a)
    if i % 16 == 15:
        hostdata.cpu_barrier(a)
print("finished", float(a[0, 0]))
"""


def test_cpu_barrier_keeps_a_long_multi_device_chain_from_deadlocking():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PJRT_NPROC="8", PYTHONPATH=str(REPO),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-c", _CHAIN], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "finished" in out.stdout, out.stderr[-2000:]


def test_cpu_barrier_waits_and_returns_its_argument():
    x = _sharded(np.arange(8.0)) * 2
    assert hostdata.cpu_barrier(x) is x and x.is_ready()
