"""Seeded SRR learning: 8 SRR training steps of the shipped toy base model make its held-out refinement gain grow.

The reward is a test-only, deterministic image brightness (mean pixel / 255). The toy world draws coloured shapes
on black, so brighter means more or larger shapes: a direction both the reflection ("large ...") and the redraw
can take, learnt from stage-2 samples only. Measured with the shipped base (eval_srr/gain at step 0 -> step 8,
this config, 2 shared CPU cores): seed 0: 0.006 -> 0.034 (+0.029), seed 1: 0.006 -> 0.087 (+0.081), seed 2:
0.047 -> 0.089 (+0.043); the refined reward rose more than the stage-1 reward in each (+0.010 vs -0.019, +0.104
vs +0.023, +0.045 vs +0.002). Untrained, the eval is deterministic (same keys), so the growth would be exactly
0. MARGIN is half the smallest measured growth (seed 0, the one asserted): a broken gradient or reward path gives
~0, and seed-to-seed spread (std 0.026) is why it is not higher.
~2.5-5 minutes (mostly compilation), hence slow; tests/test_train_srr.py::test_trainer_runs_srr covers the path.
"""
import os

import numpy as np
import pytest

from alphagrpo_jax import train
from alphagrpo_jax.reward.components import COMPONENTS, ComponentOutput, register_component
from configs import toy_srr

REPO = os.path.join(os.path.dirname(__file__), "..", "..")

MARGIN = 0.015


class Brightness:
    needs = ("images",)

    async def score(self, batch):
        values = np.asarray([np.asarray(im, np.float32).mean() / 255.0 for im in batch.images], np.float32)
        return ComponentOutput(values, [{} for _ in values])

    async def aclose(self):
        return None


if "test_brightness" not in COMPONENTS:
    register_component("test_brightness")(lambda config: Brightness())


def learning_config(workdir, seed: int, steps: int = 8):
    c = toy_srr.get_config()
    c.workdir, c.seed, c.total_steps = str(workdir), seed, steps
    c.model.release = os.path.join(REPO, "assets", "toy_base")
    c.rollout.update(dict(prompts_per_round=2, group_size=4, rounds_per_step=1))
    c.rollout.text.max_new_tokens = 48
    c.task.srr.update(dict(stage1_images=2, stage1_timesteps=10, num_timesteps=10, sde_window=3,
                           sde_window_range=(0, 4), text_loss_weight=1 / 3))
    c.loss.image_clip_eps = 0.05
    c.optim.lr = 3e-3
    c.reward.weights = dict(dvreward=0.0, think_format=0.0, toy_dvreward=0.0, test_brightness=1.0)
    c.eval.update(dict(every=steps, num_prompts=8, batch_size=8, num_timesteps=10))
    c.checkpoint.update(dict(every=1000, keep=1))
    c.log.update(dict(tensorboard=False, grid_size=8))
    return c


@pytest.mark.slow
def test_srr_training_grows_the_refinement_gain(tmp_path):
    out = train.train(learning_config(tmp_path, seed=0))
    first, last = out["eval"][0], out["eval"][-1]
    assert (first["step"], last["step"]) == (0, 8)
    grow = last["eval_srr/gain"] - first["eval_srr/gain"]
    assert grow > MARGIN, (first, last)
    # The refined images improved more than the stage-1 draws the reflections start from.
    assert (last["eval_srr/refined_reward"] - first["eval_srr/refined_reward"]
            > last["eval_srr/stage1_reward"] - first["eval_srr/stage1_reward"])
