"""Interleaved contexts: lists of items per sample -> a packed, padded block prefilled into a KV cache.

Items follow BAGEL: `Text` is `[im_start] ids [im_end]` (causal, und expert, one RoPE id per token);
`VitImage` is `[vision_start] SigLIP tokens [vision_end]` (full attention, und, one shared RoPE id, then +1);
`VaeImage` is `[vision_start] clean latents (t = 0) [vision_end]` (full, latents on the gen expert, markers
und, one shared RoPE id, then +1). A conditioning image is a VaeImage followed by a VitImage of the same
picture (`condition_image`). A `Context` is an immutable pytree (KV cache + next RoPE id per row): forking
for CFG branches or group copies is `take`/`concat`, not a rebuild.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from alphagrpo_jax.models.bagel import packed
from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL, AppendMask, PackedMask
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.bagel.llm import GEN, UND, KVCache, Routing
from alphagrpo_jax.models.bagel.vae import patchify_latent
from alphagrpo_jax.models.bagel.vit import patchify_image


class ContextError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Text:
    ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class VitImage:
    pixels: np.ndarray  # [H, W, 3] float in [-1, 1], H and W multiples of the ViT patch (14)


@dataclasses.dataclass(frozen=True, eq=False)
class VaeImage:
    pixels: np.ndarray  # [H, W, 3] float in [-1, 1], H and W multiples of the latent stride (16)


Item = Text | VitImage | VaeImage


def condition_image(vae_pixels: np.ndarray, vit_pixels: np.ndarray) -> list[Item]:
    """BAGEL's conditioning image: clean VAE latents first, then ViT tokens of the same picture."""
    return [VaeImage(vae_pixels), VitImage(vit_pixels)]


@struct.dataclass
class Context:
    cache: KVCache   # k/v [layers, B, S, kv_heads, head_dim], length [B]
    rope: jax.Array  # [B] int32: RoPE id of the next token

    @property
    def batch(self) -> int:
        return self.rope.shape[0]

    @staticmethod
    def empty(cfg: BagelConfig, batch: int, size: int) -> "Context":
        return Context(KVCache.zeros(cfg, batch, size), jnp.zeros((batch,), jnp.int32))

    def take(self, idx) -> "Context":
        """Rows `idx` (e.g. jnp.repeat(arange(B), G) for G copies of each prompt)."""
        idx = jnp.asarray(idx)
        c = self.cache
        return Context(KVCache(jnp.take(c.k, idx, axis=1), jnp.take(c.v, idx, axis=1), c.length[idx]),
                       self.rope[idx])

    @staticmethod
    def concat(ctxs: Sequence["Context"]) -> "Context":
        """Stacks contexts along the batch (the CFG branches of one forward)."""
        return Context(KVCache(jnp.concatenate([c.cache.k for c in ctxs], axis=1),
                               jnp.concatenate([c.cache.v for c in ctxs], axis=1),
                               jnp.concatenate([c.cache.length for c in ctxs])),
                       jnp.concatenate([c.rope for c in ctxs]))


