"""The GRPO trainer end to end on the 8-device mesh (tiny golden release, toy prompts and verifier): it runs,
writes metrics/checkpoints/sample grids, and a run resumed from a checkpoint continues EXACTLY like an
uninterrupted one (same rewards, losses and final params)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax import train
from configs import toy_rt2i
from tests.models.bagel.parity_utils import GOLDENS


# The tiny config family of the end-to-end tests: toy_rt2i on the golden release with these static shapes.
# Every trainer run in the suite (in process via tiny_config, as a subprocess via tiny_flags) uses them, so the
# rollout, learner and eval programs compile once per pytest run and load from the persistent compilation cache
# (tests/conftest.py) everywhere else. Change a shape here, not in a test.
TINY = {
    "model.release": str(GOLDENS),
    "rollout.prompts_per_round": 2, "rollout.group_size": 2, "rollout.rounds_per_step": 2,
    "rollout.cache_size": 448, "rollout.text.max_new_tokens": 6,
    "rollout.image.num_timesteps": 6, "rollout.image.shift": 3.0, "rollout.image.sde_window": 2,
    "rollout.image.sde_window_range": (0, 5),
    # The reference's update rules (configs/grpo_base.py), not the toy's: both rounds make one population, a
    # round pair without signal is redrawn (at most once per step).
    "loss.grad_normalization": "reference", "advantage.population": 4,
    "train.skipped_rounds": "redraw", "train.max_extra_rounds": 2,
    "eval.every": 0, "eval.num_prompts": 4, "eval.batch_size": 4, "eval.num_timesteps": 4,
    "checkpoint.every": 1, "checkpoint.keep": 5, "log.tensorboard": False,
}


def tiny_config(workdir, steps, overrides=None):
    """toy_rt2i with TINY, then `overrides` ({dotted key: value}), applied."""
    c = toy_rt2i.get_config()
    c.workdir = str(workdir)
    c.total_steps = steps
    for key, value in {**TINY, **(overrides or {})}.items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def tiny_flags(workdir, steps, overrides=None) -> list[str]:
    """The same config as command-line overrides of configs/toy_rt2i.py, for trainer subprocesses."""
    flat = {"workdir": workdir, "total_steps": steps, **TINY, **(overrides or {})}
    return [f"--config.{k}={v if not isinstance(v, tuple) else '(' + ','.join(map(str, v)) + ')'}"
            for k, v in flat.items()]


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    wd = tmp_path_factory.mktemp("straight")
    _, learner = train.run(tiny_config(wd, 3))
    return wd, learner.trainable


def test_run_writes_metrics_and_checkpoints(straight):
    straight, _ = straight
    rows = [r for r in _rows(straight) if "reward/mean" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["rounds_used"] in (0, 2) and r["rounds_extra"] in (0, 2) and np.isfinite(r["reward/mean"])
        assert {"time/rollout_rt2i", "time/rollout_text", "time/rollout_image", "time/reward_wait", "lr",
                "think/len"} <= set(r)
    assert sorted(os.listdir(os.path.join(straight, "checkpoints")))[-1] == "3"


def test_resume_is_exact(straight, tmp_path):
    straight, params_a = straight
    # Stop after step 1 (as a kill right after that checkpoint would), then resume to step 3.
    train.train(tiny_config(tmp_path, 1))
    params_b = train.run(tiny_config(tmp_path, 3))[1].trainable
    a = {r["step"]: r for r in _rows(straight) if "reward/mean" in r}
    b = {r["step"]: r for r in _rows(tmp_path) if "reward/mean" in r}
    for step in (2, 3):
        for key in ("reward/mean", "adv/abs_mean", "loss/total", "grad_norm", "think/len", "rounds_extra"):
            if key in a[step]:
                assert a[step][key] == b[step][key], (step, key)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), params_a, params_b)


def test_export_merges_lora_into_a_loadable_release(straight, tmp_path):
    from flax import nnx

    from alphagrpo_jax import export
    from alphagrpo_jax.models.bagel import release
    from alphagrpo_jax.parallel import mesh as mesh_lib
    from alphagrpo_jax.rl import lora

    wd, _ = straight
    out = export.export(tiny_config(wd, 3), str(tmp_path / "rel"))
    assert json.load(open(os.path.join(out, "export.json")))["step"] == "3"
    card = open(os.path.join(out, "README.md")).read()  # its own model card, not the base's
    assert str(GOLDENS) in card and "step 3 of 3" in card and "Held-out reward: " in card
    gen = json.load(open(os.path.join(out, "generation_config.json")))  # what the run sampled with
    assert (gen["height"], gen["width"]) == (tiny_config(wd, 3).rollout.height, tiny_config(wd, 3).rollout.width)
    with pytest.raises(FileExistsError, match="already holds"):
        export.export(tiny_config(wd, 3), out)
    loaded = release.load_release(out, mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})).model
    # The trained model, merged: built the way the trainer builds it, with the step-3 LoRA params.
    _, _, learner, _ = train.build(tiny_config(wd, 3), mesh_lib.make_mesh({"fsdp": -1}))
    learner.trainable = jax.tree.map(jnp.asarray, straight[1])
    merged = dict(nnx.to_flat_state(nnx.state(lora.merge_lora(learner.model()), nnx.Param)))
    got = dict(nnx.to_flat_state(nnx.state(loaded, nnx.Param)))
    assert set(got) == set(merged)
    moved = 0
    base = dict(nnx.to_flat_state(nnx.state(release.load_release(str(GOLDENS), mesh_lib.make_mesh({"fsdp": -1})).model,
                                            nnx.Param)))
    for k in merged:
        a, b = np.asarray(merged[k].get_value(), np.float32), np.asarray(got[k].get_value(), np.float32)
        np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-2, err_msg=str(k))  # bf16 on disk
        moved += not np.array_equal(np.asarray(base[k].get_value()), np.asarray(got[k].get_value()))
    assert moved > 0  # the trained adapters reached the exported weights
