"""RT2I rollouts: P prompts x G samples -> think text (sampled) -> image (SDE window) -> stored for the loss.

Per sample: [system planning prompt] [user prompt] -> decoded think segment -> an image from the SDE sampler
with CFG inside the policy. The G copies of a prompt share one prefilled prompt context (forked, not rebuilt);
the unconditional context is the system prompt only (think mode) or empty, as BAGEL. What the learner needs is
kept on device: the caches (stop-gradient inputs), the sampled ids and their log-probs, the latent trajectory,
the SDE window and its log-probs.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from alphagrpo_jax import metrics
from alphagrpo_jax.models.bagel.vae import decode_latent_tokens
from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling import text as text_lib


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """A task's rollout (built from config.rollout by rl/config.rollout_config: the config holds the values)."""
    group_size: int                               # G samples per prompt
    think: bool                                   # decode a think segment before the image
    text: text_lib.TextSamplerConfig
    image: image_lib.ImageSamplerConfig
    sde_window_range: tuple[int, int]             # window start uniform in [lo, hi - width]
    height: int                                   # pixels
    width: int
    cache_size: int                               # KV-cache slots per sample
    system_prompt: str                            # the policy's (sampling.prompts.think_system_prompt)

    def draw_window_start(self, rng: np.random.Generator) -> int:
        lo, hi = self.sde_window_range
        last = min(hi, self.image.num_steps) - self.image.sde_window
        if last < lo:
            raise ValueError(f"SDE window of {self.image.sde_window} steps does not fit in range "
                             f"{self.sde_window_range} of {self.image.num_steps} steps")
        return int(rng.integers(lo, last + 1))


@struct.dataclass
class Rollout:
    """One round of B = P * G samples (device arrays)."""
    ctx: ctx_lib.Context                  # conditional context after the think segment
    text_uncond: ctx_lib.Context | None   # CFG branches (None when unused)
    img_uncond: ctx_lib.Context | None
    prompt_len: jax.Array                 # [B] cache slots before the think segment
    prompt_rope: jax.Array                # [B] RoPE id of the think segment's <|im_start|>
    think_ids: jax.Array                  # [B, T] sampled ids (incl. a sampled EOS)
    think_logp: jax.Array                 # [B, T] their log-probs at sampling time
    think_len: jax.Array                  # [B] sampled actions
    think_truncated: jax.Array            # [B]
    trajectory: jax.Array                 # [B, num_timesteps, N, 64]
    window_start: jax.Array               # [] int32
    image_logp: jax.Array                 # [B, W]
    image_means: jax.Array                # [B, W, N, 64]
    latent_pos: jax.Array                 # [B, N]

    @property
    def branches(self) -> image_lib.Branches:
        return image_lib.Branches(self.ctx, self.text_uncond, self.img_uncond)


@dataclasses.dataclass
class RolloutResult:
    """The device-side round (global arrays) and this process's rows of it on the host: a process scores and
    reads only its own block of samples (hostdata.process_block); one process = every row."""
    rollout: Rollout
    images: np.ndarray        # [n, H, W, 3] uint8, this process's rows
    think_texts: list[str]    # decoded think text per row ("" without think)
    prompts: list[str]        # per row (each prompt repeated G times)
    prompt_index: np.ndarray  # [n] index of the row's prompt in the round (global)
    rows: np.ndarray          # [n] the rows' indices in the round's batch of B = P * G


def text_item(tokenizer, s: str) -> ctx_lib.Text:
    return ctx_lib.Text(tuple(tokenizer.encode(s)))


def rollout_rt2i(model, vae, tokenizer, prompts: list[str], rollout_config: RolloutConfig, key: jax.Array,
                 window_start: int) -> RolloutResult:
    """Samples G trajectories for each prompt: [system] [prompt] -> think -> image (T2I CFG: the text-
    unconditional context is the system prompt alone, or empty without think)."""
    system = [text_item(tokenizer, rollout_config.system_prompt)] if rollout_config.think else []
    cond = [system + [text_item(tokenizer, t)] for t in prompts]
    return rollout_from_items(model, vae, tokenizer, prompts, cond, [system] * len(prompts), cond, rollout_config,
                              key, window_start)


