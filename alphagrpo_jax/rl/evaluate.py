"""Held-out evaluation: deterministic generations (ODE, think decoded at the eval temperature) scored by the
configured reward; mean reward overall and per prompt category (the record's `category` field when present)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from alphagrpo_jax.rl.rollout import RolloutConfig, rollout_rt2i


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    images: np.ndarray
    texts: list[str]
    prompts: list[str]
    rewards: np.ndarray


def eval_rollout_config(rcfg: RolloutConfig, temperature: float, greedy: bool,
                        num_timesteps: int | None = None) -> RolloutConfig:
    """One sample per prompt, ODE image sampling (no SDE window), think at the eval temperature."""
    text = dataclasses.replace(rcfg.text, temperature=temperature if not greedy else 1.0, greedy=greedy, top_p=1.0)
    image = dataclasses.replace(rcfg.image, sde_window=0, num_timesteps=num_timesteps or rcfg.image.num_timesteps)
    return dataclasses.replace(rcfg, group_size=1, text=text, image=image, sde_window_range=(0, rcfg.image.num_steps))


def evaluate(model, vae, tokenizer, records, reward_fn, rcfg: RolloutConfig, key, batch_size: int = 16,
             temperature: float = 0.3, greedy: bool = False, num_timesteps: int | None = None,
             prefix: str = "eval/") -> EvalResult:
    ecfg = eval_rollout_config(rcfg, temperature, greedy, num_timesteps)
    images, texts, prompts = [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        res = rollout_rt2i(model, vae, tokenizer, [r.prompt for r in chunk], ecfg, jax.random.fold_in(key, start), 0)
        images.append(res.images)
        texts += res.think_texts
        prompts += res.prompts
    images = np.concatenate(images)
    result = reward_fn(images, prompts, records, texts=texts)
    rewards = np.asarray(result.rewards)
    metrics = {f"{prefix}reward": float(rewards.mean())}
    cats = [r.extra.get("category") for r in records]
    for cat in sorted({c for c in cats if c}):
        sel = np.array([c == cat for c in cats])
        metrics[f"{prefix}reward/{cat}"] = float(rewards[sel].mean())
    for name, values in result.components.items():
        metrics[f"{prefix}component/{name}"] = float(np.mean(values))
    return EvalResult(metrics, images, texts, prompts, rewards)
