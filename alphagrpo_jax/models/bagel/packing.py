"""BAGEL's sequence layout: item lists -> a static-shape `PackedBatch` (host side, numpy).

Items: `Text` is `[im_start] ids [im_end]` (causal, und expert, consecutive RoPE ids; with `loss`, next-token
CE on im_start..last id, labels ids..im_end); `VitImage` is `[vision_start] SigLIP tokens [vision_end]` (full,
und, one shared RoPE id, then +1); `VaeImage` is `[vision_start] latents [vision_end]` (latents on the gen
expert, markers und, one shared RoPE id): clean (t = 0, full attention, RoPE +1) or `noisy` (a generation
target: noise mode, invisible to every other split, MSE loss, RoPE NOT advanced). Each row packs one or more
documents (`segment_ids` 1, 2, ...; RoPE ids restart at each document's start id).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL, NOISE
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.bagel.packed_forward import TEXT, VAE, VIT, PackedBatch
from alphagrpo_jax.models.bagel.vit import patchify_image


class PackingError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Text:
    ids: tuple[int, ...]
    loss: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class VitImage:
    pixels: np.ndarray  # [H, W, 3] float in [-1, 1], H and W multiples of the ViT patch (14)


@dataclasses.dataclass(frozen=True, eq=False)
class VaeImage:
    pixels: np.ndarray  # [H, W, 3] float in [-1, 1], H and W multiples of the latent stride (16)
    noisy: bool = False


Item = Text | VitImage | VaeImage
Document = Sequence[Item]


def item_length(item: Item, cfg: BagelConfig) -> int:
    if isinstance(item, Text):
        return len(item.ids) + 2
    h, w = item.pixels.shape[:2]
    stride = cfg.vit.patch_size if isinstance(item, VitImage) else cfg.latent_downsample
    if h % stride or w % stride:
        raise PackingError(f"{type(item).__name__} of {h}x{w} px: sides must be multiples of {stride}")
    return (h // stride) * (w // stride) + 2


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-n // multiple) * multiple)


@dataclasses.dataclass
class Packed:
    batch: PackedBatch           # numpy arrays
    rope_advance: np.ndarray     # [B] RoPE ids consumed per row (single-document rows: next id - start id)
    lengths: np.ndarray          # [B] valid tokens per row
    vae_images: list[VaeImage]   # in `vae_index` order (their latent tokens fill `latent_x0`)
    image_id: np.ndarray         # [B, L] int32 index into vae_images per latent token, -1 elsewhere
    vae_index: np.ndarray        # [B, L] int32 index into the concatenated latent tokens of vae_images

    @property
    def has_gen(self) -> bool:
        return bool((self.batch.kind == VAE).any())


def pack(rows: Sequence[Sequence[Document]], cfg: BagelConfig, start_rope: Sequence[int] | None = None,
         vae_tokens: dict[int, np.ndarray] | None = None, length: int | None = None, bucket: int = 16,
         vit_bucket: int = 16) -> Packed:
    """Lays out rows of documents. `start_rope[r]` is the first RoPE id of row r's (single) document, e.g. a
    context's current rope; `vae_tokens` maps id(VaeImage) -> clean latent tokens [n, 64] (else latent_x0 stays
    zero for in-step encoding). `length` fixes L (an error if a row is longer), else rounds up to `bucket`."""
    tok = cfg.tokens
    b = len(rows)
    start_rope = np.zeros(b, np.int64) if start_rope is None else np.asarray(start_rope, np.int64)
    lengths = np.array([sum(item_length(it, cfg) for doc in row for it in doc) for row in rows], np.int64)
    n = round_up(int(lengths.max(initial=1)), bucket) if length is None else length
    if lengths.max(initial=0) > n:
        raise PackingError(f"a row needs {int(lengths.max())} tokens, more than the packed length {n}")
    z = lambda fill=0: np.full((b, n), fill, np.int32)  # noqa: E731
    kind, ids, pos, seg, split, modes, vit_index, lat_pos = z(), z(), z(), z(), z(), z(), z(), z()
    labels, image_id, vae_index = z(-1), z(-1), z(-1)
    lat = np.zeros((b, n, cfg.patch_latent_dim), np.float32)
    mse = np.zeros((b, n), bool)
    vit_items = [it for row in rows for doc in row for it in doc if isinstance(it, VitImage)]
    p_max = round_up(max([item_length(v, cfg) - 2 for v in vit_items], default=1), vit_bucket)
    vit_patches = np.zeros((max(len(vit_items), 1), p_max, 3 * cfg.vit.patch_size ** 2), np.float32)
    vit_pos = np.zeros(vit_patches.shape[:2], np.int32)
    vit_valid = np.zeros(vit_patches.shape[:2], bool)
    vae_images: list[VaeImage] = []
    advance = np.zeros(b, np.int64)
    n_vit = n_lat = 0
    for r, row in enumerate(rows):
        cur, nsplit = 0, 0
        for d, doc in enumerate(row):
            rope = int(start_rope[r]) if d == 0 else 0
            for it in doc:
                m = item_length(it, cfg)
                sl, inner = slice(cur, cur + m), slice(cur + 1, cur + m - 1)
                seg[r, sl], split[r, sl] = d + 1, nsplit
                if isinstance(it, Text):
                    kind[r, sl], ids[r, sl], modes[r, sl] = TEXT, [tok.bos, *it.ids, tok.eos], CAUSAL
                    pos[r, sl] = rope + np.arange(m)
                    if it.loss:
                        labels[r, cur: cur + m - 1] = [*it.ids, tok.eos]
                    rope += m
                else:
                    kind[r, sl] = TEXT  # the two markers keep text kind (und expert)
                    ids[r, cur], ids[r, cur + m - 1] = tok.start_of_image, tok.end_of_image
                    pos[r, sl] = rope
                    noisy = isinstance(it, VaeImage) and it.noisy
                    modes[r, sl] = NOISE if noisy else FULL
                    if isinstance(it, VitImage):
                        patches, pids = patchify_image(it.pixels, cfg.vit.patch_size, cfg.vit_max_num_patch_per_side)
                        vit_patches[n_vit, : m - 2], vit_pos[n_vit, : m - 2], vit_valid[n_vit, : m - 2] = (
                            patches, pids, True)
                        kind[r, inner], vit_index[r, inner] = VIT, n_vit * p_max + np.arange(m - 2)
                        n_vit += 1
                    else:
                        gh, gw = (s // cfg.latent_downsample for s in it.pixels.shape[:2])
                        if max(gh, gw) > cfg.max_latent_size:
                            raise PackingError(f"VaeImage of {gh}x{gw} latent tokens exceeds max_latent_size "
                                               f"{cfg.max_latent_size}")
                        kind[r, inner], image_id[r, inner] = VAE, len(vae_images)
                        vae_index[r, inner] = n_lat + np.arange(m - 2)
                        lat_pos[r, inner] = (np.arange(gh)[:, None] * cfg.max_latent_size + np.arange(gw)).ravel()
                        if vae_tokens is not None and id(it) in vae_tokens:
                            lat[r, inner] = vae_tokens[id(it)]
                        mse[r, inner] = noisy
                        vae_images.append(it)
                        n_lat += m - 2
                    rope += 0 if noisy else 1
                cur += m
                nsplit += 1
            if d == 0:
                advance[r] = rope - int(start_rope[r])
    batch = PackedBatch(
        kind=kind, text_ids=ids, positions=pos, segment_ids=seg, split_ids=split, modes=modes, ce_labels=labels,
        vit_patches=vit_patches, vit_pos=vit_pos, vit_valid=vit_valid, vit_index=vit_index, latent_x0=lat,
        latent_pos=lat_pos, timestep=np.zeros((b, n), np.float32), noise=np.zeros_like(lat), mse_mask=mse)
    return Packed(batch, advance, lengths, vae_images, image_id, vae_index)
