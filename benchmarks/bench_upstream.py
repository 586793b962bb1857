"""Our inference workloads on one model, timed, against the matmul peaks measured in the same run.

    python benchmarks/bench_upstream.py [--release DIR | --preset small_100m] [--dtype float32,bfloat16]
                                        [--repeats 5] [--size 256] [--steps 16] [--json OUT]

Loads a release folder through our API (`release.load_release`; default tests/goldens/bagel_tiny_a, the smoke
path) or builds a random-weight model from a config preset (`--preset`, e.g. small_100m: ~100M parameters per
expert stack), then for each dtype times, each as one jitted program where the library has one:
- prefill: 128 text tokens, batch 1, into a 128-slot cache (und expert);
- decode: 64 tokens greedy after that prompt, batch 1 and batch 16 (`text.step_logits` in a `fori_loop`);
- gen step: one velocity of 256 latent tokens (258 queries with the image markers) against a 128-token
  cache, 1 branch and 2 CFG branches (batch 2);
- T2I: `Pipeline.generate_from_items`, a 16-token prompt, `--size` px (capped by the release's latent grid),
  `--steps` denoising steps (num_timesteps = steps + 1), text CFG 4, including the VAE decode;
- VAE decode alone (`Pipeline.decode_images`).
Compile time (first call minus the median) is printed apart from run time (median of `--repeats`), with
FLOP/s as a fraction of the `jnp.dot` peaks (bf16 x bf16 -> f32 and f32, 1024^3) measured in the same run.

Upstream PyTorch BAGEL is not driven by this script yet (see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models.bagel import config as config_lib, model as model_lib, release as release_lib
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.sampling import context as ctx_lib, text as text_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
from common import REPO, matmul_peak_flops

PROMPT, NEW_TOKENS, LATENTS = 128, 64, 256


def timed(fn, repeats: int) -> tuple[float, float]:
    """(compile seconds = first call - median, median seconds) of fn() (which blocks)."""
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


def llm_flops(cfg, tokens: int, context: int) -> float:
    """Forward FLOPs of `tokens` tokens through one expert path attending to `context` keys on average."""
    c = cfg.llm
    d, hq, hk, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
    per_layer = d * hq * hd + 2 * d * hk * hd + hq * hd * d + 3 * d * f
    return tokens * c.num_layers * (2 * per_layer + 4 * hq * hd * context)


def load(args, dtype: str):
    over = dict(param_dtype=dtype, dtype=dtype)
    if args.preset:
        cfg = config_lib.preset(args.preset, **over)
        return release_lib.Release(cfg, model_lib.Bagel(cfg, nnx.Rngs(0)), release_lib.make_autoencoder(cfg), None)
    return release_lib.load_release(args.release, mesh_lib.make_mesh({"fsdp": -1}), **over)


def workloads(rel, args):
    """name -> (zero-argument callable that runs once and blocks, FLOPs or None)."""
    model, cfg = rel.model, rel.cfg
    graphdef, state = nnx.split(model)
    rng = np.random.default_rng(0)
    vocab = cfg.llm.vocab_size
    ids = jnp.asarray(rng.integers(5, vocab, (1, PROMPT)), jnp.int32)

    @jax.jit
    def prefill(state, cache, ids):
        m = nnx.merge(graphdef, state)
        b, n = ids.shape
        mask = CacheMask(cache.length, jnp.full((b,), n, jnp.int32), True)
        pos = jnp.broadcast_to(jnp.arange(n), (b, n))
        _, cache, _ = m.language_model(m.embed_text(ids), pos, Routing.und(), mask, cache, write_cache=True)
        return cache

    @jax.jit
    def decode(state, ctx):
        m = nnx.merge(graphdef, state)
        b = ctx.batch

        def body(_, carry):
            ctx, tok = carry
            logits, ctx = text_lib.step_logits(m, ctx, tok, ctx.rope, jnp.ones((b,), bool))
            return ctx, jnp.argmax(logits, axis=-1).astype(jnp.int32)

        return jax.lax.fori_loop(0, NEW_TOKENS, body, (ctx, jnp.zeros((b,), jnp.int32)))

    @jax.jit
    def gen_step(state, cache, x, t):
        m = nnx.merge(graphdef, state)
        b, n = x.shape[:2]
        q = m.image_block(m.embed_latents(x, t, jnp.broadcast_to(jnp.arange(n), (b, n))))
        mask = CacheMask(cache.length, jnp.full((b,), n + 2, jnp.int32), False)
        pos = jnp.full((b, n + 2), PROMPT, jnp.int32)
        h, _, _ = m.language_model(q, pos, Routing.block(1, n + 1), mask, cache)
        return m.velocity(h[:, 1:-1])

    prompt_prefill = jax.jit(lambda *a: prefill.__wrapped__(*a))  # its own compile: prefill's stays timed

    def prompt_cache(b, extra):
        cache = prompt_prefill(state, KVCache.zeros(cfg, 1, PROMPT + extra), ids)
        return jax.tree.map(lambda a: jnp.repeat(a, b, axis=a.ndim - 4 if a.ndim == 5 else 0), cache)

    out = {"prefill 128": (lambda: jax.block_until_ready(prefill(state, KVCache.zeros(cfg, 1, PROMPT), ids)),
                           llm_flops(cfg, PROMPT, PROMPT / 2))}
    for b in (1, 16):
        ctx0 = ctx_lib.Context(prompt_cache(b, NEW_TOKENS), jnp.full((b,), PROMPT, jnp.int32))
        out[f"decode 64, batch {b}"] = (lambda ctx0=ctx0: jax.block_until_ready(decode(state, ctx0)),
                                        llm_flops(cfg, b * NEW_TOKENS, PROMPT + NEW_TOKENS / 2))
    dim = cfg.patch_latent_dim
    for b in (1, 2):
        cache = prompt_cache(b, 0)
        x = jnp.asarray(rng.normal(size=(b, LATENTS, dim)), jnp.float32)
        t = jnp.full((b,), 0.5, jnp.float32)
        out[f"gen step, {b} branch"] = (lambda cache=cache, x=x, t=t: jax.block_until_ready(gen_step(state, cache, x, t)),
                                        llm_flops(cfg, b * (LATENTS + 2), PROMPT + LATENTS + 2))
    pipe = Pipeline(rel)
    side = min(args.size, cfg.max_latent_size * cfg.latent_downsample)
    prompt = [ctx_lib.Text(tuple(int(i) for i in rng.integers(5, vocab, 16)))]

    def t2i():
        pipe.generate_from_items([prompt], [[]], [[]], think=False, height=side, width=side,
                                 num_timesteps=args.steps + 1, cfg_text=4.0)

    out[f"T2I {side}px, {args.steps} steps, CFG 4"] = (t2i, None)
    g = side // cfg.latent_downsample
    lat = jnp.asarray(rng.normal(size=(1, g * g, dim)), jnp.float32)
    out[f"VAE decode {side}px"] = (lambda: pipe.decode_images(lat, side, side), None)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--release", default=os.path.join(REPO, "tests/goldens/bagel_tiny_a"))
    ap.add_argument("--preset", default=None, help="random weights from a config preset instead of --release")
    ap.add_argument("--dtype", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    def measure_peaks():
        return {"bfloat16": matmul_peak_flops(1024, jnp.bfloat16), "float32": matmul_peak_flops(1024, jnp.float32)}

    peaks = measure_peaks()  # measured again at the end; the larger of the two is the peak (noisy hosts)
    print(f"matmul peaks at the start (jnp.dot 1024^3, f32 accumulation): bf16 {peaks['bfloat16'] / 1e9:.0f} "
          f"GFLOP/s, f32 {peaks['float32'] / 1e9:.0f} GFLOP/s; {jax.devices()[0].device_kind}, {os.cpu_count()} cores")
    results = {"peaks": peaks, "model": args.preset or args.release, "rows": []}
    print(f"{'workload':36s} {'dtype':9s} {'compile s':>9s} {'run s':>8s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for dtype in args.dtype.split(","):
        rel = load(args, dtype)
        for name, (fn, flops) in workloads(rel, args).items():
            compile_s, run_s = timed(fn, args.repeats)
            rate = flops / run_s if flops else None
            pct = f"{100 * rate / peaks[dtype]:6.1f}%" if rate else "      -"
            gf = f"{rate / 1e9:8.1f}" if rate else "       -"
            print(f"{name:36s} {dtype:9s} {compile_s:9.2f} {run_s:8.4f} {gf} {pct}", flush=True)
            results["rows"].append(dict(workload=name, dtype=dtype, compile_s=compile_s, run_s=run_s, flops=flops))
    end = measure_peaks()
    peaks = {k: max(v, end[k]) for k, v in peaks.items()}
    results["peaks"] = peaks
    print(f"matmul peaks at the end: bf16 {end['bfloat16'] / 1e9:.0f}, f32 {end['float32'] / 1e9:.0f} GFLOP/s; the "
          f"% peak column used the start's (a ratio above 100% means the start was measured under load)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
