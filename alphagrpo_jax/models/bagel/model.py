"""The BAGEL model: the MoT LLM plus its bridges (ViT + connector, latent in/out, timestep and 2-D tables).

The FLUX autoencoder is a separate module (`vae.AutoEncoder`, file `ae.safetensors`), as in the release.
Embedding helpers return LLM inputs [B, L, D] in the activation dtype; `velocity` and `logits` are fp32
heads (AlphaGRPO runs lm_head and llm2vae in fp32).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax.models.bagel import embeddings, llm, vit
from alphagrpo_jax.models.bagel import weight_map as wm
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.layers import Dense
from alphagrpo_jax.parallel.rules import constrain


class Bagel(nnx.Module):
    def __init__(self, cfg: BagelConfig, rngs: nnx.Rngs):
        pd, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
        d = cfg.llm.hidden_size
        self.cfg = cfg
        self.language_model = llm.LanguageModel(cfg, rngs)
        self.vit = vit.SiglipVisionModel(cfg.vit, rngs=rngs, param_dtype=pd, dtype=dt)
        self.connector = vit.Connector(cfg.vit.hidden_size, d, rngs=rngs, param_dtype=pd, dtype=dt)
        self.vit_pos_embed = embeddings.PositionTable(cfg.vit_max_num_patch_per_side, d, param_dtype=pd)
        self.time_embedder = embeddings.TimestepEmbedder(d, rngs=rngs, param_dtype=pd, dtype=dt)
        self.vae2llm = Dense(cfg.patch_latent_dim, d, ("latent", "embed"), rngs=rngs, param_dtype=pd)
        self.llm2vae = Dense(d, cfg.patch_latent_dim, ("embed", "latent"), rngs=rngs, param_dtype=pd)
        self.latent_pos_embed = embeddings.PositionTable(cfg.max_latent_size, d, param_dtype=pd)

    @property
    def dtype(self):
        return jnp.dtype(self.cfg.dtype)

    # ------------------------------------------------------------------------------------ LLM inputs
    def embed_text(self, ids: jax.Array) -> jax.Array:
        """ids [B, L] -> [B, L, D]."""
        return self.language_model.embed(ids)

    def embed_latents(self, x: jax.Array, t: jax.Array, pos_ids: jax.Array) -> jax.Array:
        """Latent tokens x [B, N, 64] at flow time t ([B] or [B, N], in [0, 1]) with 2-D ids [B, N] ->
        vae2llm(x) + time_embedder(t) + latent_pos_embed[pos] [B, N, D]."""
        t = jnp.broadcast_to(t[:, None] if t.ndim == 1 else t, x.shape[:2]).astype(jnp.float32)
        h = (self.vae2llm(x.astype(self.dtype), dtype=jnp.float32)
             + self.time_embedder(t).astype(jnp.float32)
             + self.latent_pos_embed(pos_ids).astype(jnp.float32))
        return constrain(h.astype(self.dtype), ("batch", "length", "act_embed"))

    def embed_vit(self, patches: jax.Array, pos_ids: jax.Array, valid: jax.Array) -> jax.Array:
        """ViT patches [B, N, 588] -> connector(SigLIP) + vit_pos_embed[pos] [B, N, D] (invalid rows zero)."""
        feats = self.connector(self.vit(patches, pos_ids, valid, remat=self.cfg.remat))
        h = feats.astype(jnp.float32) + self.vit_pos_embed(pos_ids).astype(jnp.float32)
        return jnp.where(valid[..., None], h, 0).astype(self.dtype)

    def image_block(self, inner: jax.Array) -> jax.Array:
        """[B, N, D] -> [vision_start, inner..., vision_end] [B, N + 2, D]."""
        b = inner.shape[0]
        tok = self.cfg.tokens
        ends = self.embed_text(jnp.asarray([[tok.start_of_image, tok.end_of_image]] * b, jnp.int32))
        return jnp.concatenate([ends[:, :1], inner.astype(ends.dtype), ends[:, 1:]], axis=1)

    # ------------------------------------------------------------------------------------ heads
    def velocity(self, hidden: jax.Array) -> jax.Array:
        """Final hidden states of latent tokens [B, N, D] -> velocity [B, N, 64] (fp32)."""
        return self.llm2vae(hidden, dtype=jnp.float32)

    def logits(self, hidden: jax.Array) -> jax.Array:
        return self.language_model.logits(hidden)


def weight_map(cfg: BagelConfig) -> list[wm.TensorMap]:
    """Every tensor of the release's `ema.safetensors` -> our Bagel state."""
    d = cfg.llm.hidden_size
    maps = llm.weight_map(cfg, ("language_model",))
    maps += vit.weight_map(cfg.vit, d, ("vit",), ("connector",))
    maps += embeddings.weight_map(d, max_latent_size=cfg.max_latent_size,
                                  vit_max_per_side=cfg.vit_max_num_patch_per_side, prefix_time=("time_embedder",),
                                  prefix_latent_pos=("latent_pos_embed",), prefix_vit_pos=("vit_pos_embed",))
    for name in ("vae2llm", "llm2vae"):
        maps.append(wm.TensorMap.single((name, "kernel"), f"{name}.weight", *wm.linear()))
        maps.append(wm.TensorMap.single((name, "bias"), f"{name}.bias", *wm.identity()))
    return maps
