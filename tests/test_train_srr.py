"""SRR configs and the trainer on SRR: configs/toy_srr.py and configs/bagel_7b_srr.py build (with the reference's
SRR numbers where the 7B config fixes them), and the trainer runs the toy SRR config (and its RT2I+SRR mix) on
the tiny golden release: SRR rounds train, the held-out eval reports the `eval_srr/*` metrics, and component_eval
evaluates the SRR checkpoint."""
import json
import os

import numpy as np
import pytest

from alphagrpo_jax import plugins, train
from alphagrpo_jax.rl.config import loss_config, rollout_config
from alphagrpo_jax.rl.tasks.srr import SRR
from alphagrpo_jax.sampling.prompts import GEN_THINK_SYSTEM_PROMPT
from configs import bagel_7b_srr, toy_srr
from tests.models.bagel.parity_utils import GOLDENS


SRR_EVAL = ("eval_srr/stage1_reward", "eval_srr/refined_reward", "eval_srr/gain", "eval_srr/gain_floored",
            "eval_srr/improved_frac")


def tiny_srr_config(workdir, steps, variant=None):
    """toy_srr on the tiny golden release, shrunk to seconds per step."""
    c = toy_srr.get_config(variant)
    c.workdir = str(workdir)
    c.total_steps = steps
    c.model.release = str(GOLDENS)
    c.rollout.update(dict(prompts_per_round=2, group_size=2, cache_size=512))  # byte tokenizer: long prompts
    c.rollout.text.max_new_tokens = 6
    c.rollout.image.update(dict(num_timesteps=6, sde_window=2, sde_window_range=(0, 5)))
    c.task.srr.update(dict(stage1_images=2, stage1_timesteps=4, num_timesteps=6, sde_window=2,
                           sde_window_range=(0, 5)))
    c.eval.update(dict(every=steps + 1, num_prompts=2, batch_size=2, num_timesteps=4))  # eval at step 0 only
    c.checkpoint.update(dict(every=steps, keep=1))
    c.log.tensorboard = False
    c.log.grid_size = 2
    return c


@pytest.mark.parametrize("module,variant", [(toy_srr, None), (toy_srr, "mixed"), (bagel_7b_srr, None),
                                            (bagel_7b_srr, "mixed")])
def test_configs_build(module, variant):
    c = module.get_config(variant)
    plugins.load(c)  # the toy config's transforms come from its plug-in, as in every program
    loss_config(c)
    task = SRR.from_config(c, rollout_config(c, "plan, then draw"))
    s2 = task.rollout_config
    assert s2.system_prompt == "plan, then draw"
    assert "srr" in c.task.kinds and (variant != "mixed" or "rt2i" in c.task.kinds)
    assert s2.think and s2.image.sde_window == c.task.srr.sde_window
    assert (s2.image.cfg.img_scale, s2.image.cfg.renorm_type) == (2.0, "text_channel")
    # SRR rounds: one reflection weighs like one image step; RT2I rounds (:mixed) keep their own text weight.
    assert c.task.srr.text_loss_weight * s2.image.sde_window == pytest.approx(1.0)
    assert c.loss.text_loss_weight == 1.0
    starts = {s2.draw_window_start(np.random.default_rng(i)) for i in range(200)}
    assert max(starts) + s2.image.sde_window <= c.task.srr.sde_window_range[1]
    with pytest.raises(ValueError, match="unknown variant"):
        module.get_config("nope")


def test_7b_srr_is_the_reference_recipe():
    c = bagel_7b_srr.get_config()
    task = SRR.from_config(c, rollout_config(c, GEN_THINK_SYSTEM_PROMPT))
    s2, srr, t2i_guidance = task.rollout_config, task.srr, task.srr.stage1_guidance
    assert (srr.stage1_images, srr.stage1_timesteps, srr.selection) == (7, 40, "worst")
    assert (s2.group_size, s2.image.num_timesteps, s2.image.sde_window, s2.image.eta) == (14, 40, 5, 0.7)
    assert (s2.image.cfg.text_scale, s2.image.cfg.img_scale, tuple(s2.image.cfg.interval)) == (4.0, 2.0, (0.0, 1.0))
    starts = {s2.draw_window_start(np.random.default_rng(i)) for i in range(500)}
    assert starts == set(range(11))  # start uniform in [0, 10] of 39 transitions
    assert (t2i_guidance.text_scale, tuple(t2i_guidance.interval), t2i_guidance.renorm_type) == (4.0, (0.4, 1.0),
                                                                                                 "global")
    assert c.rollout.prompts_per_round * c.rollout.rounds_per_step == 32 and c.optim.lr == 5e-5
    assert {k for k, v in dict(c.reward.weights).items() if v} == {"dvreward"}


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _check_run(out, workdir, variant):
    assert out["final_step"] == 1
    evals = out["eval"]
    assert [e["step"] for e in evals] == [0]
    for e in evals:
        assert all(np.isfinite(e[k]) for k in SRR_EVAL), e
        assert e["eval_srr/gain"] == pytest.approx(e["eval_srr/refined_reward"] - e["eval_srr/stage1_reward"])
        assert 0.0 <= e["eval_srr/improved_frac"] <= 1.0 and e["eval_srr/gain_floored"] >= 0.0
    rows = [r for r in _rows(workdir) if "reward/mean" in r]
    assert len(rows) == 1
    row = rows[0]
    assert {"srr/r_init", "srr/gain", "srr/improved_frac", "time/rollout_srr"} <= set(row)
    assert ("time/rollout_rt2i" in row) == (variant == "mixed")


def test_trainer_runs_srr(tmp_path, monkeypatch):
    from tests.test_component_eval import check_srr_variants

    c = tiny_srr_config(tmp_path, 1)
    c.rollout.rounds_per_step = 1
    _check_run(train.train(c), tmp_path, None)
    check_srr_variants(c, monkeypatch)  # component_eval of this checkpoint


@pytest.mark.slow  # ~90 s: a second learner compile; test_trainer_runs_srr covers the SRR path
def test_trainer_runs_mixed(tmp_path):
    # RT2I rounds keep the think-format reward; SRR rounds must score (and floor) on the image reward only.
    c = tiny_srr_config(tmp_path, 1, "mixed")
    assert c.reward.weights.think_format > 0 and c.rollout.rounds_per_step == 2
    _check_run(train.train(c), tmp_path, "mixed")
