"""The workloads' sizes and names, and the ratio table, shared by bench_upstream.py (JAX, ours) and
upstream_bagel.py (torch, upstream PyTorch BAGEL): plain Python, importable by either virtual environment."""
from __future__ import annotations

import time

import numpy as np

PROMPT, NEW_TOKENS, LATENTS, T2I_PROMPT = 128, 64, 256, 16  # tokens; T2I_PROMPT: ids inside bos ... eos
PREFILL = f"prefill {PROMPT}"


def timed(fn, repeats: int) -> tuple[float, float]:
    """(compile / warm-up seconds = first call - median, median seconds) of fn() (which blocks)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    med = float(np.median(runs))
    return max(first - med, 0.0), med


def decode_name(batch: int) -> str:
    return f"decode {NEW_TOKENS}, batch {batch}"


def gen_name(branches: int) -> str:
    return f"gen step, {branches} branch"


def t2i_side(size: int, max_latent_size: int, latent_downsample: int) -> int:
    """Square T2I side in px: `size` capped by the release's latent grid."""
    return min(size, max_latent_size * latent_downsample)


def t2i_name(side: int, steps: int) -> str:
    return f"T2I {side}px, {steps} steps, CFG 4"


def vae_name(side: int) -> str:
    return f"VAE decode {side}px"


def pool(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
    """(workload, dtype) -> (median compile s, median run s) over the rounds' rows (each row one round's
    median of its repeats)."""
    out: dict[tuple[str, str], list] = {}
    for r in rows:
        out.setdefault((r["workload"], r["dtype"]), []).append((r["compile_s"], r["run_s"]))
    return {k: tuple(float(np.median([v[i] for v in vs])) for i in (0, 1)) for k, vs in out.items()}


def ratio_table(ours: list[dict], upstream: list[dict]) -> list[dict]:
    """Pooled rows: upstream s, ours s, ratio = upstream / ours (>1: we are faster), compile s of each side.
    Adds "decode 64, batch 16 vs 16 x batch 1": our batch 16 against 16 upstream batch-1 decodes."""
    o, u = pool(ours), pool(upstream)
    rows = []
    for (name, dtype), (oc, os_) in o.items():
        if (name, dtype) in u:
            uc, us = u[name, dtype]
            rows.append(dict(workload=name, dtype=dtype, upstream_s=us, ours_s=os_, ratio=us / os_,
                             ours_compile_s=oc, upstream_compile_s=uc))
        if name == decode_name(16) and (decode_name(1), dtype) in u:
            us = 16 * u[decode_name(1), dtype][1]
            rows.append(dict(workload=f"{name} vs 16 x batch 1", dtype=dtype, upstream_s=us, ours_s=os_,
                             ratio=us / os_, ours_compile_s=oc, upstream_compile_s=None))
    return rows


def print_ratio_table(rows: list[dict]) -> None:
    print(f"\n{'workload':42s} {'dtype':9s} {'upstream s':>10s} {'ours s':>8s} {'ratio':>6s} "
          f"{'compile s: upstream':>19s} {'ours':>6s}")
    for r in rows:
        uc = f"{r['upstream_compile_s']:19.2f}" if r["upstream_compile_s"] is not None else f"{'-':>19s}"
        print(f"{r['workload']:42s} {r['dtype']:9s} {r['upstream_s']:10.4f} {r['ours_s']:8.4f} "
              f"{r['ratio']:6.2f} {uc} {r['ours_compile_s']:6.2f}")
    print("ratio = upstream s / ours s (median over rounds of each round's median; >1: ours is faster)")
