"""From the ml_collections training config to the typed configs of the rollout and the learner."""
from __future__ import annotations

from alphagrpo_jax.rl.learner import LossConfig
from alphagrpo_jax.rl.rollout import RolloutConfig
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.image import ImageSamplerConfig
from alphagrpo_jax.sampling.text import TextSamplerConfig


def rollout_config(config, system_prompt: str) -> RolloutConfig:
    """`system_prompt`: the policy's think-mode prompt (`sampling.prompts.think_system_prompt(model cfg)`)."""
    r = config.rollout
    cfg = CFGConfig(r.cfg.text_scale, r.cfg.img_scale, tuple(r.cfg.interval), r.cfg.renorm_type, r.cfg.renorm_min)
    image = ImageSamplerConfig(num_timesteps=r.image.num_timesteps, shift=r.image.shift, cfg=cfg,
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
    lc = config.loss
    return LossConfig(
        image_loss=lc.image_loss, text_loss=lc.text_loss, image_clip_eps=lc.image_clip_eps, adv_clip=lc.adv_clip,
        text_clip=tuple(lc.text_clip), text_loss_weight=lc.text_loss_weight, train_image=lc.train_image,
        train_text=lc.train_text and config.rollout.think, image_kl_beta=lc.image_kl_beta,
        text_kl_beta=lc.text_kl_beta, max_log_ratio=lc.max_log_ratio,
        text_temperature=config.rollout.text.temperature)


def srr_configs(config, system_prompt: str):
    """(stage-2 RolloutConfig, SRRConfig, stage-1 T2I CFGConfig) of the SRR task."""
    import dataclasses

    from alphagrpo_jax.models.bagel import image_transform
    from alphagrpo_jax.rl.reflect import SRRConfig

    base = rollout_config(config, system_prompt)
    s = config.task.srr
    cfg = CFGConfig(s.cfg.text_scale, s.cfg.img_scale, tuple(s.cfg.interval), s.cfg.renorm_type, s.cfg.renorm_min)
    image = dataclasses.replace(base.image, num_timesteps=s.num_timesteps, sde_window=s.sde_window, cfg=cfg)
    rcfg = dataclasses.replace(base, image=image, sde_window_range=tuple(s.sde_window_range), think=True)
    transforms = image_transform.TRANSFORMS
    if s.transforms not in transforms:
        raise ValueError(f"task.srr.transforms must be one of {sorted(transforms)}, got {s.transforms!r}")
    srr = SRRConfig(stage1_images=s.stage1_images, stage1_timesteps=s.stage1_timesteps, selection=s.selection,
                    selection_temperature=s.selection_temperature, vae_transform=transforms[s.transforms][0],
                    vit_transform=transforms[s.transforms][1], **reflection_setting(config))
    return rcfg, srr, base.image.cfg


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
    ocfg = dict(config.optim)
    if ocfg.get("schedule") == "cosine" and not ocfg.get("decay_steps"):
        ocfg["decay_steps"] = int(config.total_steps)
    return ocfg