def rollout_from_items(model, vae, tokenizer, prompts, cond_items, text_uncond_items, img_uncond_items,
                       rollout_config: RolloutConfig, key: jax.Array, window_start: int) -> RolloutResult:
    """The shared rollout: per-prompt item lists of the conditional context and of the CFG branches (built
    only when the CFG config uses them) -> G samples per prompt (think text if configured, then an image)."""
    model_config = model.cfg
    p, g = len(prompts), rollout_config.group_size
    b = p * g
    k_ctx, k_text, k_noise, k_sde = jax.random.split(key, 4)
    repeat = np.repeat(np.arange(p), g)  # numpy: the same constant on every process

    def build(items):  # G copies of each prompt's context share one prefill
        return ctx_lib.build(model, vae, items, rollout_config.cache_size, k_ctx).take(repeat)

    with metrics.phase("rollout_text") as sync:  # prefill + think decoding
        ctx = build(cond_items)
        # Copies: `decode` donates the context, and these two must outlive it.
        prompt_len, prompt_rope = _copy((ctx.cache.length, ctx.rope))
        if rollout_config.think:
            ctx, dec = text_lib.decode(model, ctx, jax.random.split(k_text, b), rollout_config.text)
        else:
            dec = _no_text(b, rollout_config.text.max_new_tokens)
        sync(hostdata.cpu_barrier(dec))
    with metrics.phase("rollout_image"):  # CFG branch prefills + the flow sampler + VAE decode
        sampler_config = rollout_config.image
        uncond = build(text_uncond_items) if sampler_config.cfg.uses_text_branch else None
        img_uncond = build(img_uncond_items) if sampler_config.cfg.uses_img_branch else None
        # The image queries and the learner attend over the live cache slots only (a power-of-two bucket).
        live = ctx_lib.live_size([c for c in (ctx, uncond, img_uncond) if c is not None])
        ctx, uncond, img_uncond = (None if c is None else ctx_lib.trim(c, live) for c in (ctx, uncond, img_uncond))
        down = model_config.latent_downsample
        gh, gw = rollout_config.height // down, rollout_config.width // down
        pos = image_lib.grid_positions(gh, gw, model_config.max_latent_size, b)
        x = jax.random.normal(k_noise, (b, gh * gw, model_config.patch_latent_dim), jnp.float32)
        out = image_lib.sample(model, image_lib.Branches(ctx, uncond, img_uncond), x, pos, k_sde,
                               np.int32(window_start), sampler_config)
        rows = hostdata.process_block(b)
        images = hostdata.read_block(decode_images(vae, out.latents, gh, gw, model_config.latent_patch_size,
                                                   model_config.vae.z_channels))
    rollout = Rollout(ctx, uncond, img_uncond, prompt_len, prompt_rope, dec.tokens, dec.log_probs, dec.lengths,
                      dec.truncated, out.trajectory, out.window_start, out.log_probs, out.means, pos)
    eos = model_config.tokens.eos
    texts = [""] * len(rows)
    if rollout_config.think:
        ids, lens = hostdata.read_block(dec.tokens), hostdata.read_block(dec.lengths)
        texts = [tokenizer.decode([t for t in ids[i, : lens[i]].tolist() if t != eos]) for i in range(len(rows))]
    return RolloutResult(rollout, images, texts, [prompts[i] for i in repeat[rows]], repeat[rows], rows)


@jax.jit
def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _no_text(b: int, t: int) -> text_lib.DecodeOutput:
    """The decode output of a rollout without think text: no tokens."""
    return text_lib.DecodeOutput(jnp.zeros((b, t), jnp.int32), jnp.zeros((b, t)), jnp.zeros((b,), jnp.int32),
                                 jnp.zeros((b,), bool))


decode_images = decode_latent_tokens  # latent tokens -> uint8 pixels, jitted (models/bagel/vae.py)
