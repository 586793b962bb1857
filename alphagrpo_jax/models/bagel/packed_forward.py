"""BAGEL's training forward on packed sequences: next-token CE on text + flow-matching MSE on noisy latents.

A `PackedBatch` is static-shape [B, L]: each row packs whole samples (documents, `segment_ids`, 0 = padding)
made of splits with attention modes. Token kinds: PAD, TEXT (incl. image markers), VIT, VAE. ViT tokens are
gathered from the SigLIP output of `vit_patches` by `vit_index`; VAE tokens carry their clean latent `latent_x0`,
noise and flow time `timestep` (0 for clean conditioning latents) aligned to the sequence.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from alphagrpo_jax.models.bagel.attention import PackedMask
from alphagrpo_jax.models.bagel.llm import GEN, UND, Routing
from alphagrpo_jax.models.bagel.model import Bagel

PAD, TEXT, VIT, VAE = 0, 1, 2, 3


@struct.dataclass
class PackedBatch:
    kind: jax.Array          # [B, L] int32 in {PAD, TEXT, VIT, VAE}
    text_ids: jax.Array      # [B, L] int32 (token id where kind == TEXT)
    positions: jax.Array     # [B, L] int32 RoPE ids (restart per document)
    segment_ids: jax.Array   # [B, L] int32 document id, 0 = padding
    split_ids: jax.Array     # [B, L] int32
    modes: jax.Array         # [B, L] int32 CAUSAL / FULL / NOISE
    ce_labels: jax.Array     # [B, L] int32 next-token label, -1 = no CE loss
    vit_patches: jax.Array   # [Ni, P, 588] ViT images (rows padded)
    vit_pos: jax.Array       # [Ni, P] int32 row*70+col
    vit_valid: jax.Array     # [Ni, P] bool
    vit_index: jax.Array     # [B, L] int32 flat index into Ni*P (where kind == VIT)
    latent_x0: jax.Array     # [B, L, 64] clean latent token (where kind == VAE)
    latent_pos: jax.Array    # [B, L] int32 row*max_latent_size+col
    timestep: jax.Array      # [B, L] float flow time t (0 = clean)
    noise: jax.Array         # [B, L, 64]
    mse_mask: jax.Array      # [B, L] bool noisy latent tokens with MSE loss


def embed_packed(model: Bagel, batch: PackedBatch) -> tuple[jax.Array, jax.Array]:
    """Input embeddings [B, L, D] and the flow-matching target (noise - x0) [B, L, 64]."""
    kind = batch.kind
    text = model.embed_text(jnp.where(kind == TEXT, batch.text_ids, 0))
    vit_out = model.embed_vit(batch.vit_patches, batch.vit_pos, batch.vit_valid)
    vit = jnp.take(vit_out.reshape(-1, vit_out.shape[-1]), jnp.clip(batch.vit_index, 0), axis=0)
    t = batch.timestep.astype(jnp.float32)
    x0, noise = batch.latent_x0.astype(jnp.float32), batch.noise.astype(jnp.float32)
    x_t = (1.0 - t[..., None]) * x0 + t[..., None] * noise
    lat = model.embed_latents(x_t, t, batch.latent_pos)
    h = jnp.where((kind == TEXT)[..., None], text, 0)
    h = jnp.where((kind == VIT)[..., None], vit.astype(h.dtype), h)
    h = jnp.where((kind == VAE)[..., None], lat.astype(h.dtype), h)
    return h, noise - x0


def forward_packed(model: Bagel, batch: PackedBatch, return_hidden: bool = False):
    """Returns dict: ce [B, L] per-token CE (0 where no label), mse [B, L, 64] per element (0 where no loss),
    ce_count, mse_count (tokens), and optionally the final hidden states."""
    x, target = embed_packed(model, batch)
    routing = Routing.mixed(jnp.where(batch.kind == VAE, GEN, UND))
    mask = PackedMask(batch.segment_ids, batch.split_ids, batch.modes)
    hidden, _, _ = model.language_model(x, batch.positions, routing, mask)
    has_ce = batch.ce_labels >= 0
    ce = jnp.where(has_ce, -model.language_model.token_log_probs(hidden, jnp.clip(batch.ce_labels, 0)), 0.0)
    v = model.velocity(hidden)
    mse = jnp.where(batch.mse_mask[..., None], (v - target) ** 2, 0.0)
    out = dict(ce=ce, mse=mse, ce_count=jnp.sum(has_ce), mse_count=jnp.sum(batch.mse_mask))
    if return_hidden:
        out["hidden"] = hidden
    return out


def losses(out: dict, ce_weight: float = 1.0, mse_weight: float = 1.0) -> dict:
    """BAGEL's reduction: ce = sum / #CE tokens, mse = sum over tokens of the per-token channel mean / #MSE
    tokens; loss = ce_weight * ce + mse_weight * mse."""
    ce = jnp.sum(out["ce"]) / jnp.maximum(out["ce_count"], 1)
    mse = jnp.sum(jnp.mean(out["mse"], axis=-1)) / jnp.maximum(out["mse_count"], 1)
    return dict(loss=ce_weight * ce + mse_weight * mse, ce=ce, mse=mse)