def _bucket(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


def item_length(item: Item, cfg: BagelConfig) -> int:
    if isinstance(item, Text):
        return len(item.ids) + 2
    h, w = item.pixels.shape[:2]
    stride = cfg.vit.patch_size if isinstance(item, VitImage) else cfg.latent_downsample
    if h % stride or w % stride:
        raise ContextError(f"{type(item).__name__} of {h}x{w} px: sides must be multiples of {stride}")
    return (h // stride) * (w // stride) + 2


def encode_vae_images(vae, images: Sequence[VaeImage], key: jax.Array, cfg: BagelConfig) -> list[np.ndarray]:
    """Clean latent tokens [h*w, 64] per image (posterior SAMPLE, as BAGEL), one jitted encode per size."""
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.pixels.shape, []).append(i)
    for shape, idx in by_shape.items():
        pix = jnp.asarray(np.stack([images[i].pixels for i in idx]), jnp.float32)
        keys = jax.random.split(jax.random.fold_in(key, idx[0]), len(idx))
        z = _encode(vae, pix, keys)
        toks = np.asarray(patchify_latent(z, cfg.latent_patch_size))
        for j, i in enumerate(idx):
            out[i] = toks[j]
    return out


@jax.jit
def _encode(vae, pixels, keys):
    shape = (pixels.shape[1] // vae.downsample, pixels.shape[2] // vae.downsample, vae.z_channels)
    eps = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
    return vae.encode(pixels, eps=eps)


@dataclasses.dataclass
class PackedBlock:
    """Host-side result of packing one block: the batch (numpy), per-row RoPE advance and new RoPE."""
    batch: packed.PackedBatch
    rope_advance: np.ndarray  # [B]
    lengths: np.ndarray       # [B] valid tokens per row
    has_gen: bool             # any VAE latent tokens (static: selects the routing)


def pack_block(samples: Sequence[Sequence[Item]], cfg: BagelConfig, start_rope: np.ndarray,
               vae_tokens: dict[int, np.ndarray], bucket: int = 16, vit_bucket: int = 16) -> PackedBlock:
    """Lays out items per row: BAGEL positions (from `start_rope`), modes, splits, kinds, expert ids.

    `vae_tokens` maps id(VaeImage) -> its clean latent tokens [n, 64] (from `encode_vae_images`).
    """
    tok = cfg.tokens
    b = len(samples)
    lengths = np.array([sum(item_length(it, cfg) for it in s) for s in samples], np.int64)
    n = _bucket(int(lengths.max(initial=1)), bucket)
    z = lambda dt=np.int32: np.zeros((b, n), dt)  # noqa: E731
    kind, ids, pos, seg, split, modes, vit_index, lat_pos = z(), z(), z(), z(), z(), z(), z(), z()
    lat = np.zeros((b, n, cfg.patch_latent_dim), np.float32)
    vit_items = [it for s in samples for it in s if isinstance(it, VitImage)]
    p_max = _bucket(max([item_length(v, cfg) - 2 for v in vit_items], default=1), vit_bucket)
    vit_patches = np.zeros((max(len(vit_items), 1), p_max, 3 * cfg.vit.patch_size ** 2), np.float32)
    vit_pos = np.zeros(vit_patches.shape[:2], np.int32)
    vit_valid = np.zeros(vit_patches.shape[:2], bool)
    advance = np.zeros(b, np.int64)
    vit_count = 0
    for r, items in enumerate(samples):
        cur, rope, nsplit = 0, int(start_rope[r]), 0
        for it in items:
            m = item_length(it, cfg)
            sl = slice(cur, cur + m)
            seg[r, sl], split[r, sl] = 1, nsplit
            if isinstance(it, Text):
                kind[r, sl] = packed.TEXT
                ids[r, sl] = [tok.bos, *it.ids, tok.eos]
                pos[r, sl] = rope + np.arange(m)
                modes[r, sl] = CAUSAL
                rope += m
            else:
                kind[r, sl] = packed.TEXT  # the two markers
                ids[r, cur], ids[r, cur + m - 1] = tok.start_of_image, tok.end_of_image
                inner = slice(cur + 1, cur + m - 1)
                pos[r, sl], modes[r, sl] = rope, FULL
                if isinstance(it, VitImage):
                    patches, pids = patchify_image(it.pixels, cfg.vit.patch_size, cfg.vit_max_num_patch_per_side)
                    vit_patches[vit_count, : m - 2], vit_pos[vit_count, : m - 2] = patches, pids
                    vit_valid[vit_count, : m - 2] = True
                    kind[r, inner] = packed.VIT
                    vit_index[r, inner] = vit_count * p_max + np.arange(m - 2)
                    vit_count += 1
                else:
                    if id(it) not in vae_tokens:
                        raise ContextError("VaeImage without encoded latents (call encode_vae_images first)")
                    gh, gw = (s // cfg.latent_downsample for s in it.pixels.shape[:2])
                    if max(gh, gw) > cfg.max_latent_size:
                        raise ContextError(f"VaeImage of {gh}x{gw} latent tokens exceeds max_latent_size "
                                           f"{cfg.max_latent_size}")
                    kind[r, inner] = packed.VAE
                    lat[r, inner] = vae_tokens[id(it)]
                    lat_pos[r, inner] = (np.arange(gh)[:, None] * cfg.max_latent_size + np.arange(gw)).reshape(-1)
                rope += 1
            cur += m
            nsplit += 1
        advance[r] = rope - int(start_rope[r])
    batch = packed.PackedBatch(
        kind=kind, text_ids=ids, positions=pos, segment_ids=seg, split_ids=split, modes=modes,
        ce_labels=np.full((b, n), -1, np.int32), vit_patches=vit_patches, vit_pos=vit_pos, vit_valid=vit_valid,
        vit_index=vit_index, latent_x0=lat, latent_pos=lat_pos, timestep=np.zeros((b, n), np.float32),
        noise=np.zeros_like(lat), mse_mask=np.zeros((b, n), bool))
    return PackedBlock(batch, advance, lengths, bool((kind == packed.VAE).any()))


def prefill(model, ctx: Context, block: PackedBlock) -> Context:
    """Appends a packed block to every row's cache (errors if it does not fit)."""
    free = ctx.cache.size - np.asarray(ctx.cache.length)
    need = block.batch.kind.shape[1]
    if (free < need).any():
        raise ContextError(f"context does not fit: block of {need} tokens (padded), but only "
                           f"{int(free.min())} of {ctx.cache.size} cache slots are free; raise max_context_len")
    return _prefill(model, ctx, block.batch, jnp.asarray(block.rope_advance, jnp.int32), block.has_gen)


@functools.partial(jax.jit, static_argnums=(4,))
def _prefill(model, ctx: Context, batch: packed.PackedBatch, rope_advance, has_gen: bool) -> Context:
    x, _ = packed.embed_packed(model, batch)
    routing = Routing.mixed(jnp.where(batch.kind == packed.VAE, GEN, UND)) if has_gen else Routing.und()
    mask = AppendMask(ctx.cache.length, PackedMask(batch.segment_ids, batch.split_ids, batch.modes))
    _, cache, _ = model.language_model(x, batch.positions, routing, mask, ctx.cache, write_cache=True)
    return Context(cache, ctx.rope + rope_advance)


def build(model, vae, samples: Sequence[Sequence[Item]], cache_size: int, key: jax.Array | None = None,
          ctx: Context | None = None, bucket: int = 16) -> Context:
    """Prefills `samples` (one item list per row) into a new context of `cache_size` slots, or appends them to
    `ctx`. Rows with no items stay empty (BAGEL's empty unconditional context)."""
    cfg = model.cfg
    if ctx is None:
        ctx = Context.empty(cfg, len(samples), cache_size)
    if len(samples) != ctx.batch:
        raise ContextError(f"{len(samples)} item lists for a context of batch {ctx.batch}")
    if not any(samples):
        return ctx
    vae_items = [it for s in samples for it in s if isinstance(it, VaeImage)]
    tokens = {}
    if vae_items:
        if vae is None or key is None:
            raise ContextError("VaeImage items need the autoencoder and a PRNG key (posterior sampling)")
        tokens = {id(it): t for it, t in zip(vae_items, encode_vae_images(vae, vae_items, key, cfg))}
    block = pack_block(samples, cfg, np.asarray(ctx.rope), tokens, bucket=bucket)
    return prefill(model, ctx, block)
