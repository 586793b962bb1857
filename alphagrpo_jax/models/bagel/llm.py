"""Qwen2 Mixture-of-Transformers decoder (BAGEL's LLM): und and gen experts, shared attention.

Every per-token weight exists twice, stacked on a leading `expert` axis (0 = und, 1 = gen); layers are
stacked on a `layers` axis and run under `lax.scan`. Which expert a token uses is a `Routing`:
- `und` / `gen`: the whole block uses one expert (text prefill and decoding, ViT prefill: und);
- `block(start, end)`: tokens [start, end) use gen, the rest und — an image query
  `[vision_start, latents..., vision_end]` is block(1, Lq-1), so each expert runs on exactly its rows;
- `mixed(expert_ids)`: per-token ids at unknown places (packed SFT batches, contexts with images): each batch
  shard's tokens are sorted into expert-pure chunks, so every token runs through its own expert only
  (`apply_sorted`; ~1.1-1.2x one expert's FLOPs on long packed rows, where running both and selecting costs 2x).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import attention as attn_lib, weight_map as wm
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.layers import create_stacked, matmul, rms_norm, scan_layers, take
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.parallel.rules import constrain
from alphagrpo_jax.parallel.state import param

UND, GEN = 0, 1


@struct.dataclass
class Routing:
    kind: str = struct.field(pytree_node=False)           # "und" | "gen" | "block" | "mixed"
    start: int = struct.field(pytree_node=False, default=0)
    end: int = struct.field(pytree_node=False, default=0)
    expert_ids: jax.Array | None = None                   # [B, L] int32 for "mixed"

    @staticmethod
    def und() -> "Routing":
        return Routing("und")

    @staticmethod
    def gen() -> "Routing":
        return Routing("gen")

    @staticmethod
    def block(start: int, end: int) -> "Routing":
        return Routing("block", start, end)

    @staticmethod
    def mixed(expert_ids: jax.Array) -> "Routing":
        return Routing("mixed", expert_ids=expert_ids)

    def apply(self, x: jax.Array, f) -> jax.Array:
        """Applies `f(x_part, expert)` token-wise along axis 1 according to the routing."""
        if self.kind == "und":
            return f(x, UND)
        if self.kind == "gen":
            return f(x, GEN)
        if self.kind == "block":
            s, e = self.start, self.end
            und_in = jnp.concatenate([x[:, :s], x[:, e:]], axis=1)
            und_out, gen_out = f(und_in, UND), f(x[:, s:e], GEN)
            return jnp.concatenate([und_out[:, :s], gen_out, und_out[:, s:]], axis=1)
        if self.kind == "mixed":
            return apply_sorted(x, self.expert_ids, f)
        raise ValueError(f"unknown routing {self.kind!r}")


MIXED_CHUNK = 64  # smallest expert-pure chunk of `apply_sorted` (tokens)


def batch_groups(b: int) -> int:
    """How many shards the batch axis of a [b, ...] activation has on the active mesh (1 without one)."""
    ctx = rules_lib.current()
    if ctx is None:
        return 1
    return rules_lib.shard_count(rules_lib.activation_sharding((b,), ("batch",), *ctx).spec[0], ctx[0])


def apply_sorted(x: jax.Array, expert_ids: jax.Array, f, chunk: int | None = None) -> jax.Array:
    """`f(x_part, expert)` on each token with its own expert, at static shapes.

    The rows of each batch shard are taken as one long row of m tokens (so the sort never crosses devices);
    there, und tokens fill slots [0, n_und) and gen tokens start at the next multiple of `chunk` (a stable
    sort into whole chunks covering m + chunk - 1 slots); each chunk of slots then runs one expert (`f`
    vmapped over chunks with the expert as data: every chunk holds its own copy of the expert's weights, so
    few large chunks beat many small ones), and the outputs are gathered back. Default chunk: m/8 rounded up
    to a multiple of 8, at least MIXED_CHUNK: ~9 chunks, < 2 of them padding. x [B, L, ...], ids [B, L].
    """
    b, n = expert_ids.shape
    g = batch_groups(b)
    m = b // g * n
    if chunk is None:
        chunk = max(MIXED_CHUNK, -(-m // 64) * 8)
    ids = expert_ids.reshape(g, m)
    xs = constrain(x.reshape((g, m) + x.shape[2:]), ("batch", "length") + (None,) * (x.ndim - 2))
    is_gen = ids == GEN
    gen_start = (m - jnp.sum(is_gen, axis=1, dtype=jnp.int32) + chunk - 1) // chunk * chunk  # [g]
    rank = jnp.where(is_gen, jnp.cumsum(is_gen, axis=1), jnp.cumsum(~is_gen, axis=1)) - 1
    slot = jnp.where(is_gen, gen_start[:, None] + rank, rank).astype(jnp.int32)  # [g, m], distinct per group
    slots = -(-(m + chunk - 1) // chunk) * chunk
    rows = jnp.arange(g)[:, None]
    buf = jnp.zeros((g, slots) + x.shape[2:], x.dtype).at[rows, slot].set(xs)
    n_chunks = slots // chunk
    experts = (jnp.arange(n_chunks)[None] * chunk >= gen_start[:, None]).astype(jnp.int32)  # [g, n_chunks]
    y = jax.vmap(f)(buf.reshape((g * n_chunks, 1, chunk) + x.shape[2:]), experts.reshape(-1))
    y = y.reshape((g, slots) + y.shape[3:])[rows, slot]
    return y.reshape((b, n) + y.shape[2:])


@struct.dataclass
class KVCache:
    """Preallocated per-layer keys/values [layers, B, S, kv_heads, head_dim] and valid lengths [B]."""
    k: jax.Array
    v: jax.Array
    length: jax.Array

    @staticmethod
    def zeros(cfg: BagelConfig, batch: int, size: int, dtype=None) -> "KVCache":
        c = cfg.llm
        shape = (c.num_layers, batch, size, c.num_kv_heads, c.head_dim)
        dt = jnp.dtype(dtype or cfg.dtype)
        return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt), jnp.zeros((batch,), jnp.int32))

    @property
    def size(self) -> int:
        return self.k.shape[2]

    def per_layer(self) -> "KVCache":
        """k/v as `layers.Split`s of per-layer buffers: layers run one by one read them in place (CPU decoding)."""
        return self.replace(k=layers.Split(list(self.k)), v=layers.Split(list(self.v)))

    def stacked(self) -> "KVCache":
        """k/v as [layers, ...] arrays again (the inverse of `per_layer`; a stacked cache is returned as is)."""
        return jax.tree.map(lambda a: jnp.stack(a.parts) if isinstance(a, layers.Split) else a, self,
                            is_leaf=lambda a: isinstance(a, layers.Split))


class ExpertDense(nnx.Module):
    """Per-expert projection: kernel [2, *in, *out] (+ bias [2, *out]); `__call__(x, expert)`.

    With `lora_rank > 0` it also holds LoRA adapters (`nnx.LoRAParam`) lora_a [2, *in, r] (Gaussian) and
    lora_b [2, r, *out] (zeros): y = x W + scale * (x A) B. Zeroing lora_b gives the base model exactly.
    """

    def __init__(self, in_shape, out_shape, axes, *, use_bias: bool, rngs: nnx.Rngs, param_dtype,
                 lora_rank: int = 0, lora_scale: float = 0.0):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        fan_in = 1
        for s in self.in_shape:
            fan_in *= s
        init = jax.nn.initializers.normal(fan_in ** -0.5)
        self.kernel = param(init(rngs.params(), (2,) + self.in_shape + self.out_shape, param_dtype),
                            ("expert",) + tuple(axes))
        self.bias = (param(jnp.zeros((2,) + self.out_shape, param_dtype),
                           ("expert",) + tuple(axes[len(self.in_shape):])) if use_bias else None)
        self.lora_scale = float(lora_scale)
        if lora_rank:
            n_in = len(self.in_shape)
            self.lora_a = nnx.LoRAParam(
                init(rngs.params(), (2,) + self.in_shape + (lora_rank,), param_dtype),
                axes=("expert",) + tuple(axes[:n_in]) + ("lora_rank",))
            self.lora_b = nnx.LoRAParam(jnp.zeros((2, lora_rank) + self.out_shape, param_dtype),
                                        axes=("expert", "lora_rank") + tuple(axes[n_in:]))
        else:
            self.lora_a = self.lora_b = None

    def __call__(self, x: jax.Array, expert: int, dtype=None) -> jax.Array:
        letters = "mnopqrstuvw"
        n_in, n_out = len(self.in_shape), len(self.out_shape)
        ins, outs = letters[:n_in], letters[n_in:n_in + n_out]
        y = matmul(x, take(self.kernel[...], expert), f"...{ins},{ins}{outs}->...{outs}", dtype=jnp.float32)
        if self.bias is not None:
            y = y + take(self.bias[...], expert).astype(jnp.float32)
        if self.lora_a is not None:
            h = matmul(x, take(self.lora_a[...], expert), f"...{ins},{ins}z->...z")
            y = y + self.lora_scale * matmul(h, take(self.lora_b[...], expert), f"...z,z{outs}->...{outs}",
                                             dtype=jnp.float32)
        return y.astype(dtype or x.dtype)


class ExpertNorm(nnx.Module):
    """RMSNorm with one weight per expert: weight [2, dim]."""

    def __init__(self, dim: int, eps: float, axis_name: str, *, param_dtype):
        self.eps = eps
        self.weight = param(jnp.ones((2, dim), param_dtype), ("expert", axis_name))

    def __call__(self, x: jax.Array, expert: int) -> jax.Array:
        return rms_norm(x, take(self.weight[...], expert), self.eps)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """positions [B, L] -> cos, sin [B, L, head_dim] (fp32), rotate-half layout cat(freqs, freqs)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, H, D] (any dtype) -> RoPE'd in fp32."""
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    return xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: BagelConfig, rngs: nnx.Rngs):
        c, pd = cfg.llm, jnp.dtype(cfg.param_dtype)
        d, hq, hk, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size

        def dense(name, in_shape, out_shape, axes, bias):
            rank = cfg.lora_rank if name in cfg.lora_targets else 0
            return ExpertDense(in_shape, out_shape, axes, use_bias=bias, rngs=rngs, param_dtype=pd, lora_rank=rank,
                               lora_scale=cfg.lora_scale)

        self.input_layernorm = ExpertNorm(d, c.rms_norm_eps, "norm", param_dtype=pd)
        self.post_attention_layernorm = ExpertNorm(d, c.rms_norm_eps, "norm", param_dtype=pd)
        self.q_proj = dense("q_proj", (d,), (hq, hd), ("embed", "heads", "head_dim"), True)
        self.k_proj = dense("k_proj", (d,), (hk, hd), ("embed", "kv_heads", "head_dim"), True)
        self.v_proj = dense("v_proj", (d,), (hk, hd), ("embed", "kv_heads", "head_dim"), True)
        self.o_proj = dense("o_proj", (hq, hd), (d,), ("heads", "head_dim", "embed"), False)
        self.q_norm = ExpertNorm(hd, c.rms_norm_eps, "head_dim", param_dtype=pd)
        self.k_norm = ExpertNorm(hd, c.rms_norm_eps, "head_dim", param_dtype=pd)
        self.gate_proj = dense("gate_proj", (d,), (f,), ("embed", "mlp"), False)
        self.up_proj = dense("up_proj", (d,), (f,), ("embed", "mlp"), False)
        self.down_proj = dense("down_proj", (f,), (d,), ("mlp", "embed"), False)
        self.remat_experts = cfg.remat == "experts"

    def _tokenwise(self, f):
        # remat "experts": the backward recomputes the per-token expert functions (norm, QKV, the MLP) from
        # their input instead of keeping their activations per layer; attention keeps its own residuals.
        return jax.checkpoint(f) if self.remat_experts else f

    def __call__(self, x, cos, sin, routing: Routing, mask, cache_kv=None, impl: str = "jnp"):
        """x [B, L, D]; cache_kv: (k, v) [B, S, Hk, Dh] of this layer or None.

        Returns (x_out, (k_new, v_new)) with the block's own keys (normed + RoPE'd) and values.
        """
        def qkv(h, e):
            h = self.input_layernorm(h, e)
            q = self.q_norm(self.q_proj(h, e), e)
            k = self.k_norm(self.k_proj(h, e), e)
            v = self.v_proj(h, e)
            return jnp.concatenate([q, k, v], axis=2)  # heads axis: [Hq | Hk | Hk]

        hq = self.q_proj.out_shape[0]
        hk = self.k_proj.out_shape[0]
        fused = routing.apply(x, self._tokenwise(qkv))
        q, k, v = fused[:, :, :hq], fused[:, :, hq:hq + hk], fused[:, :, hq + hk:]
        q = apply_rope(q, cos, sin).astype(x.dtype)
        k = apply_rope(k, cos, sin).astype(x.dtype)
        q = constrain(q, ("batch", "length", "act_heads", None))
        k = constrain(k, ("batch", "length", "act_kv_heads", None))
        ck, cv = cache_kv if cache_kv is not None else (None, None)
        a = attn_lib.attend(q, k, v, mask, ck, cv, impl=impl)
        x = x + routing.apply(a, lambda t, e: self.o_proj(t, e))

        def mlp(h, e):
            h = self.post_attention_layernorm(h, e)
            g = self.gate_proj(h, e, dtype=jnp.float32)
            u = self.up_proj(h, e, dtype=jnp.float32)
            act = constrain((jax.nn.silu(g) * u).astype(x.dtype), ("batch", "length", "act_mlp"))
            return self.down_proj(act, e)

        x = x + routing.apply(x, self._tokenwise(mlp))
        return constrain(x, ("batch", "length", "act_embed")), (k, v)


