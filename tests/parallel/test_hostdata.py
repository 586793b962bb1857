"""parallel/hostdata.py on one process with 8 devices: reading this process's rows of sharded arrays, gathers,
the sample blocks and their errors (the multi-process behaviour is tests/parallel/test_multiprocess.py)."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from alphagrpo_jax.parallel import hostdata, mesh as mesh_lib


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
