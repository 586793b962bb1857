"""BAGEL's understanding encoder: SigLIP NaViT (spec §3), the MLP connector, and their weight maps.

Upstream packs variable-size images into one sequence with `cu_seqlens`; here every image is one row of a
static-shape batch: patches [B, N, 588] padded to N with a `valid` mask, attention bidirectional among the valid
tokens of the same row. Encoder layers are stacked on a leading `layers` axis and run with `lax.scan`.

Patch features use upstream's order (py, px, c): index (py*14 + px)*3 + c, which is what the release's
`patch_embedding.weight` [hidden, 588] (a Conv2d flattened by `convert_conv2d_to_linear`) expects.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import weight_map as wm
from alphagrpo_jax.models.bagel.config import ViTConfig
from alphagrpo_jax.models.bagel.embeddings import shape_checked
from alphagrpo_jax.parallel.rules import constrain
from alphagrpo_jax.parallel.state import param

RELEASE_VIT = "vit_model.vision_model."
RELEASE_CONNECTOR = "connector."


# ---------------------------------------------------------------------------------------------- host inputs

def patchify_image(pixels_hwc: np.ndarray, patch: int = 14, max_per_side: int = 70
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Host-side (numpy). pixels [H, W, C] float in [-1, 1], H and W multiples of `patch`
    -> (patches [gh*gw, patch*patch*C] float32, feature (py*patch + px)*C + c, row-major over the grid;
        pos_ids [gh*gw] int32 = row*max_per_side + col)."""
    x = np.asarray(pixels_hwc, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"vit.patchify_image: expected pixels [H, W, C], got shape {x.shape}")
    h, w, c = x.shape
    if h % patch or w % patch:
        raise ValueError(f"vit.patchify_image: image {h}x{w} (HxW) is not a multiple of the patch size {patch}")
    gh, gw = h // patch, w // patch
    if gh > max_per_side or gw > max_per_side:
        raise ValueError(f"vit.patchify_image: patch grid {gh}x{gw} exceeds max_per_side {max_per_side} "
                         f"(at most {max_per_side * patch} px per side)")
    patches = x.reshape(gh, patch, gw, patch, c).transpose(0, 2, 1, 3, 4).reshape(gh * gw, patch * patch * c)
    pos_ids = (np.arange(gh)[:, None] * max_per_side + np.arange(gw)[None, :]).reshape(-1).astype(np.int32)
    return patches, pos_ids


