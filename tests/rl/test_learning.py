"""A real learning test: a short seeded GRPO run of the toy base model on the toy world's prompts whose reward
goes up. The reward is a dense, registered component (mean image brightness in [0, 1]: "draw more / brighter
shapes"), so the direction is unambiguous and a few steps suffice; the full toy DVReward run is in docs/training.md.

Margin: the held-out eval reward (16 prompts, ODE, the same keys before and after) must rise by more than
MARGIN. With lr = 0 the parameters do not move and the two evals are the same computation, so the rise is
exactly 0: any rise is the policy's. MARGIN = 0.03 is below the rise of each of seeds 0, 1 and 2 with this
config on 8 simulated devices (docs/results/2026-12-06-test-suite.md, "The learning test's margin"); the train
reward's rise is much noisier, so it is not the statistic tested. The test runs seed 0, on one device.
"""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from alphagrpo_jax import train
from alphagrpo_jax.reward.components import COMPONENTS, ComponentOutput, register_component
from configs import toy_rt2i


MARGIN = 0.03
STEPS = 8
REPO = pathlib.Path(__file__).resolve().parents[2]


class Brightness:
    needs = ("images",)

    async def score(self, batch):
        v = np.stack([np.asarray(i, np.float32) for i in batch.images]).mean(axis=(1, 2, 3)) / 255.0
        return ComponentOutput(v.astype(np.float32), [{} for _ in v])

    async def aclose(self):
        return None


if "test_brightness" not in COMPONENTS:
    register_component("test_brightness")(lambda cfg: Brightness())


def learning_config(workdir, seed=0, lr=1e-3):
    c = toy_rt2i.get_config()
    c.workdir, c.seed, c.total_steps = str(workdir), seed, STEPS
    c.reward.weights = dict(dvreward=0.0, think_format=0.0, toy_dvreward=0.0, test_brightness=1.0)
    c.rollout.update(dict(prompts_per_round=2, group_size=8, rounds_per_step=1))
    c.rollout.text.max_new_tokens = 24
    c.rollout.image.update(dict(num_timesteps=8, sde_window=3, sde_window_range=(0, 4)))
    c.optim.lr, c.optim.schedule = lr, "constant"  # calibrated at a constant lr
    # Held-out eval before and after with the same keys (ODE, so with lr = 0 the two evals are identical):
    # the change is the policy's, not sampling noise.
    c.eval.update(dict(every=STEPS, num_prompts=16, batch_size=16, num_timesteps=8))
    c.checkpoint.update(dict(every=0, keep=1))
    c.log.tensorboard = False
    return c


def rise(workdir) -> tuple[float, float]:
    """(held-out eval reward after - before, train reward of the last two steps - first two)."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = list(map(json.loads, f))
    ev = [row["eval/reward"] for row in rows if "eval/reward" in row]
    r = [row["reward/mean"] for row in rows if "reward/mean" in row]
    assert len(r) == STEPS and len(ev) == 2
    return float(ev[1] - ev[0]), float(np.mean(r[-2:]) - np.mean(r[:2]))


def test_reward_goes_up(tmp_path):
    """Learning is the subject here, not sharding (the trainer tests run on the session's 8 devices): the run is
    this module's calibration entry point in a subprocess on one CPU device, where the same computation costs
    about a quarter less CPU time; its eval rise equals the 8-device run's to the digits calibrated."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = dict(os.environ, XLA_FLAGS=" ".join(["--xla_force_host_platform_device_count=1", *flags]))
    done = subprocess.run([sys.executable, "-m", "tests.rl.test_learning", "0", "1e-3", str(tmp_path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert rise(tmp_path)[0] > MARGIN


if __name__ == "__main__":  # calibration: python -m tests.rl.test_learning SEED LR WORKDIR
    seed, lr, wd = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    train.train(learning_config(wd, seed, lr))
    print(f"seed {seed} lr {lr}: eval rise {rise(wd)[0]:+.4f}, train rise {rise(wd)[1]:+.4f}")
