"""checkpointing.py: save / restore onto a (different) mesh with target shardings, JSON extras, keep-N,
the save interval and the SIGTERM preemption flag."""
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alphagrpo_jax import checkpointing
from alphagrpo_jax.parallel.mesh import make_mesh


def _state(mesh, scale=1.0):
    w = jnp.arange(64 * 8, dtype=jnp.float32).reshape(64, 8) * scale
    return {"params": {"w": jax.device_put(w, NamedSharding(mesh, P("fsdp", None))),
                       "b": jax.device_put(jnp.ones(8) * scale, NamedSharding(mesh, P()))},
            "step": jax.device_put(jnp.int32(7), NamedSharding(mesh, P()))}


def test_restore_onto_another_mesh_with_target_shardings(tmp_path):
    mesh_a = make_mesh({"fsdp": -1})
    state = _state(mesh_a)
    ckpt = checkpointing.CheckpointManager(str(tmp_path / "ck"), keep=2)
    extras = {"step": 7, "data": {"next_index": 123, "epoch": 0}, "note": "hello"}
    assert ckpt.save(7, state, extras)
    assert not ckpt.save(7, state, extras)  # an existing step is not overwritten
    ckpt.close()

    mesh_b = make_mesh({"data": 2, "tensor": 4})
    target_sh = {"params": {"w": NamedSharding(mesh_b, P("tensor", "data")), "b": NamedSharding(mesh_b, P("tensor"))},
                 "step": NamedSharding(mesh_b, P())}
    abstract = checkpointing.abstract_with_shardings(state, target_sh)
    again = checkpointing.CheckpointManager(str(tmp_path / "ck"))
    assert again.latest_step() == 7
    restored, got_extras = again.restore(abstract)
    again.close()
    assert got_extras == extras
    for path in (("params", "w"), ("params", "b"), ("step",)):
        r, s, want = restored, state, target_sh
        for k in path:
            r, s, want = r[k], s[k], want[k]
        np.testing.assert_array_equal(np.asarray(r), np.asarray(s))
        assert r.sharding == want


def test_keep_n_interval_and_missing_checkpoint(tmp_path):
    mesh = make_mesh({"fsdp": -1})
    ckpt = checkpointing.CheckpointManager(str(tmp_path / "ck"), keep=2, every=5)
    assert ckpt.latest_step() is None and not ckpt.should_save(3) and ckpt.should_save(10)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ckpt.restore({})
    for step in (5, 10, 15):
        ckpt.save(step, _state(mesh, step), {"step": step})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [10, 15]
    abstract = checkpointing.abstract_with_shardings(_state(mesh), jax.tree.map(lambda x: x.sharding, _state(mesh)))
    restored, extras = ckpt.restore(abstract, step=10)
    assert extras == {"step": 10}
    np.testing.assert_array_equal(restored["params"]["b"], np.full(8, 10.0))
    ckpt.close()
    with pytest.raises(ValueError, match="every"):
        checkpointing.CheckpointManager(str(tmp_path / "x"), every=-1)


def test_sigterm_sets_the_preemption_flag_and_close_restores_the_handler(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    ckpt = checkpointing.CheckpointManager(str(tmp_path / "ck"), every=0)
    ckpt.install_preemption_handler()
    assert not ckpt.preempted(1) and not ckpt.should_save(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert ckpt.preempted(1) and ckpt.should_save(1)
    ckpt.close()
    assert signal.getsignal(signal.SIGTERM) is before