def batch_images(items: Sequence[tuple[np.ndarray, np.ndarray]], num_tokens: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pads `patchify_image` outputs to one static batch: (patches [B, N, F] f32, pos_ids [B, N] int32,
    valid [B, N] bool). Padding rows are zeros with pos_id 0 (any in-range id would do: they are masked)."""
    if not items:
        raise ValueError("vit.batch_images: no images given")
    feat = items[0][0].shape[1]
    patches = np.zeros((len(items), num_tokens, feat), np.float32)
    pos_ids = np.zeros((len(items), num_tokens), np.int32)
    valid = np.zeros((len(items), num_tokens), bool)
    for b, (p, ids) in enumerate(items):
        n = p.shape[0]
        if n > num_tokens:
            raise ValueError(f"vit.batch_images: image {b} has {n} patches, more than num_tokens={num_tokens}")
        if p.shape[1] != feat or ids.shape != (n,):
            raise ValueError(f"vit.batch_images: image {b} has patches {p.shape} / pos_ids {ids.shape}, "
                             f"expected [n, {feat}] / [n]")
        patches[b, :n], pos_ids[b, :n], valid[b, :n] = p, ids, True
    return patches, pos_ids, valid


# ------------------------------------------------------------------------------------------------- modules

class SiglipAttention(nnx.Module):
    """Multi-head self-attention with biased q/k/v/out projections; keys masked per row, softmax in fp32."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs, param_dtype, dtype):
        self.dtype = dtype
        self.scale = cfg.head_dim ** -0.5
        heads = (cfg.num_heads, cfg.head_dim)
        proj = dict(rngs=rngs, param_dtype=param_dtype)
        self.q_proj = layers.Dense(cfg.hidden_size, heads, ("vit_embed", "vit_heads", "head_dim"), **proj)
        self.k_proj = layers.Dense(cfg.hidden_size, heads, ("vit_embed", "vit_heads", "head_dim"), **proj)
        self.v_proj = layers.Dense(cfg.hidden_size, heads, ("vit_embed", "vit_heads", "head_dim"), **proj)
        self.out_proj = layers.Dense(heads, cfg.hidden_size, ("vit_heads", "head_dim", "vit_embed"), **proj)

    def __call__(self, x: jax.Array, key_valid: jax.Array) -> jax.Array:
        """x [B, N, hidden], key_valid [B, N] bool -> [B, N, hidden]."""
        names = ("batch", "length", "act_heads", None)
        q = constrain(self.q_proj(x), names)
        k = constrain(self.k_proj(x), names)
        v = constrain(self.v_proj(x), names)
        scores = layers.matmul(q, k, "bqhd,bkhd->bhqk", dtype=jnp.float32) * self.scale
        # A finite fill keeps an all-padding row (and its gradient) free of NaNs.
        scores = jnp.where(key_valid[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = layers.matmul(probs, v, "bhqk,bkhd->bqhd", dtype=self.dtype)
        return self.out_proj(out)


class SiglipMLP(nnx.Module):
    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs, param_dtype, dtype):
        self.dtype = dtype
        self.fc1 = layers.Dense(cfg.hidden_size, cfg.intermediate_size, ("vit_embed", "vit_mlp"), rngs=rngs,
                                param_dtype=param_dtype)
        self.fc2 = layers.Dense(cfg.intermediate_size, cfg.hidden_size, ("vit_mlp", "vit_embed"), rngs=rngs,
                                param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.gelu_tanh(self.fc1(x, dtype=jnp.float32)).astype(self.dtype)
        return self.fc2(constrain(h, ("batch", "length", "act_mlp")))


class SiglipEncoderLayer(nnx.Module):
    """Pre-LN block: x + attn(LN1 x), then + mlp(LN2 x)."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs, param_dtype, dtype):
        eps = cfg.layer_norm_eps
        self.layer_norm1 = layers.LayerNorm(cfg.hidden_size, eps, param_dtype=param_dtype)
        self.self_attn = SiglipAttention(cfg, rngs=rngs, param_dtype=param_dtype, dtype=dtype)
        self.layer_norm2 = layers.LayerNorm(cfg.hidden_size, eps, param_dtype=param_dtype)
        self.mlp = SiglipMLP(cfg, rngs=rngs, param_dtype=param_dtype, dtype=dtype)

    def __call__(self, x: jax.Array, key_valid: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x), key_valid)
        x = x + self.mlp(self.layer_norm2(x))
        return constrain(x, ("batch", "length", "act_embed"))


class SiglipVisionModel(nnx.Module):
    """SigLIP NaViT as BAGEL runs it: `cfg.num_layers` encoder layers, then `post_layernorm` (no pooling head).

    `__call__(patches [B, N, 588], pos_ids [B, N] int32, valid [B, N] bool) -> [B, N, hidden]` in `dtype`;
    rows at invalid positions are zero, and whatever padding holds (even NaN or out-of-range ids) does not
    affect valid rows. With `return_layers=True` also returns the residual stream after every layer
    [num_layers, B, N, hidden].
    """

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)
        self.num_features = cfg.patch_size ** 2 * cfg.num_channels
        self.patch_embedding = layers.Dense(self.num_features, cfg.hidden_size, ("vit_patch", "vit_embed"),
                                            rngs=rngs, param_dtype=param_dtype)
        num_pos = cfg.max_patches_per_side ** 2
        self.position_embedding = param(
            jax.random.normal(rngs.params(), (num_pos, cfg.hidden_size), param_dtype) * cfg.hidden_size ** -0.5,
            ("table", "vit_embed"))
        self.layers = layers.create_stacked(
            lambda r: SiglipEncoderLayer(cfg, rngs=r, param_dtype=param_dtype, dtype=self.dtype),
            cfg.num_layers, rngs)
        self.post_layernorm = layers.LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, param_dtype=param_dtype)

    def embed(self, patches: jax.Array, pos_ids: jax.Array) -> jax.Array:
        """patch_embedding(patches) + position_embedding[pos_ids]: [B, N, 588], [B, N] -> [B, N, hidden]."""
        pos = jnp.take(self.position_embedding[...], pos_ids, axis=0, mode="clip").astype(jnp.float32)
        x = (self.patch_embedding(patches.astype(self.dtype), dtype=jnp.float32) + pos).astype(self.dtype)
        return constrain(x, ("batch", "length", "act_embed"))

    def __call__(self, patches: jax.Array, pos_ids: jax.Array, valid: jax.Array, *, remat: str = "none",
                 return_layers: bool = False):
        b, n, f = patches.shape
        if f != self.num_features:
            raise ValueError(f"SiglipVisionModel: patches have {f} features, expected {self.num_features} "
                             f"(patch {self.cfg.patch_size}^2 x {self.cfg.num_channels} channels)")
        if pos_ids.shape != (b, n) or valid.shape != (b, n):
            raise ValueError(f"SiglipVisionModel: pos_ids {pos_ids.shape} and valid {valid.shape} must be "
                             f"[B, N] = {(b, n)}")
        valid = valid.astype(bool)
        # Zeroing padding makes its content irrelevant: a NaN there would otherwise reach valid rows as 0 * NaN
        # in probs @ v.
        x = jnp.where(valid[..., None], self.embed(patches, pos_ids), 0).astype(self.dtype)

        def body(layer, h, _):
            h = layer(h, valid)
            return h, (h if return_layers else None)

        x, per_layer = layers.scan_layers(self.layers, body, x, remat=remat)
        out = jnp.where(valid[..., None], self.post_layernorm(x), 0).astype(self.dtype)
        return (out, per_layer) if return_layers else out


class Connector(nnx.Module):
    """ViT features -> LLM width: fc2(gelu_tanh(fc1(x))), both with bias. [..., vit_hidden] -> [..., llm_hidden]."""

    def __init__(self, vit_hidden: int, llm_hidden: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32,
                 dtype=jnp.float32):
        self.dtype = jnp.dtype(dtype)
        self.fc1 = layers.Dense(vit_hidden, llm_hidden, ("vit_embed", "mlp"), rngs=rngs, param_dtype=param_dtype)
        self.fc2 = layers.Dense(llm_hidden, llm_hidden, ("mlp", "embed"), rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.gelu_tanh(self.fc1(x.astype(self.dtype), dtype=jnp.float32)).astype(self.dtype)
        return self.fc2(h, dtype=self.dtype)


# ------------------------------------------------------------------------------------------------ weight map

def weight_map(cfg: ViTConfig, llm_hidden: int, prefix_vit: Sequence[str], prefix_connector: Sequence[str]
               ) -> list[wm.TensorMap]:
    """Release `vit_model.vision_model.*` and `connector.*` tensors -> our SiglipVisionModel / Connector at the
    given NNX path prefixes. Per-layer tensors are stacked on the leading `layers` axis."""
    pv, pc = tuple(prefix_vit), tuple(prefix_connector)
    d, inter, heads, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.head_dim
    feats = cfg.patch_size ** 2 * cfg.num_channels
    maps: list[wm.TensorMap] = []

    def single(path, key, torch_shape, pair):
        maps.append(wm.TensorMap.single(path, key, *shape_checked(key, torch_shape, pair)))

    emb = RELEASE_VIT + "embeddings."
    single(pv + ("patch_embedding", "kernel"), emb + "patch_embedding.weight", (d, feats), wm.linear())
    single(pv + ("patch_embedding", "bias"), emb + "patch_embedding.bias", (d,), wm.identity())
    single(pv + ("position_embedding",), emb + "position_embedding.weight", (cfg.max_patches_per_side ** 2, d),
           wm.identity())

    per_layer = [  # (our path under layers/, release name under encoder.layers.{i}., torch shape, transforms)
        (("self_attn", "out_proj", "kernel"), "self_attn.out_proj.weight", (d, d), wm.linear(in_shape=(heads, hd))),
        (("self_attn", "out_proj", "bias"), "self_attn.out_proj.bias", (d,), wm.identity()),
        (("layer_norm1", "scale"), "layer_norm1.weight", (d,), wm.identity()),
        (("layer_norm1", "bias"), "layer_norm1.bias", (d,), wm.identity()),
        (("layer_norm2", "scale"), "layer_norm2.weight", (d,), wm.identity()),
        (("layer_norm2", "bias"), "layer_norm2.bias", (d,), wm.identity()),
        (("mlp", "fc1", "kernel"), "mlp.fc1.weight", (inter, d), wm.linear()),
        (("mlp", "fc1", "bias"), "mlp.fc1.bias", (inter,), wm.identity()),
        (("mlp", "fc2", "kernel"), "mlp.fc2.weight", (d, inter), wm.linear()),
        (("mlp", "fc2", "bias"), "mlp.fc2.bias", (d,), wm.identity()),
    ]
    for name in ("q_proj", "k_proj", "v_proj"):
        per_layer.append((("self_attn", name, "kernel"), f"self_attn.{name}.weight", (d, d),
                          wm.linear(out_shape=(heads, hd))))
        per_layer.append((("self_attn", name, "bias"), f"self_attn.{name}.bias", (d,),
                          wm.reshape((heads, hd), (d,))))
    for ours, theirs, torch_shape, pair in per_layer:
        fmt = RELEASE_VIT + "encoder.layers.{i}." + theirs
        maps.append(wm.TensorMap(pv + ("layers",) + ours, wm.stacked_keys(fmt, cfg.num_layers),
                                 *shape_checked(fmt, torch_shape, pair)))

    single(pv + ("post_layernorm", "scale"), RELEASE_VIT + "post_layernorm.weight", (d,), wm.identity())
    single(pv + ("post_layernorm", "bias"), RELEASE_VIT + "post_layernorm.bias", (d,), wm.identity())
    for name, n_in in (("fc1", d), ("fc2", llm_hidden)):
        key = f"{RELEASE_CONNECTOR}{name}"
        single(pc + (name, "kernel"), key + ".weight", (llm_hidden, n_in), wm.linear())
        single(pc + (name, "bias"), key + ".bias", (llm_hidden,), wm.identity())
    return maps