class LanguageModel(nnx.Module):
    """Embeddings, the scanned MoT decoder, per-expert final norms and the LM head."""

    def __init__(self, cfg: BagelConfig, rngs: nnx.Rngs):
        c, pd = cfg.llm, jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.embed_tokens = param(jax.random.normal(rngs.params(), (c.vocab_size, c.hidden_size), pd),
                                  ("vocab", "embed"))
        self.layers = create_stacked(lambda r: DecoderLayer(cfg, r), c.num_layers, rngs)
        self.norm = ExpertNorm(c.hidden_size, c.rms_norm_eps, "norm", param_dtype=pd)
        self.lm_head = param(jax.random.normal(rngs.params(), (c.hidden_size, c.vocab_size), pd)
                             * c.hidden_size ** -0.5, ("embed", "vocab"))

    def embed(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embed_tokens[...], ids, axis=0).astype(jnp.dtype(self.cfg.dtype))

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> fp32 logits [..., V]."""
        return matmul(hidden, self.lm_head[...], "...d,dv->...v", dtype=jnp.float32)

    def token_log_probs(self, hidden: jax.Array, labels: jax.Array, temperature: float = 1.0,
                        chunk: int = 256) -> jax.Array:
        """log softmax(logits / temperature)[labels] for hidden [B, L, D], labels [B, L] -> [B, L] fp32.

        Runs over sequence chunks with rematerialisation, so [B, L, vocab] logits never exist at once (the
        Qwen2 vocabulary has 152k entries); only [B, chunk, vocab] does, forward and backward.
        """
        b, n, d = hidden.shape
        chunk = min(chunk, n)
        pad = -n % chunk
        h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, chunk, d).swapaxes(0, 1)
        y = jnp.pad(labels, ((0, 0), (0, pad))).reshape(b, -1, chunk).swapaxes(0, 1)

        @jax.checkpoint
        def one(args):
            hc, yc = args
            logits = self.logits(hc) / temperature
            picked = jnp.take_along_axis(logits, yc[..., None], axis=-1)[..., 0]
            return picked - jax.nn.logsumexp(logits, axis=-1)

        out = jax.lax.map(one, (h, y))
        return out.swapaxes(0, 1).reshape(b, -1)[:, :n]

    def __call__(self, x: jax.Array, positions: jax.Array, routing: Routing, mask,
                 cache: KVCache | None = None, write_cache: bool = False, return_layer_outputs: bool = False):
        """x [B, L, D] input embeddings; positions [B, L] RoPE ids.

        Returns (hidden [B, L, D] after the per-expert final norm, new cache or None, layer outputs
        [layers, B, L, D] or None). With `write_cache`, the block's K/V are written at `cache.length` and the
        length advances by `mask.q_len`.
        """
        c = self.cfg.llm
        cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta)
        x = constrain(x.astype(jnp.dtype(self.cfg.dtype)), ("batch", "length", "act_embed"))
        impl = self.cfg.attention
        # CPU: the block's K/V leave the scan and are written once (attn_lib.write_cache_layers); elsewhere each
        # layer writes its cache slice inside the scan (in place on TPU/GPU; the AOT memory tables assume it).
        write_after = layers.program_platform() == "cpu"

        def body(layer, h, layer_cache):
            h_out, (k, v) = layer(h, cos, sin, routing, mask, layer_cache, impl=impl)
            ys = {}
            if write_cache and write_after:
                ys["k"], ys["v"] = k, v
            elif write_cache:
                ys["k"] = attn_lib.write_cache(layer_cache[0], k, cache.length)
                ys["v"] = attn_lib.write_cache(layer_cache[1], v, cache.length)
            if return_layer_outputs:
                ys["out"] = h_out
            return h_out, ys

        xs = (cache.k, cache.v) if cache is not None else None
        h, ys = scan_layers(self.layers, body, x, xs, remat=self.cfg.remat)
        hidden = routing.apply(h, lambda t, e: self.norm(t, e))
        new_cache = None
        if write_cache:
            k, v = ys["k"], ys["v"]
            if write_after:
                k, v = (_write_layers(c, new, cache.length, h) for c, new in ((cache.k, k), (cache.v, v)))
            new_cache = KVCache(k, v, cache.length + mask.q_len)
        return hidden, new_cache, ys.get("out")


def _write_layers(cache: jax.Array | layers.Split, new: jax.Array, offsets: jax.Array, after: jax.Array):
    """attn_lib.write_cache_layers, also into a per-layer cache (`KVCache.per_layer`). XLA:CPU updates a cache
    that is not 16-bit in place only after the layers' reads: `after` (the last layer's output) orders them."""
    if not layers.is_16bit_float(cache):
        new, _ = jax.lax.optimization_barrier((new, after))
    if not isinstance(cache, layers.Split):
        return attn_lib.write_cache_layers(cache, new, offsets)
    return layers.Split(attn_lib.write_cache_layers(c[None], new[i:i + 1], offsets)[0] for i, c in enumerate(cache))


def weight_map(cfg: BagelConfig, prefix: tuple[str, ...] = ("language_model",)):
    """Release names (`language_model.*` in ema.safetensors) -> our stacked (layer, expert) arrays."""
    c = cfg.llm
    hq, hk, hd = c.num_heads, c.num_kv_heads, c.head_dim
    base = "language_model.model.layers.{i}."

    def layer_keys(fmt: str):
        # fmt uses {x} for the expert suffix, e.g. "self_attn.q_proj{x}.weight" -> keys [L, 2]
        return wm.np.array([[(base + fmt).format(i=i, x=x) for x in ("", "_moe_gen")] for i in range(c.num_layers)],
                           dtype=object)

    def entry(path, fmt, transforms):
        return wm.TensorMap(prefix + ("layers",) + path, layer_keys(fmt), *transforms)

    return [
        wm.TensorMap.single(prefix + ("embed_tokens",), "language_model.model.embed_tokens.weight",
                            *wm.identity()),
        wm.TensorMap.single(prefix + ("lm_head",), "language_model.lm_head.weight", *wm.linear()),
        wm.TensorMap(prefix + ("norm", "weight"),
                     wm.np.array(["language_model.model.norm.weight", "language_model.model.norm_moe_gen.weight"],
                                 dtype=object), *wm.identity()),
        entry(("q_proj", "kernel"), "self_attn.q_proj{x}.weight", wm.linear(out_shape=(hq, hd))),
        entry(("q_proj", "bias"), "self_attn.q_proj{x}.bias", wm.reshape((hq, hd), (hq * hd,))),
        entry(("k_proj", "kernel"), "self_attn.k_proj{x}.weight", wm.linear(out_shape=(hk, hd))),
        entry(("k_proj", "bias"), "self_attn.k_proj{x}.bias", wm.reshape((hk, hd), (hk * hd,))),
        entry(("v_proj", "kernel"), "self_attn.v_proj{x}.weight", wm.linear(out_shape=(hk, hd))),
        entry(("v_proj", "bias"), "self_attn.v_proj{x}.bias", wm.reshape((hk, hd), (hk * hd,))),
        entry(("o_proj", "kernel"), "self_attn.o_proj{x}.weight", wm.linear(in_shape=(hq, hd))),
        entry(("q_norm", "weight"), "self_attn.q_norm{x}.weight", wm.identity()),
        entry(("k_norm", "weight"), "self_attn.k_norm{x}.weight", wm.identity()),
        entry(("gate_proj", "kernel"), "mlp{x}.gate_proj.weight", wm.linear()),
        entry(("up_proj", "kernel"), "mlp{x}.up_proj.weight", wm.linear()),
        entry(("down_proj", "kernel"), "mlp{x}.down_proj.weight", wm.linear()),
        entry(("input_layernorm", "weight"), "input_layernorm{x}.weight", wm.identity()),
        entry(("post_attention_layernorm", "weight"), "post_attention_layernorm{x}.weight", wm.identity()),
    ]
