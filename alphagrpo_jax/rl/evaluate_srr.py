"""Held-out SRR evaluation: can the policy fix its own draws?

Per prompt: stage 1 draws `stage1_images` T2I images (ODE, no think, T2I CFG) and keeps the worst, exactly the
training rollout's stage 1 (reflect.run_stage1); then one reflect-and-redraw round (reflect.rollout_srr) with
the reflection decoded at the eval temperature and the image drawn by the ODE (no SDE window), edit CFG.
Both images are scored by SRR's reward (the image components, reflect.image_weights). With `stage1_model`,
that model draws stage 1 instead (component_eval passes the base): every policy then refines the same first
draws, which separates refinement skill from changes in the first draws.

Metrics (prefix `eval_srr/`): stage1_reward and refined_reward (means over prompts), gain = mean(refined -
stage1), gain_floored = mean(max(refined, stage1) - stage1) (what keeping the better image gains: the training
reward's floor, or an oracle gate), improved_frac = P(refined > stage1), and gain/<category>.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from alphagrpo_jax.rl import reflect
from alphagrpo_jax.rl.evaluate import eval_rollout_config, score_rows


@dataclasses.dataclass
class SRREvalResult:
    metrics: dict[str, float]
    stage1_images: np.ndarray   # [P, H, W, 3] uint8, the image each reflection starts from
    refined_images: np.ndarray  # [P, H, W, 3] uint8
    reflections: list[str]      # [P] decoded reflection (think) texts
    stage1: np.ndarray          # [P] rewards
    refined: np.ndarray         # [P]


def srr_metrics(stage1: np.ndarray, refined: np.ndarray, categories=None, prefix: str = "eval_srr/") -> dict:
    """The metrics above from per-prompt rewards [P] (and optional per-prompt category names)."""
    stage1, refined = np.asarray(stage1, np.float64), np.asarray(refined, np.float64)
    diff = refined - stage1
    out = {f"{prefix}stage1_reward": float(stage1.mean()), f"{prefix}refined_reward": float(refined.mean()),
           f"{prefix}gain": float(diff.mean()), f"{prefix}gain_floored": float(np.maximum(diff, 0.0).mean()),
           f"{prefix}improved_frac": float(np.mean(diff > 0))}
    cats = list(categories) if categories is not None else []
    for cat in sorted({c for c in cats if c}):
        sel = np.array([c == cat for c in cats])
        out[f"{prefix}gain/{cat}"] = float(diff[sel].mean())
    return out


def evaluate_srr(model, vae, tokenizer, records, reward_fn, srr_cfgs, key, *, batch_size: int = 16,
                 temperature: float = 0.3, greedy: bool = False, num_timesteps: int | None = None,
                 stage1_images: int = 1, prefix: str = "eval_srr/", stage1_model=None) -> SRREvalResult:
    """`srr_cfgs`: (stage-2 RolloutConfig, SRRConfig, stage-1 T2I CFGConfig), as rl.config.srr_configs.
    `num_timesteps` (None = the training values) sets both stages' ODE schedules. `stage1_model` (None = `model`)
    draws stage 1; the same key gives it the same first draws whichever `model` refines them."""
    s2_cfg, srr, t2i_cfg = srr_cfgs
    s1_srr = dataclasses.replace(srr, stage1_images=stage1_images, selection="worst",
                                 stage1_timesteps=num_timesteps or srr.stage1_timesteps)
    ecfg = eval_rollout_config(s2_cfg, temperature, greedy, num_timesteps)
    weights = reflect.image_weights(reward_fn)
    drawer = model if stage1_model is None else stage1_model
    s1_images, images, texts, stage1, refined = [], [], [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        k1, k2 = jax.random.split(jax.random.fold_in(key, start))
        s1 = reflect.run_stage1(drawer, vae, tokenizer, chunk, reward_fn, s2_cfg, s1_srr, t2i_cfg, k1)
        res = reflect.rollout_srr(model, vae, tokenizer, [r.prompt for r in chunk], s1.images, ecfg, srr, k2, 0)
        rw, imgs, txts = score_rows(reward_fn, res, chunk)
        s1_images.append(s1.images)
        images.append(imgs)
        texts += txts
        stage1.append(s1.r_init)
        refined.append(reflect.image_rewards(rw, weights))
    stage1, refined = np.concatenate(stage1), np.concatenate(refined)
    metrics = srr_metrics(stage1, refined, [r.extra.get("category") for r in records], prefix)
    return SRREvalResult(metrics, np.concatenate(s1_images), np.concatenate(images), texts, stage1, refined)
