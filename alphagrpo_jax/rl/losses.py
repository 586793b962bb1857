"""Policy losses (registry): Flow-GRPO for image steps, GSPO for think text, and the KL terms.

All in fp32. Ratios use log-ratios clamped to +-max_log_ratio before exp. Each sample's ratio is paired
with ITS OWN advantage (the reference broadcasts a [B] ratio against [B, 1] advantages; we do not).
Each function returns (loss scalar, metrics dict).
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        LOSSES[name] = fn
        return fn
    return deco


def _ratio(logp, old_logp, max_log_ratio):
    return jnp.exp(jnp.clip(logp.astype(jnp.float32) - old_logp.astype(jnp.float32), -max_log_ratio, max_log_ratio))


def _mean(x, weights):
    return jnp.sum(x * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@register("flow_grpo")
def flow_grpo(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, valid: jax.Array, clip_eps: float = 1e-5,
              adv_clip: float = 5.0, max_log_ratio: float = 20.0):
    """Image steps. logp/old_logp [B, W] (mean-over-elements log-prob per SDE step), adv [B], valid [B] (0 for
    padding samples). Per step j: L_j = mean_b max(-A r, -A clip(r, 1 +- eps)); loss = sum_j L_j (the reference
    takes one backward per window step, so steps add up)."""
    a = jnp.clip(adv.astype(jnp.float32), -adv_clip, adv_clip)[:, None]
    r = _ratio(logp, old_logp, max_log_ratio)
    per = jnp.maximum(-a * r, -a * jnp.clip(r, 1.0 - clip_eps, 1.0 + clip_eps))
    w = jnp.broadcast_to(valid.astype(jnp.float32)[:, None], per.shape)
    loss = jnp.sum(jnp.sum(per * w, axis=0) / jnp.maximum(jnp.sum(valid), 1.0))
    clipped = (jnp.abs(r - 1.0) > clip_eps).astype(jnp.float32)
    return loss, {"image/ratio_mean": _mean(r, w), "image/ratio_max": jnp.max(jnp.where(w > 0, r, 0.0)),
                  "image/clip_frac": _mean(clipped, w),
                  "image/approx_kl": _mean(0.5 * (logp - old_logp) ** 2, w)}


@register("gspo")
def gspo(logp: jax.Array, old_logp: jax.Array, adv: jax.Array, mask: jax.Array, valid: jax.Array,
         clip_low: float = 0.2, clip_high: float = 0.28, max_log_ratio: float = 20.0):
    """Think text, sequence-level ratio. logp/old_logp/mask [B, T] (mask: sampled actions), adv [B].
    s_b = exp(mean_t (logp - old)); L_b = -min(s_b A_b, clip(s_b, 1-lo, 1+hi) A_b); loss = mean over valid b."""
    m = mask.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m, axis=1), 1.0)
    seq_log_ratio = jnp.sum((logp - old_logp) * m, axis=1) / n
    s = jnp.exp(jnp.clip(seq_log_ratio, -max_log_ratio, max_log_ratio))
    a = adv.astype(jnp.float32)
    per = -jnp.minimum(s * a, jnp.clip(s, 1.0 - clip_low, 1.0 + clip_high) * a)
    v = valid.astype(jnp.float32) * (jnp.sum(m, axis=1) > 0)
    clipped = ((s < 1.0 - clip_low) | (s > 1.0 + clip_high)).astype(jnp.float32)
    return _mean(per, v), {"text/ratio_mean": _mean(s, v), "text/clip_frac": _mean(clipped, v)}


@register("image_kl")
def image_kl(mean: jax.Array, ref_mean: jax.Array, std: jax.Array, valid: jax.Array):
    """Flow-GRPO's KL of two Gaussian transitions with equal std: mean((mu - mu_ref)^2) / (2 std^2).
    mean/ref_mean [B, W, ...], std [W] -> averaged over valid samples, summed over steps like the PG loss."""
    d = jnp.mean(((mean - ref_mean) ** 2).reshape(mean.shape[:2] + (-1,)), axis=-1) / (2.0 * std[None] ** 2)
    per_step = jnp.sum(d * valid[:, None], axis=0) / jnp.maximum(jnp.sum(valid), 1.0)
    return jnp.sum(per_step), {"image/kl": jnp.mean(per_step)}


@register("text_k3_kl")
def text_k3_kl(logp: jax.Array, ref_logp: jax.Array, mask: jax.Array, valid: jax.Array):
    """k3 = exp(ref - logp) - (ref - logp) - 1 per token, mean per sequence, mean over valid sequences."""
    d = ref_logp - logp
    k3 = jnp.exp(d) - d - 1.0
    m = mask.astype(jnp.float32)
    per = jnp.sum(k3 * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    v = valid.astype(jnp.float32)
    kl = _mean(per, v)
    return kl, {"text/kl": kl}


def get(name: str) -> Callable:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]
