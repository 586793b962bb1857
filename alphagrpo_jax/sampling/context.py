"""Interleaved contexts: lists of items per sample -> a packed, padded block prefilled into a KV cache.

Items and their layout are BAGEL's (models/bagel/packing.py): text, ViT images, clean VAE images. A
conditioning image is a VaeImage followed by a VitImage of the same picture (`condition_image`). A `Context` is an immutable pytree (KV cache + next RoPE id per row): forking
for CFG branches or group copies is `take`/`concat`, not a rebuild.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from alphagrpo_jax.models.bagel import packed_forward, packing
from alphagrpo_jax.models.bagel.attention import AppendMask, PackedMask
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.bagel.llm import GEN, UND, KVCache, Routing
from alphagrpo_jax.models.bagel.vae import patchify_latent
from alphagrpo_jax.parallel import hostdata, rules as rules_lib


class ContextError(ValueError):
    pass


CACHE_AXES = ("layers", "batch", "kv_length", "act_kv_heads", None)  # KVCache.k / .v logical axes


Item = packing.Item
Text, VitImage, VaeImage = packing.Text, packing.VitImage, packing.VaeImage


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
        """Zeros, created already sharded by the activation rules when a mesh is active (global arrays, so
        multi-process runs work; nothing is built whole on one device)."""
        def make():
            return Context(KVCache.zeros(cfg, batch, size), jnp.zeros((batch,), jnp.int32))

        cur = rules_lib.current()
        if cur is None:
            return make()
        mesh, rules = cur
        names = Context(KVCache(CACHE_AXES, CACHE_AXES, ("batch",)), ("batch",))
        return jax.tree.map(lambda a, n: hostdata.zeros(a.shape, a.dtype, rules_lib.activation_sharding(
            a.shape, n, mesh, rules)), jax.eval_shape(make), names)

    def take(self, idx) -> "Context":
        """Rows `idx` (e.g. np.repeat(arange(B), G) for G copies of each prompt; host numpy, so it is the same
        constant on every process). One program."""
        return _take(self, np.asarray(idx, np.int32))

    @staticmethod
    def concat(ctxs: Sequence["Context"]) -> "Context":
        """Stacks contexts along the batch (the CFG branches of one forward)."""
        return Context(KVCache(jnp.concatenate([c.cache.k for c in ctxs], axis=1),
                               jnp.concatenate([c.cache.v for c in ctxs], axis=1),
                               jnp.concatenate([c.cache.length for c in ctxs])),
                       jnp.concatenate([c.rope for c in ctxs]))


@jax.jit
def _take(ctx: Context, idx) -> Context:
    c = ctx.cache
    return Context(KVCache(jnp.take(c.k, idx, axis=1), jnp.take(c.v, idx, axis=1), c.length[idx]), ctx.rope[idx])


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
        toks = hostdata.to_host(patchify_latent(z, cfg.latent_patch_size))
        for j, i in enumerate(idx):
            out[i] = toks[j]
    return out


@jax.jit
def _encode(vae, pixels, keys):
    shape = (pixels.shape[1] // vae.downsample, pixels.shape[2] // vae.downsample, vae.z_channels)
    eps = jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
    return vae.encode(pixels, eps=eps)


def prefill(model, ctx: Context, block: packing.Packed) -> Context:
    """Appends a packed block (one document per row, laid out from the context's RoPE ids) to every row's
    cache; an error if it does not fit."""
    free = ctx.cache.size - hostdata.to_host(ctx.cache.length)
    need = block.batch.kind.shape[1]
    if (free < need).any():
        raise ContextError(f"context does not fit: block of {need} tokens (padded), but only "
                           f"{int(free.min())} of {ctx.cache.size} cache slots are free; use a larger cache size")
    return _prefill(model, ctx, block.batch, jnp.asarray(block.rope_advance, jnp.int32), block.has_gen)


@functools.partial(jax.jit, static_argnums=(4,), donate_argnums=(1,))
def _prefill(model, ctx: Context, batch: packed_forward.PackedBatch, rope_advance, has_gen: bool) -> Context:
    x, _ = packed_forward.embed_packed(model, batch)
    routing = Routing.mixed(jnp.where(batch.kind == packed_forward.VAE, GEN, UND)) if has_gen else Routing.und()
    mask = AppendMask(ctx.cache.length, PackedMask(batch.segment_ids, batch.split_ids, batch.modes))
    _, cache, _ = model.language_model(x, batch.positions, routing, mask, ctx.cache, write_cache=True)
    return Context(cache, ctx.rope + rope_advance)


def live_size(ctxs: Sequence[Context], smallest: int = 64) -> int:
    """The smallest cache size of the form smallest * 2^k (at most the caches' size) that holds every row of
    `ctxs`: contexts `trim`med to it attend over about their live slots, in few distinct shapes (each new one
    compiles its programs once)."""
    need = max(int(hostdata.to_host(c.cache.length).max()) for c in ctxs)
    live = smallest
    while live < need:
        live *= 2
    return min(live, min(c.cache.size for c in ctxs))


def trim(ctx: Context, size: int) -> Context:
    """`ctx` with only the first `size` cache slots (the caller checks that every row's length fits)."""
    return ctx if size >= ctx.cache.size else _trim(ctx, size)


@functools.partial(jax.jit, static_argnums=(1,))
def _trim(ctx: Context, size: int) -> Context:
    c = ctx.cache
    return Context(KVCache(c.k[:, :, :size], c.v[:, :, :size], c.length), ctx.rope)


def cache_size_for(samples: Sequence[Sequence[Item]], cfg: BagelConfig, new_tokens: int, bucket: int = 16) -> int:
    """KV slots a context needs: the longest row's items (packed in `bucket`s, as `build` does) plus
    `new_tokens` decoded text tokens (and their delimiters), rounded up to `bucket`."""
    longest = max(sum(packing.item_length(it, cfg) for it in s) for s in samples)
    return packing.round_up(packing.round_up(longest, bucket) + (new_tokens + 2 if new_tokens else 0), bucket)


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
    block = packing.pack([[s] for s in samples], cfg, hostdata.to_host(ctx.rope), tokens, bucket=bucket)
    return hostdata.cpu_barrier(prefill(model, ctx, block))
