"""Self-Reflective Refinement (SRR) as a training task: stage 1 draws, stage 2 reflects and redraws (trained);
and its held-out eval (can the policy fix its own draws?). The inference loop is sampling/srr.py.

Stage 1 (not trained): the current policy draws each prompt's images deterministically (ODE, no think, T2I
CFG); the reward scores them and one image per prompt is kept with its reward r_init: the worst, or a
softmax(-(r)/T) draw ("softmax"). Stage 2: [system] [that image as VAE latents, then ViT tokens] [reflection
prompt] -> a sampled reflection (think text) -> a new image from the SDE sampler with edit CFG (text-
unconditional = [system][image], image-unconditional = [system][reflection prompt]). SRR's reward is the image
components of the reward only (`image_weights`), floored at r_init, so non-improving refinements tie at the
baseline; a round where nothing improved carries no signal.

Held-out eval (`evaluate`): per prompt, stage 1 draws `stage1_images` images and keeps the worst, exactly the
training rollout's stage 1; then one reflect-and-redraw with the reflection decoded at the eval temperature and
the image drawn by the ODE (no SDE window), edit CFG. With `stage1_model`, that model draws stage 1 instead
(component_eval passes the base): every policy then refines the same first draws, which separates refinement
skill from changes in the first draws. Metrics (prefix `eval_srr/`): stage1_reward and refined_reward (means
over prompts), gain = mean(refined - stage1), gain_floored = mean(max(refined, stage1) - stage1) (what keeping
the better image gains: the training reward's floor, or an oracle gate), improved_frac = P(refined > stage1),
and gain/<category>.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import numpy as np

from alphagrpo_jax.models.bagel import image_transform
from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.reward.service import RewardResult
from alphagrpo_jax.rl import rounds
from alphagrpo_jax.rl.config import reflection_setting
from alphagrpo_jax.rl.evaluate import eval_rollout_config, score_rows
from alphagrpo_jax.rl.rollout import RolloutConfig, RolloutResult, rollout_from_items, rollout_rt2i, text_item
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT, check_reflection_template
from alphagrpo_jax.sampling.srr import srr_items

SELECTIONS = ("worst", "softmax")


@dataclasses.dataclass(frozen=True)
class SRRConfig:
    """What SRR adds to its rollout config (config.task.srr; built by SRR.from_config)."""
    stage1_images: int                     # ODE generations per prompt in stage 1
    stage1_timesteps: int
    selection: str                         # "worst" | "softmax"
    selection_temperature: float           # softmax over -r / T
    stage1_guidance: CFGConfig             # stage 1's T2I CFG (the RT2I rollout's)
    vae_transform: image_transform.ImageTransform
    vit_transform: image_transform.ImageTransform
    reflection_prompt: str = REFLECTION_PROMPT  # template, `{prompt}` = the request (config prompts.reflection)

    def __post_init__(self):
        if self.selection not in SELECTIONS:
            raise ValueError(f"srr.selection must be 'worst' or 'softmax', got {self.selection!r}")
        check_reflection_template(self.reflection_prompt)


@dataclasses.dataclass(frozen=True)
class SRR:
    name: ClassVar[str] = "srr"
    eval_seed_offset: ClassVar[int] = 2
    rollout_config: RolloutConfig   # stage 2's (the trained rollout)
    srr: SRRConfig
    text_loss_weight: float         # task.srr.text_loss_weight (loss.text_loss_weight is RT2I's)

    @classmethod
    def from_config(cls, config, rollout_config: RolloutConfig) -> SRR:
        """`rollout_config`: the run's RT2I rollout config; stage 2 replaces its image schedule, window and CFG
        with task.srr's and always thinks (the reflection)."""
        s = config.task.srr
        guidance = CFGConfig(s.cfg.text_scale, s.cfg.img_scale, tuple(s.cfg.interval), s.cfg.renorm_type,
                             s.cfg.renorm_min)
        image = dataclasses.replace(rollout_config.image, num_timesteps=s.num_timesteps, sde_window=s.sde_window,
                                    cfg=guidance)
        stage2 = dataclasses.replace(rollout_config, image=image, sde_window_range=tuple(s.sde_window_range),
                                     think=True)
        transforms = image_transform.TRANSFORMS
        if s.transforms not in transforms:
            raise ValueError(f"task.srr.transforms must be one of {sorted(transforms)}, got {s.transforms!r}")
        srr = SRRConfig(stage1_images=s.stage1_images, stage1_timesteps=s.stage1_timesteps, selection=s.selection,
                        selection_temperature=s.selection_temperature, stage1_guidance=rollout_config.image.cfg,
                        vae_transform=transforms[s.transforms][0], vit_transform=transforms[s.transforms][1],
                        **reflection_setting(config))
        return cls(stage2, srr, s.text_loss_weight)

    def start_round(self, model, release, records, reward_fn, key, window_start: int) -> SRRRound:
        k1, k2 = jax.random.split(key)  # independent stage-1 and stage-2 noise
        s1 = run_stage1(model, release.vae, release.tokenizer, records, reward_fn, self.rollout_config, self.srr, k1)
        res = rollout_srr(model, release.vae, release.tokenizer, [r.prompt for r in records], s1.images,
                          self.rollout_config, self.srr, k2, window_start)
        return rounds.submit(self.name, res, records, reward_fn, self.rollout_config.group_size, SRRRound,
                             r_init=s1.r_init, stage1_rewards=s1.rewards, image_weights=image_weights(reward_fn))

    def evaluate(self, model, release, records, reward_fn, key, *, batch_size: int, temperature: float,
                 greedy: bool, num_timesteps: int | None, base_model=None) -> SRREvalResult:
        """`eval_srr/*`; with `base_model`, also `eval_srr_base_draws/*`: `model` refining `base_model`'s first
        draws (the same key: the draws the base's own SRR eval refines; `base_model is model`: a copy)."""
        settings = dict(batch_size=batch_size, temperature=temperature, greedy=greedy, num_timesteps=num_timesteps)
        args = (model, release.vae, release.tokenizer, records, reward_fn, self.rollout_config, self.srr, key)
        ev = evaluate(*args, **settings)
        if base_model is model:
            ev.metrics.update({n.replace("eval_srr/", "eval_srr_base_draws/"): v for n, v in ev.metrics.items()
                               if n.startswith("eval_srr/")})
        elif base_model is not None:
            ev.metrics.update(evaluate(*args, prefix="eval_srr_base_draws/", stage1_model=base_model,
                                       **settings).metrics)
        return ev


