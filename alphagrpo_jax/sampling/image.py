"""Image generation by flow matching: one jitted `lax.scan` over BAGEL's shifted timesteps.

Each step builds the query [vision_start, N latents, vision_end] at every branch's RoPE id, runs the MoT LLM
against the branch's KV cache (noisy latents never enter the cache), combines the CFG branches, and takes an
Euler ODE step, or a Flow-GRPO SDE step with its Gaussian log-prob inside the SDE window
[window_start, window_start + sde_window). The CFG branches (cond | text-uncond | image-uncond) are stacked on
the batch axis and run as one forward; outside the CFG interval only the conditional branch runs.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import Routing
from alphagrpo_jax.sampling import flow
from alphagrpo_jax.sampling.cfg import CFGConfig, combine
from alphagrpo_jax.sampling.context import Context


@dataclasses.dataclass(frozen=True)
class ImageSamplerConfig:
    num_timesteps: int = 50      # grid points; num_timesteps - 1 steps
    shift: float = 3.0
    cfg: CFGConfig = CFGConfig()
    sde_window: int = 0          # SDE steps per trajectory (0 = deterministic ODE)
    eta: float = 0.7             # SDE noise level

    @property
    def num_steps(self) -> int:
        return self.num_timesteps - 1

    def timesteps(self) -> np.ndarray:
        return flow.timesteps(self.num_timesteps, self.shift)


@struct.dataclass
class Branches:
    """The contexts of one image query: conditional, and the unconditional ones CFG needs (or None)."""
    cond: Context
    text_uncond: Context | None = None
    img_uncond: Context | None = None

    def stacked(self, cfg: CFGConfig) -> Context:
        ctxs = [self.cond]
        if cfg.uses_text_branch:
            if self.text_uncond is None:
                raise ValueError("cfg text_scale > 1 needs a text-unconditional context")
            ctxs.append(self.text_uncond)
        if cfg.uses_img_branch:
            if self.img_uncond is None:
                raise ValueError("cfg img_scale > 1 needs an image-unconditional context")
            ctxs.append(self.img_uncond)
        return Context.concat(ctxs) if len(ctxs) > 1 else self.cond


@struct.dataclass
class SampleOutput:
    latents: jax.Array      # [B, N, 64] final x at t = 0
    trajectory: jax.Array   # [B, T, N, 64] x at every grid point (T = num_timesteps), fp32
    log_probs: jax.Array    # [B, W] mean-over-elements log-prob of each SDE step (W = sde_window)
    means: jax.Array        # [B, W, N, 64] SDE transition means (for the KL term)
    window_start: jax.Array  # [] int32


def velocity(model, ctx: Context, x: jax.Array, t: jax.Array, latent_pos: jax.Array) -> jax.Array:
    """Model velocity [B, N, 64] (fp32) for latents x [B, N, 64] at flow time t [B] against `ctx`."""
    b, n = x.shape[:2]
    q = model.image_block(model.embed_latents(x, t, latent_pos))
    pos = jnp.broadcast_to(ctx.rope[:, None], (b, n + 2))
    mask = CacheMask(ctx.cache.length, jnp.full((b,), n + 2, jnp.int32), causal=False)
    h, _, _ = model.language_model(q, pos, Routing.block(1, n + 1), mask, jax.lax.stop_gradient(ctx.cache))
    return model.velocity(h[:, 1:-1])


def guided_velocity(model, cond: Context, stacked: Context, x, t, latent_pos, cfg: CFGConfig) -> jax.Array:
    """The CFG-combined velocity at scalar time t; only the conditional branch runs outside the interval."""
    b = x.shape[0]
    k = stacked.batch // b
    tb = jnp.full((b,), t, jnp.float32)

    def cond_only():
        return velocity(model, cond, x, tb, latent_pos)

    if k == 1:
        return cond_only()

    def guided():
        v = velocity(model, stacked, jnp.tile(x, (k, 1, 1)), jnp.tile(tb, k), jnp.tile(latent_pos, (k, 1)))
        parts = [v[i * b:(i + 1) * b] for i in range(k)]
        return combine(cfg, parts[0], parts[1], parts[2] if k > 2 else None)

    return jax.lax.cond(cfg.active(t), guided, cond_only)


def grid_positions(h: int, w: int, max_latent_size: int, batch: int) -> jax.Array:
    """2-D latent position ids row*max_latent_size + col, [batch, h*w]."""
    ids = (np.arange(h)[:, None] * max_latent_size + np.arange(w)).reshape(-1)
    return jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (batch, h * w))


@functools.partial(jax.jit, static_argnames=("sampler_config", "on_step"))
def sample(model, branches: Branches, x_init: jax.Array, latent_pos: jax.Array, key: jax.Array,
           window_start: jax.Array, sampler_config: ImageSamplerConfig, on_step=None) -> SampleOutput:
    """Runs the sampler from x_init [B, N, 64] (noise at t = 1). `window_start` may be traced.

    `on_step(i)` (optional, static) is called on the host after each step, e.g. to advance a progress bar.
    """
    ts = jnp.asarray(sampler_config.timesteps())
    t_max = ts[1]
    w = sampler_config.sde_window
    ws = jnp.asarray(window_start, jnp.int32)
    cond, stacked = branches.cond, branches.stacked(sampler_config.cfg)

    def step(x, i):
        if on_step is not None:
            jax.debug.callback(on_step, i)
        t, t_next = ts[i], ts[i + 1]
        v = guided_velocity(model, cond, stacked, x, t, latent_pos, sampler_config.cfg)
        x_ode = flow.euler_step(x, v, t, t_next)
        if w == 0:
            return x_ode, (x_ode, jnp.zeros(x.shape[:1]), jnp.zeros_like(x))
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
        x_sde, lp, mean, _ = flow.sde_step(x, v, t, t_next, t_max, sampler_config.eta, noise)
        in_window = (i >= ws) & (i < ws + w)
        x_next = jnp.where(in_window, x_sde, x_ode)
        return x_next, (x_next, flow.mean_log_prob(lp), mean)

    x0 = x_init.astype(jnp.float32)
    x_final, (xs, lps, means) = jax.lax.scan(step, x0, jnp.arange(sampler_config.num_steps))
    trajectory = jnp.concatenate([x0[None], xs], axis=0).swapaxes(0, 1)
    idx = jnp.clip(ws + jnp.arange(w), 0, sampler_config.num_steps - 1)
    return SampleOutput(x_final, trajectory, lps[idx].T, means[idx].swapaxes(0, 1), ws)


def step_log_prob(model, branches: Branches, x: jax.Array, x_next: jax.Array, i: jax.Array,
                  latent_pos: jax.Array, sampler_config: ImageSamplerConfig) -> tuple[jax.Array, jax.Array]:
    """The training path: re-scores the transition x -> x_next of step i under the current params.

    Returns (mean-over-elements log-prob [B], SDE mean [B, N, 64]); differentiable w.r.t. the params (the
    contexts' caches are stop-gradient inputs).
    """
    ts = jnp.asarray(sampler_config.timesteps())
    t, t_next = ts[i], ts[i + 1]
    guidance = sampler_config.cfg
    v = guided_velocity(model, branches.cond, branches.stacked(guidance), x, t, latent_pos, guidance)
    mean, std = flow.sde_mean(x, v, t, t_next, ts[1], sampler_config.eta)
    return flow.mean_log_prob(flow.sde_log_prob(x_next, mean, std, t, t_next)), mean


def steps_log_prob(model, branches: Branches, x: jax.Array, x_next: jax.Array, i: jax.Array,
                   latent_pos: jax.Array, sampler_config: ImageSamplerConfig) -> tuple[jax.Array, jax.Array]:
    """`step_log_prob` of W steps at once: x, x_next [W, B, N, 64] at step indices i [W] -> ([W, B] log-probs,
    [W, B, N, 64] SDE means). One forward of W * B rows (each context repeated W times): every CFG branch runs
    on every row, and a row outside the CFG interval takes its conditional velocity (same values per row)."""
    w, b = x.shape[:2]
    ts = jnp.asarray(sampler_config.timesteps())
    t, t_next = jnp.repeat(ts[i], b), jnp.repeat(ts[i + 1], b)  # [W * B]
    rows = functools.partial(jnp.reshape, shape=(w * b,) + x.shape[2:])
    x_rows, pos = rows(x), jnp.tile(latent_pos, (w, 1))
    guidance = sampler_config.cfg
    tiled = Branches(*(None if c is None else Context.concat([c] * w)
                       for c in (branches.cond, branches.text_uncond, branches.img_uncond)))
    stacked = tiled.stacked(guidance)
    k = stacked.batch // (w * b)
    v = velocity(model, stacked, jnp.tile(x_rows, (k, 1, 1)), jnp.tile(t, k), jnp.tile(pos, (k, 1)))
    if k > 1:
        parts = [v[j * w * b:(j + 1) * w * b] for j in range(k)]
        v = combine(guidance, parts[0], parts[1], parts[2] if k > 2 else None,
                    active=guidance.active(t)[:, None, None])
    t3, t_next3 = t[:, None, None], t_next[:, None, None]
    mean, std = flow.sde_mean(x_rows, v, t3, t_next3, ts[1], sampler_config.eta)
    lp = flow.mean_log_prob(flow.sde_log_prob(rows(x_next), mean, std, t3, t_next3))
    return lp.reshape(w, b), mean.reshape(x.shape)


@functools.partial(jax.jit, static_argnames=("sampler_config",))
def window_log_probs(model, branches: Branches, trajectory: jax.Array, window_start: jax.Array,
                     latent_pos: jax.Array, sampler_config: ImageSamplerConfig) -> tuple[jax.Array, jax.Array]:
    """Re-scores every SDE-window step of stored trajectories: ([B, W] log-probs, [B, W, N, 64] means)."""

    def one(j):
        i = window_start + j
        x = jnp.take(trajectory, i, axis=1)
        x_next = jnp.take(trajectory, i + 1, axis=1)
        return step_log_prob(model, branches, x, x_next, i, latent_pos, sampler_config)

    lps, means = jax.lax.map(one, jnp.arange(sampler_config.sde_window))
    return lps.T, means.swapaxes(0, 1)
