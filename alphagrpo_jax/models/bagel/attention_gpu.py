"""BAGEL attention on NVIDIA GPUs: cuDNN flash attention via `jax.nn.dot_product_attention(implementation=
"cudnn")` (jax 0.10.2).

That call's masking vocabulary is `is_causal` (top-left aligned: query i sees keys j <= i), per-row
`query_seq_lengths` / `key_value_seq_lengths` (valid prefixes) and a dense `mask` (cuDNN adds it as a bias).
How each BAGEL mask maps onto it:
- `CacheMask(causal=False)` (image queries against a cache): the block's own keys are written right after
  the row's valid cache slots, so the valid keys are the prefix [0, kv_len + q_len) and the mask is cuDNN's
  PADDING type from the two length vectors: no dense mask.
- `CacheMask(causal=True)`: BAGEL's causal part is bottom-right aligned to each row's own kv_len, which the
  top-left `is_causal` cannot say (except when kv_len = 0, unknown at trace time): the dense rule is passed
  as `mask`.
- `PackedMask` / `AppendMask`: per-token modes; full/noise splits see later tokens, so the rule is not a
  subset of causal either: the dense rule as `mask`.
Lengths are padded to multiples of 8 (cuDNN wants even lengths with a bias when training); padded keys are
masked and padded query rows dropped.

`unsupported` (then `attend` runs jnp), for implementation="cudnn": not a GPU program, q/k/v not all
bf16/fp16, head_dim not a multiple of 8 or above 256 (above 128 needs Hopper), query blocks shorter than
`MIN_QUERY_BLOCK` (decoding). implementation="xla" runs the same argument mapping anywhere (tests).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from alphagrpo_jax.models.bagel import attention as attn_lib

MIN_QUERY_BLOCK = 128
_PAD = 8


def unsupported(q, k, v, mask, cache_k=None, *, implementation: str = "cudnn") -> str | None:
    if implementation not in ("cudnn", "xla"):
        raise ValueError(f"attention_gpu: implementation must be 'cudnn' or 'xla', got {implementation!r}")
    if q.shape[1] < MIN_QUERY_BLOCK:
        return f"query block of {q.shape[1]} tokens < {MIN_QUERY_BLOCK} (decoding)"
    if implementation == "xla":
        return None
    platform = attn_lib.program_platform()
    if platform not in ("gpu", "cuda"):
        return f"cuDNN attention needs an NVIDIA GPU and this program is for {platform!r} (use 'cudnn_xla' to test)"
    dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) != 1 or dtypes.pop() not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"cuDNN flash attention needs q/k/v all bf16 or all fp16, got {q.dtype}/{k.dtype}/{v.dtype}"
    d = q.shape[-1]
    if d % 8 or d > 256:
        return f"cuDNN flash attention needs head_dim a multiple of 8 and <= 256, got {d}"
    return None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad)


def _own_after_valid_cache(cache: jax.Array, own: jax.Array, kv_len: jax.Array) -> jax.Array:
    """[cache S ; zeros Lq] with own [B, Lq, ...] written at each row's kv_len (<= S, so it always fits)."""
    buf = jnp.concatenate([cache.astype(own.dtype), jnp.zeros_like(own)], axis=1)
    return attn_lib.write_cache(buf, own, kv_len)


def attention(q, k, v, mask, cache_k=None, cache_v=None, *, implementation: str = "cudnn") -> jax.Array:
    """q [B, Lq, Hq, D], k/v [B, Lq, Hk, D], cache [B, S, Hk, D] -> [B, Lq, Hq, D] (q's dtype)."""
    lq = q.shape[1]
    lq_p = _round_up(lq, _PAD)
    qp = _pad_axis(q, 1, lq_p)
    kwargs = dict(scale=q.shape[-1] ** -0.5, implementation=implementation)
    if isinstance(mask, attn_lib.CacheMask) and not mask.causal:
        if cache_k is None or cache_v is None:
            raise ValueError("CacheMask needs cache_k/cache_v")
        kv_len, q_len = mask.kv_len.astype(jnp.int32), mask.q_len.astype(jnp.int32)
        keys = _own_after_valid_cache(cache_k, _pad_axis(k, 1, lq_p), kv_len)
        values = _own_after_valid_cache(cache_v, _pad_axis(v, 1, lq_p), kv_len)
        lk_p = _round_up(keys.shape[1], _PAD)
        out = jax.nn.dot_product_attention(
            qp, _pad_axis(keys, 1, lk_p), _pad_axis(values, 1, lk_p), query_seq_lengths=q_len,
            key_value_seq_lengths=kv_len + q_len, **kwargs)
        return out[:, :lq].astype(q.dtype)
    keys, values = attn_lib.keys_and_values(k, v, mask, cache_k, cache_v)
    cache_size = 0 if cache_k is None else cache_k.shape[1]
    dense = attn_lib.dense_mask(mask, cache_size, lq)
    lk_p = _round_up(keys.shape[1], _PAD)
    dense = _pad_axis(_pad_axis(dense, 1, lq_p), 2, lk_p)
    out = jax.nn.dot_product_attention(qp, _pad_axis(keys, 1, lk_p), _pad_axis(values, 1, lk_p),
                                       mask=dense[:, None], **kwargs)
    return out[:, :lq].astype(q.dtype)
