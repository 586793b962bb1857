"""From the ml_collections training config to the typed configs of the rollout and the learner (each task builds
its own from these, rl/tasks/). The config is the one source of their values: the dataclasses have no defaults
for what it sets."""
from __future__ import annotations

from alphagrpo_jax.rl.learner import LossConfig
from alphagrpo_jax.rl.rollout import RolloutConfig
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.image import ImageSamplerConfig
from alphagrpo_jax.sampling.text import TextSamplerConfig


def rollout_config(config, system_prompt: str) -> RolloutConfig:
    """`system_prompt`: the policy's think-mode prompt (`sampling.prompts.think_system_prompt(model cfg)`)."""
    r = config.rollout
    guidance = CFGConfig(r.cfg.text_scale, r.cfg.img_scale, tuple(r.cfg.interval), r.cfg.renorm_type,
                         r.cfg.renorm_min)
    image = ImageSamplerConfig(num_timesteps=r.image.num_timesteps, shift=r.image.shift, cfg=guidance,
                               sde_window=r.image.sde_window, eta=r.image.eta)
    text = TextSamplerConfig(max_new_tokens=r.text.max_new_tokens, temperature=r.text.temperature,
                             top_p=r.text.top_p, top_k=r.text.top_k)
    out = RolloutConfig(group_size=r.group_size, think=r.think, text=text, image=image,
                        sde_window_range=tuple(r.image.sde_window_range), height=r.height, width=r.width,
                        cache_size=r.cache_size, system_prompt=system_prompt)
    if image.sde_window > 0:
        import numpy as np

        out.draw_window_start(np.random.default_rng(0))  # raises early if the window cannot fit
    return out


def loss_config(config) -> LossConfig:
    loss = config.loss
    return LossConfig(
        image_loss=loss.image_loss, text_loss=loss.text_loss, image_clip_eps=loss.image_clip_eps,
        adv_clip=loss.adv_clip, text_clip=tuple(loss.text_clip), text_loss_weight=loss.text_loss_weight,
        train_image=loss.train_image, train_text=loss.train_text and config.rollout.think,
        image_kl_beta=loss.image_kl_beta, text_kl_beta=loss.text_kl_beta, max_log_ratio=loss.max_log_ratio,
        text_temperature=config.rollout.text.temperature)


def think_system_setting(config) -> dict:
    """{"think_system_prompt": text} (a BagelConfig override: it wins over the release's recorded prompt) when the
    config sets `prompts.think_system` (text or file:PATH), else {}."""
    from alphagrpo_jax.sampling.prompts import prompt_text

    text = prompt_text(config.get("prompts", {}).get("think_system"), "prompts.think_system")
    return {} if text is None else {"think_system_prompt": text}


def reflection_setting(config) -> dict:
    """{"reflection_prompt": text} when the config sets `prompts.reflection` (text or file:PATH), else {}."""
    from alphagrpo_jax.sampling.prompts import prompt_text

    text = prompt_text(config.get("prompts", {}).get("reflection"), "prompts.reflection")
    return {} if text is None else {"reflection_prompt": text}


def optim_config(config) -> dict:
    """config.optim as optim.build_optimizer takes it; a cosine schedule with decay_steps 0 decays over the
    whole run (config.total_steps), so overriding the step count keeps the schedule's shape."""
    optim = dict(config.optim)
    if optim.get("schedule") == "cosine" and not optim.get("decay_steps"):
        optim["decay_steps"] = int(config.total_steps)
    return optim
