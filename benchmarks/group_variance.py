"""Where a GRPO group's reward variance comes from on the toy world: the think text or the image noise.

    python benchmarks/group_variance.py [--thinks 4] [--images 4] [--per-category 4] [--fixed-init] [--release DIR]

For each train-split toy prompt (`--per-category` of each category), samples `--thinks` think texts with the
rollout's text sampler, then `--images` images per think text with the rollout's image sampler (SDE window of
configs/toy_rt2i.py, one window start per image draw from its range, its text CFG), and scores every image with
the exact toy DVReward. With R[prompt, think, image] it prints the reward variance within a prompt (a GRPO
group's) as unbiased nested-ANOVA components: the image part (variance over images with the think fixed) and
the think part (variance of the per-think means less the image part / images). `--fixed-init`: every image of a
think starts from the same initial noise, so the image part is the SDE window's noise alone (what the image policy's
log-probs see). The default release is the shipped toy base.
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel.mesh import make_mesh
from alphagrpo_jax.sampling import image as image_lib, text as text_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.prompts import think_system_prompt
from alphagrpo_jax.toy import decompose, prompts, reward as toy_reward
from alphagrpo_jax.toy import transforms as toy_transforms
from common import REPO
from configs import toy_rt2i


def rewards(pipe: Pipeline, c, n_thinks: int, n_images: int, per_category: int, fixed_init: bool) -> np.ndarray:
    """R [prompts, thinks, images] of toy DVReward."""
    r, cfg = c.rollout, pipe.cfg
    specs = prompts.prompt_set("train", per_category=per_category)
    system = pipe._text(think_system_prompt(pipe.cfg))
    cond = [[system, pipe._text(prompts.format_prompt(s))] for s in specs for _ in range(n_thinks)]
    n = len(cond)
    ctx = pipe.build(cond, jax.random.key(0))
    tcfg = text_lib.TextSamplerConfig(max_new_tokens=r.text.max_new_tokens, temperature=r.text.temperature,
                                      top_p=r.text.top_p, top_k=r.text.top_k)
    ctx, _ = text_lib.decode(pipe.release.model, ctx, jax.random.split(jax.random.key(1), n), tcfg)
    branches = image_lib.Branches(ctx, pipe.build([[system]] * n, jax.random.key(0)), None)
    gh, gw = r.height // cfg.latent_downsample, r.width // cfg.latent_downsample
    pos = image_lib.grid_positions(gh, gw, cfg.max_latent_size, n)
    cfgc = CFGConfig(r.cfg.text_scale, 1.0, tuple(r.cfg.interval), r.cfg.renorm_type, r.cfg.renorm_min)
    scfg = image_lib.ImageSamplerConfig(num_timesteps=r.image.num_timesteps, shift=r.image.shift, cfg=cfgc,
                                        sde_window=r.image.sde_window, eta=r.image.eta)
    lo, hi = r.image.sde_window_range
    starts = np.random.default_rng(0).integers(lo, hi - r.image.sde_window + 1, n_images)
    records = [decompose.decompose(s) for s in specs]
    out = np.zeros((len(specs), n_thinks, n_images))
    for m in range(n_images):
        x = jax.random.normal(jax.random.key(100 + (0 if fixed_init else m)), (n, gh * gw, cfg.patch_latent_dim))
        lat = image_lib.sample(pipe.release.model, branches, x, pos, jax.random.key(200 + m),
                               jnp.int32(starts[m]), scfg).latents
        pixels = pipe.decode_images(lat, r.height, r.width)
        for i in range(n):
            out[i // n_thinks, i % n_thinks, m] = toy_reward.score_image(records[i // n_thinks], pixels[i]).overall
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--thinks", type=int, default=4)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--per-category", type=int, default=4)
    ap.add_argument("--fixed-init", action="store_true", help="one initial noise per think: SDE noise only")
    ap.add_argument("--release", default=os.path.join(REPO, "assets", "toy_base"))
    a = ap.parse_args()
    c = toy_rt2i.get_config()
    rel = release.load_release(a.release, make_mesh({"fsdp": -1}), param_dtype="float32", dtype="float32")
    pipe = Pipeline(rel, cache_size=c.rollout.cache_size, vae_transform=toy_transforms.VAE_TRANSFORM,
                    vit_transform=toy_transforms.VIT_TRANSFORM)
    r = rewards(pipe, c, a.thinks, a.images, a.per_category, a.fixed_init)
    # Unbiased variance components (one-way nested ANOVA): a per-think mean over M images still carries
    # image variance / M, which is taken out of the think part.
    image = r.var(axis=2, ddof=1).mean()
    think = max(r.mean(axis=2).var(axis=1, ddof=1).mean() - image / a.images, 0.0)
    total = image + think
    print(f"{len(r)} prompts x {a.thinks} thinks x {a.images} images"
          f"{' (one initial noise per think)' if a.fixed_init else ''}; mean reward {r.mean():.3f}")
    print(f"reward variance within a prompt {total:.5f} (std {total ** .5:.3f}):")
    print(f"  image noise, think fixed: {image:.5f} (std {image ** .5:.3f}) = {image / total:.0%}")
    print(f"  think text:               {think:.5f} (std {think ** .5:.3f}) = {think / total:.0%}")


if __name__ == "__main__":
    main()
