"""Reasoning Text-to-Image (RT2I): a round is P prompts x G samples of think text then an image (rl/rollout.py),
trained on the reward as scored; the held-out eval draws one deterministic sample per prompt (ODE, think at the
eval temperature) and reports the mean reward overall, per prompt category (the record's `category` field when
present) and per reward component (`eval/*`)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from alphagrpo_jax.rl import rounds
from alphagrpo_jax.rl.evaluate import EvalResult, eval_rollout_config, score_rows
from alphagrpo_jax.rl.rollout import RolloutConfig, rollout_rt2i


@dataclasses.dataclass(frozen=True)
class RT2I:
    name: ClassVar[str] = "rt2i"
    eval_seed_offset: ClassVar[int] = 1
    rollout_config: RolloutConfig
    text_loss_weight: float  # loss.text_loss_weight

    @classmethod
    def from_config(cls, config, rollout_config: RolloutConfig) -> RT2I:
        return cls(rollout_config, config.loss.text_loss_weight)

    def start_round(self, model, release, records, reward_fn, key, window_start: int) -> rounds.Round:
        res = rollout_rt2i(model, release.vae, release.tokenizer, [r.prompt for r in records], self.rollout_config,
                           key, window_start)
        return rounds.submit(self.name, res, records, reward_fn, self.rollout_config.group_size)

    def evaluate(self, model, release, records, reward_fn, key, *, batch_size: int, temperature: float,
                 greedy: bool, num_timesteps: int | None, base_model=None) -> EvalResult:
        """(`base_model` is unused: RT2I has no first draws to share.)"""
        return evaluate(model, release.vae, release.tokenizer, records, reward_fn, self.rollout_config, key,
                        batch_size, temperature, greedy, num_timesteps)


def evaluate(model, vae, tokenizer, records, reward_fn, rollout_config: RolloutConfig, key, batch_size: int,
             temperature: float, greedy: bool, num_timesteps: int | None, prefix: str = "eval/") -> EvalResult:
    """The held-out RT2I eval (config.eval's settings; `num_timesteps` None: the rollout's). Every process passes
    every record; each scores its own block of each batch (hostdata.process_block) and all get the whole
    result."""
    eval_config = eval_rollout_config(rollout_config, temperature, greedy, num_timesteps)
    images, texts, prompts, rewards, components = [], [], [], [], {}
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        res = rollout_rt2i(model, vae, tokenizer, [r.prompt for r in chunk], eval_config,
                           jax.random.fold_in(key, start), 0)
        rw, imgs, txts = score_rows(reward_fn, res, chunk)
        images.append(imgs)
        texts += txts
        prompts += [r.prompt for r in chunk]
        rewards.append(np.asarray(rw.rewards))
        for name, v in rw.components.items():
            components.setdefault(name, []).append(np.asarray(v))
    images, rewards = np.concatenate(images), np.concatenate(rewards)
    metrics = {f"{prefix}reward": float(rewards.mean())}
    cats = [r.extra.get("category") for r in records]
    for cat in sorted({c for c in cats if c}):
        sel = np.array([c == cat for c in cats])
        metrics[f"{prefix}reward/{cat}"] = float(rewards[sel].mean())
    for name, values in components.items():
        metrics[f"{prefix}component/{name}"] = float(np.mean(np.concatenate(values)))
    return EvalResult(metrics, images, texts, prompts, rewards)
