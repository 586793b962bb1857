"""Timing helpers shared by the benchmark scripts."""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def time_fn(fn, *args, warmup: int = 1, repeats: int = 5) -> tuple[float, float]:
    """(compile+first-call seconds, median seconds per call) of a jitted fn."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def matmul_peak_flops(n: int = 1024, dtype=jnp.bfloat16, repeats: int = 5) -> float:
    """Measured FLOP/s of a plain [n, n] @ [n, n] bf16 x bf16 -> f32 jnp.dot on this backend (the baseline)."""
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    b = jnp.asarray(np.random.default_rng(1).normal(size=(n, n)), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    _, sec = time_fn(f, a, b, warmup=2, repeats=repeats)
    return 2 * n ** 3 / sec


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
