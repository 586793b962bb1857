"""Classifier-free guidance exactly as BAGEL combines its branches (renorm types global/channel/text_channel).

Velocities are [B, N, C] (N latent tokens); norms are per sample ("global": over all tokens and channels) or
per token ("channel", "text_channel"). Guidance applies only when cfg_text_scale > 1 and the step's t lies in
(cfg_interval[0], cfg_interval[1]]; otherwise the conditional velocity is returned unchanged.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

RENORM_TYPES = ("global", "channel", "text_channel")


@dataclasses.dataclass(frozen=True)
class CFGConfig:
    text_scale: float = 4.0
    img_scale: float = 1.0
    interval: tuple[float, float] = (0.4, 1.0)
    renorm_type: str = "global"
    renorm_min: float = 0.0

    def __post_init__(self):
        if self.renorm_type not in RENORM_TYPES:
            raise ValueError(f"cfg renorm_type {self.renorm_type!r} not in {RENORM_TYPES}")
        object.__setattr__(self, "interval", tuple(float(x) for x in self.interval))

    @property
    def uses_text_branch(self) -> bool:
        return self.text_scale > 1.0

    @property
    def uses_img_branch(self) -> bool:
        # Upstream computes the image branch whenever img_scale > 1 but only uses it under text guidance.
        return self.text_scale > 1.0 and self.img_scale > 1.0

    def active(self, t: jax.Array) -> jax.Array:
        lo, hi = self.interval
        return (t > lo) & (t <= hi)


def _norm(x: jax.Array, per_token: bool) -> jax.Array:
    x = x.astype(jnp.float32)
    if per_token:
        return jnp.linalg.norm(x, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.sum(x * x, axis=tuple(range(1, x.ndim)), keepdims=True))


def _renorm(v_guided, v_ref, per_token: bool, renorm_min: float):
    scale = jnp.clip(_norm(v_ref, per_token) / (_norm(v_guided, per_token) + 1e-8), renorm_min, 1.0)
    return v_guided * scale


def combine(cfg: CFGConfig, v_cond, v_text_uncond=None, v_img_uncond=None, active=True) -> jax.Array:
    """The guided velocity [B, N, C] (fp32). `active` (bool or traced scalar) gates guidance for the step."""
    v_cond = v_cond.astype(jnp.float32)
    if not cfg.uses_text_branch:
        return v_cond
    vt = v_text_uncond.astype(jnp.float32) + cfg.text_scale * (v_cond - v_text_uncond.astype(jnp.float32))
    use_img = cfg.uses_img_branch
    vi = v_img_uncond.astype(jnp.float32) if use_img else None
    if cfg.renorm_type == "text_channel":
        vt = _renorm(vt, v_cond, True, cfg.renorm_min)
        guided = vi + cfg.img_scale * (vt - vi) if use_img else vt
    else:
        if use_img:
            vt = vi + cfg.img_scale * (vt - vi)
        guided = _renorm(vt, v_cond, cfg.renorm_type == "channel", cfg.renorm_min)
    return jnp.where(active, guided, v_cond)
