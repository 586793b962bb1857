"""Flow-matching schedule and steps: BAGEL's Euler ODE and Flow-GRPO's SDE step with its Gaussian log-prob.

Convention (BAGEL): x_t = (1 - t) x0 + t eps, t = 1 is noise; the model predicts v = eps - x0. Steps go from
t_i to t_{i+1} < t_i with dt = t_{i+1} - t_i < 0. All math here is fp32.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def timesteps(num_timesteps: int, shift: float) -> np.ndarray:
    """BAGEL's shifted grid [N]: u = linspace(1, 0, N), t = s u / (1 + (s - 1) u). N points, N-1 steps."""
    u = np.linspace(1.0, 0.0, num_timesteps, dtype=np.float32)
    return (shift * u / (1.0 + (shift - 1.0) * u)).astype(np.float32)


def euler_step(x: jax.Array, v: jax.Array, t: jax.Array, t_next: jax.Array) -> jax.Array:
    """ODE step x + v dt on the fp32 state. With a bf16 velocity the delta v*dt is rounded to bf16 before it
    is added, as in the official run."""
    dt = jnp.asarray(t_next, jnp.float32) - jnp.asarray(t, jnp.float32)
    delta = (v.astype(jnp.float32) * dt).astype(v.dtype).astype(jnp.float32)
    return x.astype(jnp.float32) + delta


def sde_std(t, t_max, eta):
    """Flow-GRPO noise scale: eta * sqrt(t / (1 - t')), t' = t_max (the grid's second point) when t == 1."""
    t = jnp.asarray(t, jnp.float32)
    return eta * jnp.sqrt(t / (1.0 - jnp.where(t == 1.0, t_max, t)))


def sde_mean(x, v, t, t_next, t_max, eta):
    """Mean of the SDE transition: x (1 + std^2 dt / (2t)) + v (1 + std^2 (1 - t) / (2t)) dt. Returns
    (mean, std)."""
    x, v = x.astype(jnp.float32), v.astype(jnp.float32)
    t = jnp.asarray(t, jnp.float32)
    dt = jnp.asarray(t_next, jnp.float32) - t
    std = sde_std(t, t_max, eta)
    mean = x * (1.0 + std ** 2 / (2.0 * t) * dt) + v * (1.0 + std ** 2 * (1.0 - t) / (2.0 * t)) * dt
    return mean, std


def sde_log_prob(x_next, mean, std, t, t_next) -> jax.Array:
    """Element-wise Gaussian log-density of x_next without its constants (they cancel in ratios)."""
    dt = jnp.asarray(t_next, jnp.float32) - jnp.asarray(t, jnp.float32)
    var = (std * jnp.sqrt(-dt)) ** 2
    return -((x_next.astype(jnp.float32) - mean) ** 2) / (2.0 * var)


def sde_step(x, v, t, t_next, t_max, eta, noise):
    """One Flow-GRPO SDE step. Returns (x_next, log_prob [elementwise], mean, std)."""
    mean, std = sde_mean(x, v, t, t_next, t_max, eta)
    dt = jnp.asarray(t_next, jnp.float32) - jnp.asarray(t, jnp.float32)
    x_next = mean + std * jnp.sqrt(-dt) * noise.astype(jnp.float32)
    return x_next, sde_log_prob(x_next, mean, std, t, t_next), mean, std


def cps_step(x, v, t, t_next, eta, noise):
    """Flow-CPS step (the reference's optional variant). Returns (x_next, log_prob, mean, std); its
    log-prob is -(x_next - mean)^2 without the variance (as the reference defines it)."""
    x, v = x.astype(jnp.float32), v.astype(jnp.float32)
    std = jnp.asarray(t_next, jnp.float32) * math.sin(eta * math.pi / 2)
    x0 = x - t * v
    x1 = x + v * (1.0 - t)
    mean = x0 * (1.0 - t_next) + x1 * jnp.sqrt(t_next ** 2 - std ** 2)
    x_next = mean + std * noise.astype(jnp.float32)
    return x_next, -((x_next - mean) ** 2), mean, std


def mean_log_prob(log_prob_elem: jax.Array) -> jax.Array:
    """Per-sample log-prob: the MEAN over all latent elements (tokens x channels), as the reference."""
    return jnp.mean(log_prob_elem.reshape(log_prob_elem.shape[0], -1), axis=-1)
