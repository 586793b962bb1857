"""The toy world's SFT data source "toy" (data/sft_sources.py): toy/sft_data.py's packed documents, the toy
tokenizer, and the held-out eval of a release on toy prompts scored by the exact toy verifier (toy/reward.py)."""
from __future__ import annotations

import numpy as np

from alphagrpo_jax.data.sft_sources import SFTSource, register_sft_source
from alphagrpo_jax.reward.fmt import think_format_rewards
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.text import TextSamplerConfig
from alphagrpo_jax.toy import decompose, prompts, sft_data, tokenizer, transforms, world
from alphagrpo_jax.toy.reward import score_image


def evaluate(rel, ec, seed: int) -> tuple[dict, np.ndarray]:
    """Held-out prompts (`ec.per_category` per category), ODE sampling with text CFG, plain and (ec.think)
    think mode; DVReward through the toy verifier (geometric). Returns (metrics, sample grid uint8)."""
    specs = prompts.prompt_set("eval", ec.per_category, seed)
    records = [decompose.decompose(s) for s in specs]
    pipe = Pipeline(rel, cache_size=ec.cache_size, vae_transform=transforms.VAE_TRANSFORM,
                    vit_transform=transforms.VIT_TRANSFORM)
    out, columns = {}, []
    for mode in ("t2i", "think") if ec.think else ("t2i",):
        gens = pipe.generate_images(
            [r.prompt for r in records], think=mode == "think", height=world.CANVAS, width=world.CANVAS,
            num_timesteps=ec.num_timesteps, cfg_text=ec.cfg_text, shift=ec.shift, seed=seed,
            think_sampler=TextSamplerConfig(max_new_tokens=ec.think_tokens, temperature=ec.think_temperature))
        rewards = np.asarray([score_image(r, g.image).overall for r, g in zip(records, gens)])
        cats = np.asarray([s.category for s in specs])
        for c in prompts.CATEGORIES:
            out[f"{mode}/{c}"] = float(rewards[cats == c].mean())
        out[f"{mode}/all"] = float(rewards.mean())
        if mode == "think":
            out["think/format"] = float(think_format_rewards([g.think for g in gens]).mean())
            out["think/examples"] = [f"{r.prompt} -> {g.think}" for r, g in zip(records[::ec.per_category],
                                                                                 gens[::ec.per_category])]
        blank = np.zeros_like(gens[0].image)
        columns.append([([g.image for g, s in zip(gens, specs) if s.category == c] + [blank] * ec.grid_per_category)
                        [: ec.grid_per_category] for c in prompts.CATEGORIES])
    grid = np.concatenate([np.concatenate([np.concatenate(col[i], axis=1) for col in columns], axis=1)
                           for i in range(len(prompts.CATEGORIES))], axis=0)
    return out, np.kron(grid, np.ones((ec.grid_scale, ec.grid_scale, 1), np.uint8))


def generation(ec) -> dict:
    """The toy base's generation_config.json: its eval's sampling settings, 32 px, the toy transforms."""
    return dict(height=world.CANVAS, width=world.CANVAS, num_timesteps=ec.num_timesteps, cfg_text=ec.cfg_text,
                shift=ec.shift, think_tokens=ec.think_tokens, think_temperature=ec.think_temperature,
                cache_size=ec.cache_size, transform="toy", plugins=["alphagrpo_jax.toy.plugin"])


SOURCE = SFTSource(kinds=sft_data.KINDS, settings=lambda data: sft_data.SFTDataConfig(**dict(data)),
                   corpus=sft_data.corpus, build_tokenizer=tokenizer.build, dataset=sft_data.sft_dataset,
                   evaluate=evaluate, generation=generation)
register_sft_source("toy", SOURCE)
