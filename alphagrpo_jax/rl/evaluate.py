"""What the tasks' held-out evals share (rl/tasks/): the result, the eval rollout config (one deterministic
sample per prompt) and scoring a one-sample-per-record rollout on every process."""
from __future__ import annotations

import dataclasses

import numpy as np

from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.rl.rollout import RolloutConfig, RolloutResult
from alphagrpo_jax.rl.rounds import gather_reward


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    images: np.ndarray
    texts: list[str]
    prompts: list[str]
    rewards: np.ndarray


def eval_rollout_config(rollout_config: RolloutConfig, temperature: float, greedy: bool,
                        num_timesteps: int | None = None) -> RolloutConfig:
    """One sample per prompt, ODE image sampling (no SDE window), think at the eval temperature."""
    text = dataclasses.replace(rollout_config.text, temperature=temperature if not greedy else 1.0, greedy=greedy,
                               top_p=1.0)
    image = dataclasses.replace(rollout_config.image, sde_window=0,
                                num_timesteps=num_timesteps or rollout_config.image.num_timesteps)
    return dataclasses.replace(rollout_config, group_size=1, text=text, image=image,
                               sde_window_range=(0, rollout_config.image.num_steps))


def score_rows(reward_fn, res: RolloutResult, records) -> tuple:
    """(whole-batch RewardResult, images [n, H, W, 3], think texts) of a one-sample-per-record rollout: this
    process scores its rows, then everything is gathered on every process."""
    n = len(records)
    rw = reward_fn(res.images, res.prompts, [records[i] for i in res.prompt_index], texts=res.think_texts)
    return (gather_reward(rw, res.rows, n), hostdata.allgather_rows(res.rows, res.images, n),
            hostdata.allgather_items(res.rows, res.think_texts, n))
