"""Held-out evaluation: deterministic generations (ODE, think decoded at the eval temperature) scored by the
configured reward; mean reward overall and per prompt category (the record's `category` field when present)."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.rl.rollout import RolloutConfig, RolloutResult, rollout_rt2i
from alphagrpo_jax.rl.rounds import gather_reward


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
    """Every process passes every record; each scores its own block of each batch (hostdata.process_block) and
    all get the whole result."""
    ecfg = eval_rollout_config(rcfg, temperature, greedy, num_timesteps)
    images, texts, prompts, rewards, components = [], [], [], [], {}
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        res = rollout_rt2i(model, vae, tokenizer, [r.prompt for r in chunk], ecfg, jax.random.fold_in(key, start), 0)
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


def score_rows(reward_fn, res: RolloutResult, records) -> tuple:
    """(whole-batch RewardResult, images [n, H, W, 3], think texts) of a one-sample-per-record rollout: this
    process scores its rows, then everything is gathered on every process."""
    n = len(records)
    rw = reward_fn(res.images, res.prompts, [records[i] for i in res.prompt_index], texts=res.think_texts)
    return (gather_reward(rw, res.rows, n), hostdata.allgather_rows(res.rows, res.images, n),
            hostdata.allgather_items(res.rows, res.think_texts, n))