@dataclasses.dataclass
class SRRRound(rounds.Round):
    r_init: np.ndarray | None = None          # [P] per-prompt stage-1 reward (the floor)
    stage1_rewards: np.ndarray | None = None  # [P, K] every stage-1 reward
    image_weights: dict | None = None         # reward = these components only (None: the reward as scored)

    def training_rewards(self, rw: RewardResult) -> rounds.RoundRewards:
        raw = rw.rewards if self.image_weights is None else image_rewards(rw, self.image_weights)
        raw = np.asarray(raw, np.float64).reshape(-1, self.group_size)
        floored, improved = floor_rewards(raw, self.r_init)
        metrics = {"srr/r_init": float(self.r_init.mean()), "srr/raw_reward": float(raw.mean()),
                   "srr/gain": float((raw - self.r_init[:, None]).mean()),
                   "srr/improved_frac": float(np.mean(raw > self.r_init[:, None])),
                   "srr/any_improved": float(improved)}
        return rounds.RoundRewards(floored, metrics, rw, improved)


@dataclasses.dataclass
class Stage1:
    images: np.ndarray    # [P, H, W, 3] the selected image per prompt
    r_init: np.ndarray    # [P] its reward
    rewards: np.ndarray   # [P, K] every stage-1 reward


def stage1_config(rollout_config: RolloutConfig, srr: SRRConfig) -> RolloutConfig:
    image = dataclasses.replace(rollout_config.image, num_timesteps=srr.stage1_timesteps, sde_window=0,
                                cfg=srr.stage1_guidance)
    return dataclasses.replace(rollout_config, group_size=srr.stage1_images, think=False, image=image,
                               sde_window_range=(0, srr.stage1_timesteps))


