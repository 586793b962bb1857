"""The model under evaluation from a training run's workdir: the run's checkpoint restored and its LoRA merged."""
import jax
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax import checkpointing, run_config, train
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import model
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.rl import lora
from tests.test_train import tiny_config


def _params(m):
    return {k: np.asarray(v.get_value(), np.float32) for k, v in nnx.to_flat_state(nnx.state(m, nnx.Param))}


def test_workdir_checkpoint_is_restored_and_merged(tmp_path):
    c = tiny_config(tmp_path / "run", 1)
    run_config.record(c)
    mesh = mesh_lib.mesh_from_config(c)
    with rules_lib.use_rules(mesh, rules_lib.DEFAULT_RULES):
        rel, _, learner, _ = train.build(c, mesh)
        base = _params(rel.model)
        trained = jax.tree.map(lambda x: x + 0.01, learner.trainable)  # LoRA B starts at 0: this moves weights
        mgr = checkpointing.CheckpointManager(str(tmp_path / "run" / "checkpoints"), keep=None, async_save=False)
        mgr.save(3, {"params": trained, "opt": learner.opt_state}, {"step": 3})
        mgr.close()
        learner.trainable = trained
        want = _params(lora.merge_lora(learner.model()))
    assert "step latest" in model.check_source("", str(tmp_path / "run"), -1)
    loaded, step = model.load("", str(tmp_path / "run"), -1)
    got = _params(loaded.model)
    assert step == 3 and set(got) == set(base)
    moved = [k for k in base if not np.allclose(got[k], base[k])]
    assert moved, "the checkpoint's adapters were not merged"
    for k in moved:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=str(k))


def test_source_errors(tmp_path, goldens_dir):
    with pytest.raises(UsageError, match="give exactly one"):
        model.check_source(str(goldens_dir), str(tmp_path), -1)
    with pytest.raises(UsageError, match="no config.yaml; expected a training run's workdir"):
        model.check_source("", str(tmp_path), -1)
