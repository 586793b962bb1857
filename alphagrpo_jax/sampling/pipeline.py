"""High-level generation API mirroring BAGEL's inferencer: `generate_images`, `understand`.

Contexts follow BAGEL's `interleave_inference`: with think mode the system prompt opens every context; the
conditional context is [system] [images (VAE then ViT)] [prompt] (+ the decoded think text); the
text-unconditional one is the snapshot before the last text ([system] [images]; empty for plain T2I); the
image-unconditional one has the system prompt and texts but no images and no think text.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import image_transform
from alphagrpo_jax.models.bagel.release import Release
from alphagrpo_jax.models.bagel.vae import decode_latent_tokens
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling import text as text_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from alphagrpo_jax.sampling.prompts import VLM_THINK_SYSTEM_PROMPT, think_system_prompt


# BAGEL's guidance when an image conditions the draw (editing, SRR's redraw); the rest of the guidance keywords
# default as `Pipeline.generate_from_items`'s.
EDIT_GUIDANCE = dict(cfg_img=2.0, renorm_type="text_channel")


@dataclasses.dataclass
class Generation:
    image: np.ndarray            # [H, W, 3] uint8
    think: str | None = None     # decoded think text (think mode)
    think_ids: list[int] | None = None


@dataclasses.dataclass
class Pipeline:
    release: Release
    cache_size: int | None = None  # KV slots per sample; None = what each call's contexts need (see `build`)
    vae_transform: image_transform.ImageTransform = image_transform.VAE_TRANSFORM
    vit_transform: image_transform.ImageTransform = image_transform.VIT_TRANSFORM

    def __post_init__(self):
        # On CPU, one buffer per layer: XLA:CPU would copy each layer out of the stacks on every call.
        self.release = dataclasses.replace(self.release, model=layers.split_layers(self.release.model))

    @property
    def cfg(self):
        return self.release.cfg

    def _text(self, s: str) -> ctx_lib.Text:
        return ctx_lib.Text(tuple(self.release.tokenizer.encode(s)))

    def condition_items(self, image: Image.Image) -> tuple[list[ctx_lib.Item], tuple[int, int]]:
        """[VaeImage, VitImage] of a conditioning picture and the (H, W) it is resized to for the VAE."""
        img = image_transform.to_rgb(image)
        vae_img = self.vae_transform.resize(img)
        return (ctx_lib.condition_image(image_transform.to_pixels(vae_img), self.vit_transform(vae_img)),
                (vae_img.height, vae_img.width))

    def slots(self, *groups: tuple[Sequence[Sequence[ctx_lib.Item]], int]) -> int:
        """KV slots per sample for contexts built from (samples, decoded new tokens) groups: `cache_size` when
        set, else what the longest needs (context.cache_size_for, as `generate` sizes it), so a
        call's contexts share one shape. A cache larger than the context only costs (every layer attends over
        all slots)."""
        if self.cache_size is not None:
            return self.cache_size
        return max(ctx_lib.cache_size_for(s, self.cfg, n) for s, n in groups if s)

    def build(self, samples: Sequence[Sequence[ctx_lib.Item]], key, size: int | None = None) -> ctx_lib.Context:
        """A context of `size` slots per sample (default: `slots` for `samples` alone)."""
        r = self.release
        return ctx_lib.build(r.model, r.vae, samples, size or self.slots((samples, 0)), key)

    def decode_images(self, latents: jax.Array, h: int, w: int) -> np.ndarray:
        """Latent tokens [B, h*w/d^2, D] -> uint8 pixels [B, h, w, 3] (one jitted program per size)."""
        c = self.cfg
        return np.asarray(decode_latent_tokens(self.release.vae, latents, h // c.latent_downsample,
                                               w // c.latent_downsample, c.latent_patch_size, c.vae.z_channels))

    def generate_images(self, prompts: Sequence[str], *, think: bool = False,
                        images: Sequence[Image.Image | None] | None = None, height: int = 1024, width: int = 1024,
                        cfg_img: float | None = None, renorm_type: str | None = None, **kw) -> list[Generation]:
        """One image per prompt (optionally conditioned on an input image each: editing). Images of one call
        share their size: (height, width) for T2I, the (resized) input size when editing. Other keywords go to
        `generate_from_items`."""
        images = list(images) if images is not None else [None] * len(prompts)
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
        editing = any(im is not None for im in images)
        if editing and not all(im is not None for im in images):
            raise ValueError("mix of edit and text-to-image requests: call separately")
        system = [self._text(think_system_prompt(self.cfg))] if think else []
        cond, text_unc, img_unc = [], [], []
        sizes = set()
        for prompt, im in zip(prompts, images):
            img_items = []
            if im is not None:
                img_items, hw = self.condition_items(im)
                sizes.add(hw)
            cond.append(system + img_items + [self._text(prompt)])
            text_unc.append(system + img_items)
            img_unc.append(system + [self._text(prompt)])
        if len(sizes) > 1:
            raise ValueError(f"input images resize to different sizes {sorted(sizes)}: call separately")
        h, w = sizes.pop() if sizes else (height, width)
        return self.generate_from_items(cond, text_unc, img_unc, think=think, height=h, width=w,
                                        cfg_img=(EDIT_GUIDANCE["cfg_img"] if editing else 1.0) if cfg_img is None
                                        else cfg_img,
                                        renorm_type=renorm_type or (EDIT_GUIDANCE["renorm_type"] if editing
                                                                    else "global"), **kw)

    def generate_from_items(self, cond, text_unc, img_unc, *, think: bool, height: int, width: int,
                            num_timesteps: int = 50, cfg_text: float = 4.0, cfg_img: float = 1.0,
                            cfg_interval: tuple[float, float] = (0.4, 1.0), renorm_type: str = "global",
                            renorm_min: float = 0.0, shift: float = 3.0, seed: int = 0,
                            think_sampler: text_lib.TextSamplerConfig | None = None, on_step=None,
                            row_seeds: Sequence[int] | None = None) -> list[Generation]:
        """Images from explicit per-sample item lists: the conditional context and the CFG branches' contexts
        (BAGEL's text- and image-unconditional ones); with `think`, a text segment is decoded first.
        `row_seeds` (one int per row, instead of `seed`): row i's noise and think sampling are those of a one-row
        call with seed=row_seeds[i], whatever else is in the batch."""
        n = len(cond)
        key = jax.random.key(seed if row_seeds is None else row_seeds[0])
        k_ctx, k_think, k_noise, k_sde = jax.random.split(key, 4)
        row_keys = None if row_seeds is None else jax.vmap(lambda s: jax.random.split(jax.random.key(s), 4))(
            jnp.asarray(row_seeds, jnp.uint32))  # [n, 4]: each row's (ctx, think, noise, sde) keys
        guidance = CFGConfig(cfg_text, cfg_img, tuple(cfg_interval), renorm_type, renorm_min)
        text_config = think_sampler or text_lib.TextSamplerConfig(max_new_tokens=1024, temperature=0.3)
        size = self.slots((cond, text_config.max_new_tokens if think else 0), (text_unc, 0), (img_unc, 0))
        ctx = self.build(cond, k_ctx, size)
        think_out = None
        if think:
            keys = jax.random.split(k_think, n) if row_keys is None else \
                jax.vmap(lambda k: jax.random.split(k, 1)[0])(row_keys[:, 1])
            ctx, think_out = text_lib.decode(self.release.model, ctx, keys, text_config)
        branches = image_lib.Branches(
            ctx, self.build(text_unc, k_ctx, size) if guidance.uses_text_branch else None,
            self.build(img_unc, k_ctx, size) if guidance.uses_img_branch else None)
        c = self.cfg
        gh, gw = height // c.latent_downsample, width // c.latent_downsample
        if gh * c.latent_downsample != height or gw * c.latent_downsample != width:
            raise ValueError(f"image size {height}x{width} must be a multiple of {c.latent_downsample}")
        if row_keys is None:
            x = jax.random.normal(k_noise, (n, gh * gw, c.patch_latent_dim), jnp.float32)
        else:
            x = jax.vmap(lambda k: jax.random.normal(k, (gh * gw, c.patch_latent_dim), jnp.float32))(row_keys[:, 2])
        pos = image_lib.grid_positions(gh, gw, c.max_latent_size, n)
        sampler_config = image_lib.ImageSamplerConfig(num_timesteps=num_timesteps, shift=shift, cfg=guidance)
        out = image_lib.sample(self.release.model, branches, x, pos, k_sde, jnp.int32(0), sampler_config,
                               on_step=on_step)
        pixels = self.decode_images(out.latents, height, width)
        results = []
        for i in range(n):
            gen = Generation(pixels[i])
            if think_out is not None:
                ids = np.asarray(think_out.tokens[i, : int(think_out.lengths[i])]).tolist()
                gen.think_ids = ids
                gen.think = self.release.tokenizer.decode([t for t in ids if t != c.tokens.eos])
            results.append(gen)
        return results

    def generate_image(self, prompt: str, image: Image.Image | None = None, **kw) -> Generation:
        return self.generate_images([prompt], images=None if image is None else [image], **kw)[0]

    def understand(self, images: Sequence[Image.Image], questions: Sequence[str], *, think: bool = False,
                   max_new_tokens: int = 512, greedy: bool = True, temperature: float = 0.3,
                   seed: int = 0) -> list[str]:
        """Answers one question per image: [system?] [ViT image] [question] -> decoded text (ViT tokens only)."""
        system = [self._text(VLM_THINK_SYSTEM_PROMPT)] if think else []
        samples = [system + [ctx_lib.VitImage(self.vit_transform(image_transform.to_rgb(im)))] + [self._text(q)]
                   for im, q in zip(images, questions)]
        ctx = self.build(samples, jax.random.key(seed), self.slots((samples, max_new_tokens)))
        text_config = text_lib.TextSamplerConfig(max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature)
        keys = jax.random.split(jax.random.key(seed), len(samples))
        _, out = text_lib.decode(self.release.model, ctx, keys, text_config)
        eos = self.cfg.tokens.eos
        return [self.release.tokenizer.decode([t for t in np.asarray(out.tokens[i, : int(out.lengths[i])]).tolist()
                                               if t != eos]) for i in range(len(samples))]
