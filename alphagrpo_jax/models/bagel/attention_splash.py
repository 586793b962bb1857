"""BAGEL attention on TPU with the Pallas splash kernel (`jax.experimental.pallas.ops.tpu.splash_attention`).

How each mask is expressed (keys are laid out [cache S ; own block padded to Lq' ; tail padding]):
- `CacheMask`: a static splash mask, `CausalMask(offset=S)` (bottom-right causal over the own block, all cache
  slots) or `FullMask`, AND-ed with segment ids: valid queries (< q_len) and valid keys (cache slot < kv_len,
  own key < q_len) are segment 1, everything else 0. Static block skipping works; no [Lq, Lk] array exists.
- `PackedMask` / `AppendMask`: per-token modes are data, which splash's static masks cannot see; the mask is
  BAGEL's dense rule (`attention.dense_mask`, exactly what the jnp path uses) handed to splash as a dynamic
  mask, [1, Lq', Lk'] bool per batch row (shared by all heads). Fully masked tiles are still skipped; the
  cost over the static path is the bool mask itself (about three Lq' x Lk' byte copies per row: forward,
  dq and dkv tile layouts) and a loop over batch rows (Pallas batches per-row scalar-prefetch tables that
  way).
Rows with no visible key (padding) get their own key only, so they stay finite and never make a tile
empty for a valid row; their outputs are unspecified, as in the jnp path.

Sharding: under a `rules.use_rules` context the kernel runs inside `jax.shard_map`, batch split as the rules
split "batch" (when the batch divides) and heads as they split "act_kv_heads"; the kernel is built per shard
from local shapes (head_shards = q_seq_shards = 1), so dynamic per-row masks never cross devices.

`unsupported` (then `attend` runs jnp): not a TPU program (unless `interpret`), query blocks shorter than
`MIN_QUERY_BLOCK` (decoding: a 128-row tile would be mostly padding), or a head-sharding mesh axis that does
not divide the KV heads. Numerics: q is scaled by D^-0.5 before the kernel (splash has no scale argument);
logits, softmax and P@V accumulate in fp32 inside the kernel.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec as P

from alphagrpo_jax.models.bagel import attention as attn_lib
from alphagrpo_jax.parallel import rules as rules_lib

MIN_QUERY_BLOCK = 128
_LANES = 128                   # lengths are padded to multiples of this (the kernel's lane width)
_BLOCK_CHOICES = (512, 256, 128)


def _mesh_axes(names, size: int) -> tuple[str, ...] | None:
    """Mesh axes the active rules give logical `names` (one dimension), or None when they do not divide."""
    mesh, rules = rules_lib.current()
    entry = rules_lib.logical_to_spec(names, rules, mesh)[0]
    axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    n = math.prod(mesh.shape[a] for a in axes)
    return axes if size % n == 0 else None


def unsupported(q, k, v, mask, cache_k=None, *, interpret: bool = False) -> str | None:
    platform = attn_lib.program_platform()
    if not interpret and platform != "tpu":
        return f"splash is a TPU kernel and this program is for {platform!r} (use 'splash_interpret' to test)"
    if q.shape[1] < MIN_QUERY_BLOCK:
        return (f"query block of {q.shape[1]} tokens < {MIN_QUERY_BLOCK}: a kernel tile would be mostly "
                "padding (decoding)")
    if rules_lib.current() is not None:
        hk = k.shape[2]
        if _mesh_axes(("act_kv_heads",), hk) is None:
            mesh = rules_lib.current()[0]
            return f"the mesh axes of 'act_kv_heads' ({dict(mesh.shape)}) do not divide {hk} KV heads"
    return None


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_axis(x: jax.Array, axis: int, size: int) -> jax.Array:
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad)


def _block_sizes(lq: int, lk: int) -> splash.BlockSizes:
    bq = next(b for b in _BLOCK_CHOICES if lq % b == 0)
    bk = next(b for b in _BLOCK_CHOICES if lk % b == 0)
    return splash.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                             block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)


def _static_kernel(causal: bool, cache_size: int, lq: int, lk: int, interpret: bool):
    one = (splash_mask.CausalMask((lq, lk), offset=cache_size) if causal else splash_mask.FullMask((lq, lk)))
    return splash.make_splash_mha(splash_mask.MultiHeadMask([one]), block_sizes=_block_sizes(lq, lk),
                                  head_shards=1, q_seq_shards=1, interpret=interpret)


def _dynamic_kernel(mask: jax.Array, interpret: bool):
    """mask [1, Lq, Lk] bool (traced) -> a splash kernel whose mask tables are arrays."""
    kernel = splash.make_splash_mha(mask, block_sizes=_block_sizes(*mask.shape[1:]), head_shards=1,
                                    q_seq_shards=1, interpret=interpret)
    # make_splash_mha turns every MaskInfo field into an array, `is_dynamic_mask` too, and the kernel then
    # branches on it in Python (jax 0.10.2); under jit that is a tracer. It only selects a named scope.
    fix = lambda info: None if info is None else info._replace(is_dynamic_mask=True)  # noqa: E731
    kernel.fwd_mask_info = fix(kernel.fwd_mask_info)
    kernel.dq_mask_info = fix(kernel.dq_mask_info)
    kernel.dkv_mask_info = fix(kernel.dkv_mask_info)
    return kernel


def _layout(q, keys, values, cache_size: int):
    """Pads to kernel shapes and moves heads first: q [B, Hq, Lq', D] (scaled), k/v [B, Hk, Lk', D] with keys
    [cache S ; own padded to Lq' ; tail], Lq' and Lk' multiples of 128."""
    lq = q.shape[1]
    lq_p = _round_up(lq, _LANES)
    lk_p = _round_up(cache_size + lq_p, _LANES)

    def kv(x):
        own = _pad_axis(x[:, cache_size:], 1, lq_p)
        return _pad_axis(jnp.concatenate([x[:, :cache_size], own], axis=1), 1, lk_p).transpose(0, 2, 1, 3)

    scale = q.shape[-1] ** -0.5
    qs = (q.astype(jnp.float32) * scale).astype(q.dtype)
    return _pad_axis(qs, 1, lq_p).transpose(0, 2, 1, 3), kv(keys), kv(values)


def _local_cache(q, keys, values, kv_len, q_len, *, causal: bool, cache_size: int, interpret: bool):
    """One shard of the CacheMask path: q [b, Lq, h, D], keys/values [b, S + Lq, hk, D], lengths [b]."""
    lq = q.shape[1]
    qt, kt, vt = _layout(q, keys, values, cache_size)
    lq_p, lk_p = qt.shape[2], kt.shape[2]
    q_seg = (jnp.arange(lq_p)[None] < q_len[:, None]).astype(jnp.int32)
    cache_ok = jnp.arange(cache_size)[None] < kv_len[:, None]
    own_ok = jnp.arange(lk_p - cache_size)[None] < q_len[:, None]
    kv_seg = jnp.concatenate([cache_ok, own_ok], axis=1).astype(jnp.int32)
    kernel = _static_kernel(causal, cache_size, lq_p, lk_p, interpret)
    out = jax.vmap(kernel)(qt, kt, vt, splash.SegmentIds(q_seg, kv_seg))
    return out.transpose(0, 2, 1, 3)[:, :lq]


def _local_dense(q, keys, values, dense, *, cache_size: int, interpret: bool):
    """One shard of the dynamic-mask path: dense [b, Lq, S + Lq] bool (BAGEL's rule)."""
    lq = q.shape[1]
    qt, kt, vt = _layout(q, keys, values, cache_size)
    lq_p, lk_p = qt.shape[2], kt.shape[2]
    own = _pad_axis(_pad_axis(dense[:, :, cache_size:], 2, lq_p), 1, lq_p)
    m = _pad_axis(jnp.concatenate([_pad_axis(dense[:, :, :cache_size], 1, lq_p), own], axis=2), 2, lk_p)
    # A row with no visible key (padding) sees its own key: a finite output, and no all-masked tile row.
    self_key = jnp.arange(lk_p)[None, :] == cache_size + jnp.arange(lq_p)[:, None]
    m = m | (~jnp.any(m, axis=-1, keepdims=True) & self_key[None])

    def one(mask_row, qr, kr, vr):
        return _dynamic_kernel(mask_row[None], interpret)(qr, kr, vr)

    out = jax.vmap(one)(m, qt, kt, vt)
    return out.transpose(0, 2, 1, 3)[:, :lq]


def attention(q, k, v, mask, cache_k=None, cache_v=None, *, interpret: bool = False) -> jax.Array:
    """q [B, Lq, Hq, D], k/v [B, Lq, Hk, D], cache [B, S, Hk, D] -> [B, Lq, Hq, D] (q's dtype)."""
    keys, values = attn_lib.keys_and_values(k, v, mask, cache_k, cache_v)
    cache_size = 0 if isinstance(mask, attn_lib.PackedMask) else cache_k.shape[1]
    if isinstance(mask, attn_lib.CacheMask):
        local = lambda q_, k_, v_, a, b: _local_cache(  # noqa: E731
            q_, k_, v_, a, b, causal=mask.causal, cache_size=cache_size, interpret=interpret)
        extra = (mask.kv_len.astype(jnp.int32), mask.q_len.astype(jnp.int32))
    else:
        local = lambda q_, k_, v_, d: _local_dense(  # noqa: E731
            q_, k_, v_, d, cache_size=cache_size, interpret=interpret)
        extra = (attn_lib.dense_mask(mask, cache_size, q.shape[1]),)
    if rules_lib.current() is None:
        return local(q, keys, values, *extra)
    mesh = rules_lib.current()[0]
    b = _mesh_axes(("batch",), q.shape[0]) or None
    h = _mesh_axes(("act_kv_heads",), k.shape[2]) or None
    if b and h and set(b) & set(h):  # rules that split batch and heads over one axis: keep heads whole
        h = None
    act = P(b, None, h, None)
    extra_specs = tuple(P(b, *([None] * (x.ndim - 1))) for x in extra)
    return jax.shard_map(local, mesh=mesh, in_specs=(act, act, act) + extra_specs, out_specs=act,
                         check_vma=False)(q, keys, values, *extra)
