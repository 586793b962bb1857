"""AdamW from a config section: warmup + constant/cosine learning rate, global-norm clipping, fp32 moments.

    optim:
      lr: 1e-4            peak learning rate
      warmup_steps: 2000  linear 0 -> lr (BAGEL's default warmup)
      schedule: constant  "constant" | "cosine" (cosine from lr to min_lr over decay_steps after warmup)
      decay_steps: 0      cosine length in optimizer steps (after warmup); required for "cosine"
      min_lr: 1e-7
      b1: 0.9  b2: 0.95  eps: 1e-15  weight_decay: 0.0   (BAGEL's AdamW)
      clip_norm: 1.0      0 disables clipping

Weight decay (when > 0) skips 1-D parameters (norm scales, biases). The moments are created in fp32 whatever the
parameter dtype (`mu_dtype`, and `nu` follows the parameters: trainers keep fp32 master parameters).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "cosine")
DEFAULTS = dict(lr=1e-4, warmup_steps=2000, schedule="constant", decay_steps=0, min_lr=1e-7, b1=0.9, b2=0.95,
                eps=1e-15, weight_decay=0.0, clip_norm=1.0)


class OptimConfigError(ValueError):
    pass


def _get(cfg: Mapping[str, Any] | Any) -> dict:
    """Config section (ConfigDict, dict or attribute object) merged over DEFAULTS; unknown keys are errors."""
    d = dict(cfg.items()) if hasattr(cfg, "items") else dict(vars(cfg))
    unknown = sorted(set(d) - set(DEFAULTS))
    if unknown:
        raise OptimConfigError(f"optim config: unknown field(s) {unknown}; known: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **d}
    if out["schedule"] not in SCHEDULES:
        raise OptimConfigError(f"optim.schedule: expected one of {SCHEDULES}, got {out['schedule']!r}")
    if out["schedule"] == "cosine" and int(out["decay_steps"]) <= 0:
        raise OptimConfigError("optim.decay_steps must be > 0 for the cosine schedule")
    for k in ("lr", "warmup_steps", "min_lr", "eps", "weight_decay", "clip_norm", "decay_steps"):
        if float(out[k]) < 0:
            raise OptimConfigError(f"optim.{k} must be >= 0, got {out[k]}")
    return out


def learning_rate_schedule(cfg) -> Callable[[jax.Array], jax.Array]:
    """step (optimizer updates so far) -> learning rate."""
    c = _get(cfg)
    lr, warm = float(c["lr"]), int(c["warmup_steps"])
    if c["schedule"] == "constant":
        after = optax.constant_schedule(lr)
    else:
        after = optax.cosine_decay_schedule(lr, int(c["decay_steps"]), alpha=float(c["min_lr"]) / lr if lr else 0.0)
    if warm == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def _decay_mask(params):
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def build_optimizer(cfg) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
    """(AdamW with clipping, its learning-rate schedule) from an `optim` config section."""
    c = _get(cfg)
    schedule = learning_rate_schedule(cfg)
    adamw = optax.adamw(schedule, b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"]),
                        weight_decay=float(c["weight_decay"]), mu_dtype=jnp.float32, mask=_decay_mask)
    parts = [optax.clip_by_global_norm(float(c["clip_norm"]))] if float(c["clip_norm"]) > 0 else []
    return optax.chain(*parts, adamw), schedule


def check_fp32(params) -> None:
    """Raises unless every parameter is fp32 (the moments then are too)."""
    bad = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(params)
           if jnp.dtype(x.dtype) != jnp.float32]
    if bad:
        raise OptimConfigError(f"optimizer: parameters must be fp32 master weights; not fp32: {bad[:5]}")
