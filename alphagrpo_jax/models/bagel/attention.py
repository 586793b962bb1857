"""BAGEL attention: masks from per-token metadata, GQA dot-product attention, and the KV-cache write.

Mask types, all static-shape and batched:
- `PackedMask` (training, no cache): each row is a packed sequence of documents (`segment_ids`, 0 = padding)
  made of splits (`split_ids`) with a mode per token: CAUSAL text, FULL (ViT / clean VAE image) or NOISE (noisy
  VAE image). A query sees key k when both are in the same document and (k is not later than q, or q's split is
  FULL/NOISE and k is in the same split), and never a NOISE key of another split.
- `CacheMask` (inference and RL training): a query block of `Lq` tokens (`q_len` valid per row) attends to a KV
  cache (`kv_len` valid slots per row) followed by its own keys: all valid cache slots, and inside the block
  either causally (text: flash-attn's bottom-right alignment) or fully (image blocks).
- `AppendMask`: a packed block (its own `PackedMask`) appended after a KV cache (context building).
Masked logits use a large finite negative, so fully padded query rows stay finite (their outputs are unused).

`attend` dispatches on a registry (`ATTENTION_IMPLS`): each implementation sees the structured mask, says at
trace time whether it can compute that call exactly, and otherwise the jnp reference runs (logged). The
kernel paths live in attention_splash.py (TPU) and attention_gpu.py (cuDNN); see docs/attention.md.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import sys

import jax
import jax.numpy as jnp
from flax import struct

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import attention_rows
from alphagrpo_jax.parallel import rules as rules_lib

CAUSAL, FULL, NOISE = 0, 1, 2
MODES = {"causal": CAUSAL, "full": FULL, "noise": NOISE}
_MASKED = -1e30


@struct.dataclass
class PackedMask:
    segment_ids: jax.Array  # [B, L] int32, 0 = padding
    split_ids: jax.Array    # [B, L] int32, distinct per split within a row
    modes: jax.Array        # [B, L] int32 in {CAUSAL, FULL, NOISE}

    def dense(self) -> jax.Array:
        """[B, L, L] bool: query (row) may attend to key (column)."""
        seg, split, mode = self.segment_ids, self.split_ids, self.modes
        n = seg.shape[-1]
        same_doc = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] != 0)
        earlier = jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]
        same_split = split[:, :, None] == split[:, None, :]
        bidir = same_split & (mode[:, :, None] != CAUSAL)
        hidden_noise = (mode[:, None, :] == NOISE) & ~same_split
        return same_doc & (earlier[None] | bidir) & ~hidden_noise


@struct.dataclass
class CacheMask:
    kv_len: jax.Array  # [B] int32 valid cache slots (keys 0..kv_len-1)
    q_len: jax.Array   # [B] int32 valid query tokens
    causal: bool = struct.field(pytree_node=False, default=True)

    def dense(self, cache_size: int, q_size: int) -> jax.Array:
        """[B, Lq, S + Lq] bool over keys = [cache slots ; the block's own keys]."""
        cache_ok = jnp.arange(cache_size)[None, :] < self.kv_len[:, None]            # [B, S]
        own_ok = jnp.arange(q_size)[None, :] < self.q_len[:, None]                    # [B, Lq]
        own = jnp.broadcast_to(own_ok[:, None, :], (own_ok.shape[0], q_size, q_size))
        if self.causal:
            own = own & (jnp.arange(q_size)[:, None] >= jnp.arange(q_size)[None, :])[None]
        cache = jnp.broadcast_to(cache_ok[:, None, :], (cache_ok.shape[0], q_size, cache_size))
        return jnp.concatenate([cache, own], axis=-1)


@struct.dataclass
class AppendMask:
    """A packed block (its own `PackedMask`, one document per row) appended after a KV cache: every valid
    token sees the row's valid cache slots, and the block's own keys by the packed rules."""
    kv_len: jax.Array  # [B] int32
    own: PackedMask

    @property
    def q_len(self) -> jax.Array:
        return jnp.sum(self.own.segment_ids != 0, axis=-1).astype(jnp.int32)

    def dense(self, cache_size: int, q_size: int) -> jax.Array:
        cache_ok = jnp.arange(cache_size)[None, :] < self.kv_len[:, None]
        valid_q = (self.own.segment_ids != 0)[:, :, None]
        cache = cache_ok[:, None, :] & valid_q
        return jnp.concatenate([cache, self.own.dense()], axis=-1)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """GQA attention. q [B, Lq, Hq, D], k/v [B, Lk, Hk, D], mask [B, Lq, Lk] bool -> [B, Lq, Hq, D].

    Logits and softmax in fp32; probabilities are cast to v's dtype before P@V (as flash attention does).
    The query heads sharing a KV head are folded into the row dimension ([B, Hk, G*Lq, D]): one batched
    matmul per KV head, which XLA (CPU at least) runs far faster than a dot with a free head-group dimension.
    The gradient is flash attention's (`_attend_folded`): it recomputes the probabilities instead of keeping
    them, so a layer scan stores no [B, Hq, Lq, Lk] stack per layer.
    """
    b, lq, hq, d = q.shape
    hk = k.shape[2]
    g = hq // hk
    qf = q.reshape(b, lq, hk, g, d).transpose(0, 2, 3, 1, 4).reshape(b, hk, g * lq, d)
    # K as [B, Hk, D, Lk]: a plain (non-transposed) matmul operand, 4x faster than contracting both minors.
    kt, vt = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    out = _attend_folded(qf, kt, vt, mask, g)
    return out.reshape(b, hk, g, lq, d).transpose(0, 3, 1, 2, 4).reshape(b, lq, hq, d).astype(q.dtype)


def _folded_logits(qf, kt, mask, g):
    """Masked fp32 logits [B, Hk, G*Lq, Lk] of folded queries qf [B, Hk, G*Lq, D] against kt [B, Hk, D, Lk]."""
    b, hk, gq, d = qf.shape
    logits = jnp.einsum("bhqd,bhdk->bhqk", qf, kt, preferred_element_type=jnp.float32) * (d ** -0.5)
    bias = jnp.where(mask, 0.0, _MASKED).astype(jnp.float32)[:, None, None]  # additive: fuses better than where
    return (logits.reshape(b, hk, g, gq // g, -1) + bias).reshape(b, hk, gq, -1)


def _folded_softmax_stats(logits):
    """Row max and sum of exp(logits - max), [..., 1] fp32: the softmax is exp(logits - max) / sum."""
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    return row_max, jnp.sum(jnp.exp(logits - row_max), axis=-1, keepdims=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attend_folded(qf, kt, vt, mask, g):
    """softmax(mask(qf kt / sqrt(D))) @ vt -> [B, Hk, G*Lq, D] fp32 (vt [B, Hk, Lk, D])."""
    if (program_platform() == "cpu" and qf.shape[0] * qf.shape[1] <= CPU_UNROLL_PAIRS
            and qf.shape[2] * kt.shape[3] * 4 >= CPU_PAIR_MIN_LOGIT_BYTES):
        return _attend_pairs(qf, kt, vt, mask, g)[0]  # undifferentiated programs only (see below)
    return _attend_folded_fwd(qf, kt, vt, mask, g)[0]


def _attend_folded_fwd(qf, kt, vt, mask, g):
    logits = _folded_logits(qf, kt, mask, g)
    row_max, row_sum = _folded_softmax_stats(logits)
    probs = (jnp.exp(logits - row_max) / row_sum).astype(vt.dtype)  # == jax.nn.softmax, to the bit
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, vt, preferred_element_type=jnp.float32)
    return out, (qf, kt, vt, mask, row_max, row_sum, out)


# An undifferentiated CPU program whose attention call has at most this many (row, KV head) pairs computes each
# pair with 2-D dots, unrolled (a differentiated one keeps the batched forward: its programs stay the size they
# were). XLA:CPU runs a batched 16-bit dot in f32 (both operands converted first) and fuses the softmax
# into the logits' dot; 2-D dots keep bf16 operands on the fast (AMX) kernels, and the pairs run side by side
# (a small_100m gen step's attention, [1, 4 KV heads, 774 folded queries, 386 keys]: 4.0 -> 2.2 ms in bf16,
# 4.0 -> 3.2 ms in fp32; values to fp32 rounding). More pairs stay batched (the unrolled program grows with
# them), and so do pairs under CPU_PAIR_MIN_LOGIT_BYTES of fp32 logits: decoding (one query row: 1-5% slower as
# pairs) and the toy and tiny models, whose programs only grew.
CPU_UNROLL_PAIRS = 16
CPU_PAIR_MIN_LOGIT_BYTES = 128 << 10


def _attend_pairs(qf, kt, vt, mask, g):
    """`_attend_folded`'s forward pair by pair: (out [B, Hk, G*Lq, D], row max, row sum [B, Hk, G*Lq, 1])."""
    b, hk, gq, d = qf.shape

    def one(q2, k2, v2, mask2):  # [G*Lq, D], [D, Lk], [Lk, D], [Lq, Lk]
        logits = jnp.dot(q2, k2, preferred_element_type=jnp.float32) * (d ** -0.5)
        # A select, not the additive bias (same values): XLA:CPU fuses a bias into the dot, materialised first.
        logits = jnp.where(mask2[None], logits.reshape(g, gq // g, -1), _MASKED).reshape(gq, -1)
        row_max, row_sum = _folded_softmax_stats(logits)
        probs = (jnp.exp(logits - row_max) / row_sum).astype(v2.dtype)
        return jnp.dot(probs, v2, preferred_element_type=jnp.float32), row_max, row_sum

    pairs = [one(qf[i, h], kt[i, h], vt[i, h], mask[i]) for i in range(b) for h in range(hk)]
    return tuple(jnp.stack(t).reshape((b, hk) + t[0].shape) for t in zip(*pairs))


def _attend_folded_bwd(g, residuals, d_out):
    # Flash attention's backward: P from the saved row statistics, and the softmax's row term
    # sum_k P dP = sum_d dO O from the output, so no [.., Lq, Lk] reduction and no stored P.
    qf, kt, vt, mask, row_max, row_sum, out = residuals
    probs = jnp.exp(_folded_logits(qf, kt, mask, g) - row_max) / row_sum
    d_out = d_out.astype(jnp.float32)
    d_vt = jnp.einsum("bhqk,bhqd->bhkd", probs.astype(vt.dtype), d_out.astype(vt.dtype),
                      preferred_element_type=jnp.float32)
    d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_out.astype(vt.dtype), vt, preferred_element_type=jnp.float32)
    row_term = jnp.sum(d_out * out, axis=-1, keepdims=True)
    d_scores = (probs * (d_probs - row_term)).astype(qf.dtype)  # d logits / scale: the scale goes on [.., D]
    scale = qf.shape[-1] ** -0.5
    d_qf = jnp.einsum("bhqk,bhdk->bhqd", d_scores, kt, preferred_element_type=jnp.float32) * scale
    d_kt = jnp.einsum("bhqd,bhqk->bhdk", qf, d_scores, preferred_element_type=jnp.float32) * scale
    return d_qf.astype(qf.dtype), d_kt.astype(kt.dtype), d_vt.astype(vt.dtype), None


_attend_folded.defvjp(_attend_folded_fwd, _attend_folded_bwd)


def write_cache(cache: jax.Array, new: jax.Array, offsets: jax.Array) -> jax.Array:
    """Writes new [B, Lq, ...] into cache [B, S, ...] at per-row offsets [B].

    The caller guarantees offsets + Lq <= S (contexts check their capacity on the host): XLA would otherwise
    clamp the start index and overwrite earlier slots.
    """
    def one(c, n, off):
        return jax.lax.dynamic_update_slice(c, n.astype(c.dtype), (off,) + (0,) * (c.ndim - 1))

    return jax.vmap(one)(cache, new, offsets)


def _write_rows(cache: jax.Array, new: jax.Array, offsets: jax.Array) -> jax.Array:
    """One dynamic-update-slice per row of cache [L, B, S, ...] (in place in XLA for a static B)."""
    for b in range(cache.shape[1]):
        start = (0, b, offsets[b]) + (0,) * (cache.ndim - 3)
        cache = jax.lax.dynamic_update_slice(cache, new[:, b:b + 1].astype(cache.dtype), start)
    return cache


@jax.custom_vjp
def write_cache_layers(cache: jax.Array, new: jax.Array, offsets: jax.Array) -> jax.Array:
    """Writes new [L, B, Lq, ...] into the layer-stacked cache [L, B, S, ...] at per-row offsets [B] (same
    contract as `write_cache`), once for all layers.

    The CPU formulation (LanguageModel writes per layer inside its scan elsewhere): XLA:CPU rewrites a whole
    16-bit cache (to f32 and back) for every dynamic-update-slice into it, so one row -> the update is written
    as raw bits (in place); one token per row (decoding) -> one fused select over the cache (f32: one scatter,
    in place, a smaller program than B updates); otherwise per-row updates."""
    bits = layers.to_bits(cache)
    new = new.astype(cache.dtype)
    if bits is None and new.shape[2] == 1 and cache.shape[1] > 1:
        return cache.at[:, jnp.arange(cache.shape[1]), offsets].set(new[:, :, 0], unique_indices=True)
    if bits is None:
        return _write_rows(cache, new, offsets)
    if cache.shape[1] == 1:
        return jax.lax.bitcast_convert_type(_write_rows(bits, layers.to_bits(new), offsets), cache.dtype)
    if new.shape[2] == 1:
        hit = jnp.arange(cache.shape[2])[None, :] == offsets[:, None]  # [B, S]
        return jnp.where(hit.reshape((1,) + hit.shape + (1,) * (cache.ndim - 3)), new, cache)
    return _write_rows(cache, new, offsets)


def _write_cache_layers_fwd(cache, new, offsets):
    return write_cache_layers(cache, new, offsets), (offsets, jnp.zeros((0,) + new.shape, new.dtype))


def _write_cache_layers_bwd(res, ct):
    offsets, like = res  # like: a zero-size array carrying new's shape and dtype
    shape, dtype = like.shape[1:], like.dtype
    lq = shape[2]
    d_new = jnp.stack([jax.lax.dynamic_slice_in_dim(ct[:, b], offsets[b], lq, axis=1) for b in range(shape[1])], 1)
    d_cache = _write_rows(ct, jnp.zeros(shape, ct.dtype), offsets)
    return d_cache, d_new.astype(dtype), None


write_cache_layers.defvjp(_write_cache_layers_fwd, _write_cache_layers_bwd)


# ------------------------------------------------------------------------------------------------ dispatch

def keys_and_values(k, v, mask, cache_k=None, cache_v=None) -> tuple[jax.Array, jax.Array]:
    """The keys/values a mask indexes: [cache ; own block] for CacheMask/AppendMask, the block otherwise."""
    if isinstance(mask, (CacheMask, AppendMask)):
        if cache_k is None or cache_v is None:
            raise ValueError(f"{type(mask).__name__} needs cache_k/cache_v")
        return (jnp.concatenate([cache_k.astype(k.dtype), k], axis=1),
                jnp.concatenate([cache_v.astype(v.dtype), v], axis=1))
    if isinstance(mask, PackedMask):
        return k, v
    raise TypeError(f"unknown mask type {type(mask).__name__}; expected PackedMask, CacheMask or AppendMask")


def dense_mask(mask, cache_size: int, q_size: int) -> jax.Array:
    """[B, Lq, Lk] bool for any mask type (`cache_size` is ignored for PackedMask)."""
    if isinstance(mask, PackedMask):
        return mask.dense()
    return mask.dense(cache_size, q_size)


program_platform = layers.program_platform


def unsupported(q, k, v, mask, cache_k=None) -> str | None:
    """The reference supports every mask and shape."""
    return None


def attention(q, k, v, mask, cache_k=None, cache_v=None) -> jax.Array:
    """The reference: the dense mask and `dot_product_attention` (a CPU program: in batch chunks)."""
    chunks = cpu_batch_chunks(q, k.shape[1] + (0 if cache_k is None else cache_k.shape[1]))
    if chunks > 1:
        return _in_batch_chunks(_dense_attention, chunks, q, k, v, mask, cache_k, cache_v)
    return _dense_attention(q, k, v, mask, cache_k, cache_v)


# A CPU program computes the jnp attention in batch chunks of about this many bytes of fp32 logits, so that
# the logits, their softmax and the P@V operand stay in the core's L2 cache instead of streaming through
# memory pass after pass (toy image sampling: [128, 4 heads, 66 queries, 322 keys] 2.9x faster, same bits).
CPU_CHUNK_LOGIT_BYTES = 4 << 20


def cpu_batch_chunks(q: jax.Array, num_keys: int) -> int:
    """How many batch chunks a CPU program splits attention of q [B, Lq, Hq, D] over `num_keys` keys into
    (1 = none; always 1 on TPU/GPU). Chunks split each device's rows when the rules' batch shards divide B."""
    b, lq, hq, _ = q.shape
    row = hq * lq * num_keys * 4
    if program_platform() != "cpu" or b * row <= 2 * CPU_CHUNK_LOGIT_BYTES:
        return 1
    rows = b // _batch_shards(b)
    fit = max(1, min(rows, CPU_CHUNK_LOGIT_BYTES // row))
    return rows // max(d for d in range(1, fit + 1) if rows % d == 0)


def _batch_shards(b: int) -> int:
    """How many blocks the active rules split a batch of b rows into (1 without rules or when they do not
    divide b)."""
    ctx = rules_lib.current()
    if ctx is None:
        return 1
    mesh, rules = ctx
    n = rules_lib.shard_count(rules_lib.logical_to_spec(("batch",), rules, mesh)[0], mesh)
    return n if b % n == 0 else 1


def _in_batch_chunks(fn, chunks: int, *args):
    """fn(*args) with every array in `args` (batch-leading) split into `chunks` chunks of rows run one after
    another (`lax.map`). Rows are grouped per device block ([shards, chunks, rows]), so no chunk spans two
    devices' rows. Row-wise computations give the same values as one call."""
    b = jax.tree.leaves(args)[0].shape[0]
    shards = _batch_shards(b)

    def split(x):  # [B, ...] -> [chunks, shards * rows, ...]
        x = x.reshape((shards, chunks, b // (shards * chunks)) + x.shape[1:])
        return jnp.moveaxis(x, 1, 0).reshape((chunks, b // chunks) + x.shape[3:])

    out = jax.lax.map(lambda a: fn(*a), jax.tree.map(split, args))
    out = out.reshape((chunks, shards, b // (shards * chunks)) + out.shape[2:])
    return jnp.moveaxis(out, 0, 1).reshape((b,) + out.shape[3:])


def _dense_attention(q, k, v, mask, cache_k=None, cache_v=None) -> jax.Array:
    cache_size = 0 if cache_k is None else cache_k.shape[1]
    if cache_k is not None and q.shape[1] == 1 and program_platform() == "cpu":  # a decode step
        bias = jnp.where(dense_mask(mask, cache_size, 1), 0.0, _MASKED).astype(jnp.float32)
        return attention_rows.attend_cached_rows(q, k, v, bias, cache_k, cache_v)
    keys, values = keys_and_values(k, v, mask, cache_k, cache_v)
    return dot_product_attention(q, keys, values, dense_mask(mask, cache_size, q.shape[1]))


@dataclasses.dataclass(frozen=True)
class AttentionImpl:
    """A registered implementation: `module` (under models/bagel, imported on first use; None = this module)
    defines `unsupported(q, k, v, mask, cache_k, **options) -> reason | None` and
    `attention(q, k, v, mask, cache_k, cache_v, **options) -> [B, Lq, Hq, D]`. `unsupported` runs at trace
    time on shapes and static fields only; a reason sends the call to the jnp reference."""
    module: str | None = None
    options: tuple[tuple[str, object], ...] = ()

    def _mod(self):
        if self.module is None:
            return sys.modules[__name__]
        return importlib.import_module(f"alphagrpo_jax.models.bagel.{self.module}")

    def unsupported(self, q, k, v, mask, cache_k=None) -> str | None:
        return self._mod().unsupported(q, k, v, mask, cache_k, **dict(self.options))

    def __call__(self, q, k, v, mask, cache_k=None, cache_v=None) -> jax.Array:
        return self._mod().attention(q, k, v, mask, cache_k, cache_v, **dict(self.options))


# "jnp" is the reference and always available. "splash" is the TPU Pallas kernel (attention_splash.py);
# "cudnn" is cuDNN flash attention through jax.nn.dot_product_attention (attention_gpu.py). The `_interpret`
# / `_xla` variants run the same argument mapping on any backend (Pallas interpret mode; the XLA
# implementation of jax.nn.dot_product_attention): tests and debugging, not speed.
ATTENTION_IMPLS: dict[str, AttentionImpl] = {
    "jnp": AttentionImpl(),
    "splash": AttentionImpl("attention_splash", (("interpret", False),)),
    "splash_interpret": AttentionImpl("attention_splash", (("interpret", True),)),
    "cudnn": AttentionImpl("attention_gpu", (("implementation", "cudnn"),)),
    "cudnn_xla": AttentionImpl("attention_gpu", (("implementation", "xla"),)),
}

_log = logging.getLogger(__name__)
_reported: set[tuple[str, str]] = set()


def resolve(impl: str, q, k, v, mask, cache_k=None) -> tuple[str, str | None]:
    """Which implementation `attend` runs for this call: (name, None) or ("jnp", why `impl` cannot)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; known: {sorted(ATTENTION_IMPLS)}")
    if not isinstance(mask, (PackedMask, CacheMask, AppendMask)):
        raise TypeError(f"unknown mask type {type(mask).__name__}; expected PackedMask, CacheMask or AppendMask")
    if isinstance(mask, (CacheMask, AppendMask)) and cache_k is None:
        raise ValueError(f"{type(mask).__name__} needs cache_k/cache_v")
    reason = ATTENTION_IMPLS[impl].unsupported(q, k, v, mask, cache_k)
    return (impl, None) if reason is None else ("jnp", reason)


def attend(q, k, v, mask, cache_k=None, cache_v=None, impl: str = "jnp") -> jax.Array:
    """Attention for one layer: q [B, Lq, Hq, D], k/v [B, Lq, Hk, D] (the block's own), optional cache
    [B, S, Hk, D]; with a cache, keys/values are [cache ; own block] (see CacheMask). -> [B, Lq, Hq, D].

    Runs `impl` when it can express this mask and these shapes exactly, else the jnp reference; each
    distinct fallback is logged once (WARNING) with its reason, at trace time."""
    name, reason = resolve(impl, q, k, v, mask, cache_k)
    if reason is not None and (impl, reason) not in _reported:
        _reported.add((impl, reason))
        _log.warning("attention %r falls back to 'jnp' for %s: %s", impl, type(mask).__name__, reason)
    return ATTENTION_IMPLS[name](q, k, v, mask, cache_k, cache_v)
