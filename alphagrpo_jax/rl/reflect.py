"""Self-Reflective Refinement (SRR) rollouts: stage 1 draws, stage 2 reflects and redraws (trained).

Stage 1 (not trained): the current policy draws each prompt's images deterministically (ODE, no think, T2I
CFG); the reward scores them and one image per prompt is kept with its reward r_init: the worst, or a
softmax(-(r)/T) draw ("softmax"). Stage 2: [system] [that image as VAE latents, then ViT tokens] [reflection
prompt] -> a sampled reflection (think text) -> a new image from the SDE sampler with edit CFG (text-
unconditional = [system][image], image-unconditional = [system][reflection prompt]). The reward is floored at
r_init, so non-improving refinements tie at the baseline; a round where nothing improved carries no signal.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from alphagrpo_jax.models.bagel import image_transform
from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.rl.gather import gather_reward
from alphagrpo_jax.rl.rollout import RolloutConfig, RolloutResult, rollout_from_items, rollout_rt2i, text_item
from alphagrpo_jax.sampling import refine as refine_lib
from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT, check_reflection_template


@dataclasses.dataclass(frozen=True)
class SRRConfig:
    stage1_images: int = 7                 # ODE generations per prompt in stage 1
    stage1_timesteps: int = 40
    selection: str = "worst"               # "worst" | "softmax"
    selection_temperature: float = 0.1     # softmax over -r / T
    vae_transform: image_transform.ImageTransform = image_transform.VAE_TRANSFORM
    vit_transform: image_transform.ImageTransform = image_transform.VIT_TRANSFORM
    reflection_prompt: str = REFLECTION_PROMPT  # template, `{prompt}` = the request (config prompts.reflection)

    def __post_init__(self):
        if self.selection not in ("worst", "softmax"):
            raise ValueError(f"srr.selection must be 'worst' or 'softmax', got {self.selection!r}")
        check_reflection_template(self.reflection_prompt)


@dataclasses.dataclass
class Stage1:
    images: np.ndarray    # [P, H, W, 3] the selected image per prompt
    r_init: np.ndarray    # [P] its reward
    rewards: np.ndarray   # [P, K] every stage-1 reward


def stage1_config(rcfg: RolloutConfig, srr: SRRConfig, t2i_cfg) -> RolloutConfig:
    image = dataclasses.replace(rcfg.image, num_timesteps=srr.stage1_timesteps, sde_window=0, cfg=t2i_cfg)
    return dataclasses.replace(rcfg, group_size=srr.stage1_images, think=False, image=image,
                               sde_window_range=(0, srr.stage1_timesteps))


def run_stage1(model, vae, tokenizer, records, reward_fn, rcfg: RolloutConfig, srr: SRRConfig, t2i_cfg,
               key) -> Stage1:
    """Every process passes every record, scores its own rows and returns the whole round's Stage1."""
    prompts = [r.prompt for r in records]
    scfg = stage1_config(rcfg, srr, t2i_cfg)
    res = rollout_rt2i(model, vae, tokenizer, prompts, scfg, key, 0)
    per_sample = [records[i] for i in res.prompt_index]
    rw = reward_fn(res.images, res.prompts, per_sample, texts=res.think_texts)  # texts: "" (no think)
    rw = gather_reward(rw, res.rows, len(prompts) * scfg.group_size)
    rewards = image_rewards(rw, image_weights(reward_fn)).reshape(len(prompts), -1)
    if srr.selection == "worst":
        pick = rewards.argmin(axis=1)
    else:
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
        logits = -rewards / srr.selection_temperature
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        pick = np.array([rng.choice(len(row), p=row) for row in p])
    # Stage 2 packs every prompt's image: each process contributes the selected images among its rows.
    selected = np.arange(len(prompts)) * rewards.shape[1] + pick
    pos = {int(r): i for i, r in enumerate(res.rows)}
    mine = np.array([p for p, r in enumerate(selected) if int(r) in pos], np.int64)
    images = hostdata.allgather_rows(mine, res.images[[pos[int(selected[p])] for p in mine]], len(prompts))
    return Stage1(images, rewards[np.arange(len(prompts)), pick], rewards)


def image_weights(reward_fn) -> dict[str, float]:
    """{component: weight} of the reward service's components that score the image."""
    fn = reward_fn.reward_fn
    weights = {k: fn.weights[k] for k, c in fn.components.items() if "images" in c.needs}
    if not weights:
        raise ValueError(f"SRR needs a reward component that scores images; configured: {sorted(fn.components)}")
    return weights


def image_rewards(rw, weights: dict[str, float]) -> np.ndarray:
    """[N] float64 SRR reward of a RewardResult: sum of weight * value over the image components."""
    return sum(np.float64(w) * np.asarray(rw.components[k], np.float64) for k, w in weights.items())


def srr_items_for(tokenizer, prompt: str, image: np.ndarray, rcfg: RolloutConfig, srr: SRRConfig):
    return refine_lib.srr_items(lambda s: text_item(tokenizer, s), prompt, image, srr.vae_transform,
                                srr.vit_transform, rcfg.system_prompt, srr.reflection_prompt)


def rollout_srr(model, vae, tokenizer, prompts: list[str], images: np.ndarray, rcfg: RolloutConfig,
                srr: SRRConfig, key, window_start: int) -> RolloutResult:
    """Stage 2: G reflect-and-redraw samples per (prompt, stage-1 image)."""
    cond, tu, iu = zip(*(srr_items_for(tokenizer, p, im, rcfg, srr) for p, im in zip(prompts, images)))
    return rollout_from_items(model, vae, tokenizer, prompts, list(cond), list(tu), list(iu), rcfg, key,
                              window_start)


def floor_rewards(rewards: np.ndarray, r_init: np.ndarray) -> tuple[np.ndarray, bool]:
    """[P, G] rewards floored at each prompt's r_init [P]; and whether any sample improved on its r_init."""
    floor = np.asarray(r_init, np.float64)[:, None]
    rewards = np.asarray(rewards, np.float64)
    return np.maximum(rewards, floor), bool(np.any(rewards > floor))
