"""Attention of one query per row against a KV cache, laid out for XLA:CPU (the decode loop's attention).

The reference (`attention.dot_product_attention`) concatenates the cache with the block's own keys and
transposes keys to [B, Hk, D, S] and values to [B, Hk, S, D] before its batched matmuls: two transposing copies
of the whole cache per layer and token, which XLA:CPU makes element by element (three quarters of a bf16
decode step's attention at batch 16). Here the cache is read in its own layout: [B, S, Hk, D] reshapes for
free to [B, S*Hk, D] keys and [B, S, Hk*D] values, so each row's queries meet every cache head in one
batched matmul (Hk times the FLOPs of the one head they need, small next to the copies at one query per
row), and the matching head's entries are picked out of the [.., Hk, .., Hk, ..] products. The block's own
keys are a second, small product; no concatenation of the cache.

Same values as the reference to fp32 rounding: fp32 logits and softmax, probabilities cast to the values'
dtype before P@V, fp32 accumulation (the cache and own parts of P@V are summed separately).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attend_cached_rows(q, k, v, bias, cache_k, cache_v) -> jax.Array:
    """q [B, Lq, Hq, D]; the block's own k/v [B, Lq, Hk, D]; cache_k/v [B, S, Hk, D]; bias [B, Lq, S + Lq] fp32
    additive (0 or a large negative) over keys [cache ; own]. -> [B, Lq, Hq, D] in q's dtype."""
    b, lq, hq, d = q.shape
    s, hk = cache_k.shape[1], cache_k.shape[2]
    g, scale = hq // hk, d ** -0.5
    keys = cache_k.astype(k.dtype).reshape(b, s * hk, d)
    every = jnp.einsum("bnd,brd->bnr", keys, q.reshape(b, lq * hq, d), preferred_element_type=jnp.float32)
    every = every.reshape(b, s, hk, lq, hk, g)  # [.., cache head, .., query head group, ..]
    cached = jnp.stack([every[:, :, h, :, h] for h in range(hk)], axis=3).transpose(0, 2, 3, 4, 1)  # [B,Lq,Hk,G,S]
    q5 = q.reshape(b, lq, hk, g, d)
    own = jnp.einsum("bqhgd,bkhd->bqhgk", q5, k, preferred_element_type=jnp.float32)  # [B, Lq, Hk, G, Lq]
    logits = jnp.concatenate([cached, own], axis=-1) * scale + bias[:, :, None, None, :]
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    values = cache_v.astype(v.dtype).reshape(b, s, hk * d)
    every_v = jnp.einsum("brs,bsn->brn", probs[..., :s].reshape(b, lq * hq, s), values,
                         preferred_element_type=jnp.float32).reshape(b, lq, hk, g, hk, d)
    out = jnp.stack([every_v[:, :, h, :, h] for h in range(hk)], axis=2)  # [B, Lq, Hk, G, D]
    out = out + jnp.einsum("bqhgk,bkhd->bqhgd", probs[..., s:], v, preferred_element_type=jnp.float32)
    return out.reshape(b, lq, hq, d).astype(q.dtype)