def run_stage1(model, vae, tokenizer, records, reward_fn, rollout_config: RolloutConfig, srr: SRRConfig,
               key) -> Stage1:
    """Every process passes every record, scores its own rows and returns the whole round's Stage1."""
    prompts = [r.prompt for r in records]
    config = stage1_config(rollout_config, srr)
    res = rollout_rt2i(model, vae, tokenizer, prompts, config, key, 0)
    per_sample = [records[i] for i in res.prompt_index]
    rw = reward_fn(res.images, res.prompts, per_sample, texts=res.think_texts)  # texts: "" (no think)
    rw = rounds.gather_reward(rw, res.rows, len(prompts) * config.group_size)
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


def stage2_items(tokenizer, prompt: str, image: np.ndarray, rollout_config: RolloutConfig, srr: SRRConfig):
    return srr_items(lambda s: text_item(tokenizer, s), prompt, image, srr.vae_transform, srr.vit_transform,
                     rollout_config.system_prompt, srr.reflection_prompt)


def rollout_srr(model, vae, tokenizer, prompts: list[str], images: np.ndarray, rollout_config: RolloutConfig,
                srr: SRRConfig, key, window_start: int) -> RolloutResult:
    """Stage 2: G reflect-and-redraw samples per (prompt, stage-1 image)."""
    cond, tu, iu = zip(*(stage2_items(tokenizer, p, im, rollout_config, srr) for p, im in zip(prompts, images)))
    return rollout_from_items(model, vae, tokenizer, prompts, list(cond), list(tu), list(iu), rollout_config, key,
                              window_start)


def floor_rewards(rewards: np.ndarray, r_init: np.ndarray) -> tuple[np.ndarray, bool]:
    """[P, G] rewards floored at each prompt's r_init [P]; and whether any sample improved on its r_init."""
    floor = np.asarray(r_init, np.float64)[:, None]
    rewards = np.asarray(rewards, np.float64)
    return np.maximum(rewards, floor), bool(np.any(rewards > floor))


@dataclasses.dataclass
class SRREvalResult:
    metrics: dict[str, float]
    stage1_images: np.ndarray   # [P, H, W, 3] uint8, the image each reflection starts from
    refined_images: np.ndarray  # [P, H, W, 3] uint8
    reflections: list[str]      # [P] decoded reflection (think) texts
    stage1: np.ndarray          # [P] rewards
    refined: np.ndarray         # [P]


def srr_metrics(stage1: np.ndarray, refined: np.ndarray, categories=None, prefix: str = "eval_srr/") -> dict:
    """The eval metrics (module docstring) from per-prompt rewards [P] (and optional per-prompt categories)."""
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


def evaluate(model, vae, tokenizer, records, reward_fn, rollout_config: RolloutConfig, srr: SRRConfig, key, *,
             batch_size: int, temperature: float, greedy: bool, num_timesteps: int | None, stage1_images: int = 1,
             prefix: str = "eval_srr/", stage1_model=None) -> SRREvalResult:
    """The held-out SRR eval (module docstring). `rollout_config`: stage 2's; `num_timesteps` (None = the
    training values) sets both stages' ODE schedules. `stage1_model` (None = `model`) draws stage 1; the same key
    gives it the same first draws whichever `model` refines them."""
    stage1_srr = dataclasses.replace(srr, stage1_images=stage1_images, selection="worst",
                                     stage1_timesteps=num_timesteps or srr.stage1_timesteps)
    eval_config = eval_rollout_config(rollout_config, temperature, greedy, num_timesteps)
    weights = image_weights(reward_fn)
    drawer = model if stage1_model is None else stage1_model
    s1_images, images, texts, stage1, refined = [], [], [], [], []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        k1, k2 = jax.random.split(jax.random.fold_in(key, start))
        s1 = run_stage1(drawer, vae, tokenizer, chunk, reward_fn, rollout_config, stage1_srr, k1)
        res = rollout_srr(model, vae, tokenizer, [r.prompt for r in chunk], s1.images, eval_config, srr, k2, 0)
        rw, imgs, txts = score_rows(reward_fn, res, chunk)
        s1_images.append(s1.images)
        images.append(imgs)
        texts += txts
        stage1.append(s1.r_init)
        refined.append(image_rewards(rw, weights))
    stage1, refined = np.concatenate(stage1), np.concatenate(refined)
    metrics = srr_metrics(stage1, refined, [r.extra.get("category") for r in records], prefix)
    return SRREvalResult(metrics, np.concatenate(s1_images), np.concatenate(images), texts, stage1, refined)
