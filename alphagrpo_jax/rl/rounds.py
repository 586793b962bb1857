"""One rollout round of a task (RT2I or SRR) and its rewards, as the trainer loop uses them.

Multi-process: every process holds the round's prompt records, runs the same global rollout programs and
scores only its own block of samples (hostdata.process_block); `gather_reward` (rl/gather.py) assembles the per-sample results
on every process, so group statistics, advantages and logs are the same everywhere.
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future

import jax
import numpy as np

from alphagrpo_jax.rl import reflect
from alphagrpo_jax.rl.gather import gather_reward
from alphagrpo_jax.rl.rollout import RolloutResult, rollout_rt2i

TASKS = ("rt2i", "srr")


@dataclasses.dataclass
class Round:
    kind: str
    result: RolloutResult
    future: Future
    group_size: int
    r_init: np.ndarray | None = None  # SRR: per-prompt stage-1 reward (the floor)
    stage1_rewards: np.ndarray | None = None
    image_weights: dict | None = None  # SRR: reward = these components only (reflect.image_weights)

    def rewards(self) -> tuple[np.ndarray, dict, object]:
        """([P, G] training rewards, extra metrics, the raw RewardResult). Blocks on the reward future."""
        rw = self.future.result()
        if jax.process_count() > 1:  # this process scored its own rows: gather the whole round
            rw = gather_reward(rw, self.result.rows, len(self.result.rollout.think_len))
        raw = rw.rewards if self.image_weights is None else reflect.image_rewards(rw, self.image_weights)
        raw = np.asarray(raw, np.float64).reshape(-1, self.group_size)
        extra = {}
        if self.kind == "srr":
            floored, improved = reflect.floor_rewards(raw, self.r_init)
            extra = {"srr/r_init": float(self.r_init.mean()), "srr/raw_reward": float(raw.mean()),
                     "srr/gain": float((raw - self.r_init[:, None]).mean()),
                     "srr/improved_frac": float(np.mean(raw > self.r_init[:, None])),
                     "srr/any_improved": float(improved)}
            raw = floored
        return raw, extra, rw


def start_round(kind: str, model, rel, records, reward_fn, key, window_start: int, rcfg, srr_cfgs=None) -> Round:
    """Rolls out one round and submits this process's rewards (asynchronously)."""
    prompts = [r.prompt for r in records]
    if kind == "rt2i":
        res = rollout_rt2i(model, rel.vae, rel.tokenizer, prompts, rcfg, key, window_start)
        extra = {}
        group = rcfg.group_size
    elif kind == "srr":
        s2_cfg, srr, t2i_cfg = srr_cfgs
        k1, k2 = jax.random.split(key)  # independent stage-1 and stage-2 noise
        s1 = reflect.run_stage1(model, rel.vae, rel.tokenizer, records, reward_fn, rcfg, srr, t2i_cfg, k1)
        res = reflect.rollout_srr(model, rel.vae, rel.tokenizer, prompts, s1.images, s2_cfg, srr, k2,
                                  window_start)
        extra = dict(r_init=s1.r_init, stage1_rewards=s1.rewards, image_weights=reflect.image_weights(reward_fn))
        group = s2_cfg.group_size
    else:
        raise ValueError(f"unknown task {kind!r}; known: {TASKS}")
    per_sample = [records[i] for i in res.prompt_index]
    future = reward_fn.submit(res.images, res.prompts, per_sample, texts=res.think_texts)
    return Round(kind, res, future, group, **extra)
