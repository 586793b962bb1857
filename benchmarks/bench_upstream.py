"""Our inference workloads on one model, timed against the matmul peaks measured in the same run and, when
an upstream BAGEL checkout and a torch environment are given, against upstream PyTorch BAGEL's own code.

    python benchmarks/bench_upstream.py [--release DIR | --preset small_100m [--write-release DIR]]
                                        [--dtype float32,bfloat16] [--repeats 5] [--size 256] [--steps 16]
                                        [--upstream-bagel DIR --upstream-python PATH [--rounds 2]] [--json OUT]
                                        [--profile DIR]

Loads a release folder through our API (`release.load_release`; default tests/goldens/bagel_tiny_a, the smoke
path) or builds a random-weight model from a config preset (`--preset`, e.g. small_100m: ~100M parameters per
expert stack; with `--write-release DIR` the random weights are first written there as a release folder, bf16
ema.safetensors + f32 ae.safetensors, and both sides load that), then for each dtype times, each as one jitted
program where the library has one:
- prefill: 128 text tokens, batch 1, into a 128-slot cache (und expert);
- decode: 64 tokens greedy after that prompt, batch 1 and batch 16 (`text.step_logits` in a `fori_loop`);
- gen step: one velocity of 256 latent tokens (258 queries with the image markers) against a 128-token
  cache, 1 branch and 2 CFG branches (batch 2);
- T2I: `Pipeline.generate_from_items`, a 16-token prompt, `--size` px (capped by the release's latent grid),
  `--steps` denoising steps (num_timesteps = steps + 1), text CFG 4, including the VAE decode;
- VAE decode alone (`Pipeline.decode_images`).
Compile time (first call minus the median) is printed apart from run time (median of `--repeats`), with
FLOP/s as a fraction of the `jnp.dot` peaks (bf16 x bf16 -> f32 and f32, 1024^3) measured in the same run.

With `--upstream-bagel` (a ByteDance-Seed/Bagel work tree) and `--upstream-python` (a python with torch and
upstream's requirements; never a dependency of this package, set-up in benchmarks/README.md), each of
`--rounds` rounds runs, per dtype, ours then upstream's (upstream_bagel.py in a subprocess: the same release,
workloads, repeats and statistic, torch at `--upstream-threads`), and the end prints the pooled table
(median over rounds of each round's median): upstream s, ours s, ratio = upstream / ours (>1: ours faster).
With `--profile DIR`, each of our workloads runs once more in the first round under the profiler (traces kept
in DIR) and its top XLA ops by time are printed (xla_profile.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import config as config_lib, model as model_lib, release as release_lib
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.sampling import context as ctx_lib, text as text_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
import upstream_workloads as W
import xla_profile
from common import REPO, matmul_peak_flops
from upstream_workloads import LATENTS, NEW_TOKENS, PROMPT



def llm_flops(cfg, tokens: int, context: int) -> float:
    """Forward FLOPs of `tokens` tokens through one expert path attending to `context` keys on average."""
    c = cfg.llm
    d, hq, hk, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
    per_layer = d * hq * hd + 2 * d * hk * hd + hq * hd * d + 3 * d * f
    return tokens * c.num_layers * (2 * per_layer + 4 * hq * hd * context)


def write_release(preset: str, out: str) -> str:
    """A random-weight release folder of a config preset, in the release layout that upstream reads too:
    bf16 ema.safetensors + configs (`sft.export_release`, no tokenizer files) and f32 ae.safetensors."""
    from alphagrpo_jax import sft
    from alphagrpo_jax.models.bagel import checkpoint, vae as vae_lib
    cfg = config_lib.preset(preset, param_dtype="float32", dtype="float32")
    with tempfile.TemporaryDirectory() as no_tokenizer:
        sft.export_release(model_lib.Bagel(cfg, nnx.Rngs(0)), cfg, no_tokenizer, out, "bfloat16")
    checkpoint.export_state(nnx.state(release_lib.make_autoencoder(cfg)), vae_lib.weight_map(cfg.vae),
                            os.path.join(out, "ae.safetensors"), dtype="float32")
    return out


def load(args, dtype: str):
    over = dict(param_dtype=dtype, dtype=dtype)
    if args.preset:
        cfg = config_lib.preset(args.preset, **over)
        return release_lib.Release(cfg, model_lib.Bagel(cfg, nnx.Rngs(0)), release_lib.make_autoencoder(cfg), None)
    return release_lib.load_release(args.release, mesh_lib.make_mesh({"fsdp": -1}), **over)


def workloads(rel, args):
    """name -> (zero-argument callable that runs once and blocks, FLOPs or None)."""
    model, cfg = layers.split_layers(rel.model), rel.cfg  # as Pipeline: one buffer per layer on CPU
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

        return text_lib.decode_loop(m, ctx, lambda c: jax.lax.fori_loop(  # as sampling/text.decode
            0, NEW_TOKENS, body, (c, jnp.zeros((b,), jnp.int32))))

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

    out = {W.PREFILL: (lambda: jax.block_until_ready(prefill(state, KVCache.zeros(cfg, 1, PROMPT), ids)),
                       llm_flops(cfg, PROMPT, PROMPT / 2))}
    for b in (1, 16):
        ctx0 = ctx_lib.Context(prompt_cache(b, NEW_TOKENS), jnp.full((b,), PROMPT, jnp.int32))
        out[W.decode_name(b)] = (lambda ctx0=ctx0: jax.block_until_ready(decode(state, ctx0)),
                                 llm_flops(cfg, b * NEW_TOKENS, PROMPT + NEW_TOKENS / 2))
    dim = cfg.patch_latent_dim
    for b in (1, 2):
        cache = prompt_cache(b, 0)
        x = jnp.asarray(rng.normal(size=(b, LATENTS, dim)), jnp.float32)
        t = jnp.full((b,), 0.5, jnp.float32)
        out[W.gen_name(b)] = (lambda cache=cache, x=x, t=t: jax.block_until_ready(gen_step(state, cache, x, t)),
                              llm_flops(cfg, b * (LATENTS + 2), PROMPT + LATENTS + 2))
    pipe = Pipeline(rel)
    side = W.t2i_side(args.size, cfg.max_latent_size, cfg.latent_downsample)
    prompt = [ctx_lib.Text(tuple(int(i) for i in rng.integers(5, vocab, W.T2I_PROMPT)))]

    def t2i():
        pipe.generate_from_items([prompt], [[]], [[]], think=False, height=side, width=side,
                                 num_timesteps=args.steps + 1, cfg_text=4.0)

    out[W.t2i_name(side, args.steps)] = (t2i, None)
    g = side // cfg.latent_downsample
    lat = jnp.asarray(rng.normal(size=(1, g * g, dim)), jnp.float32)
    out[W.vae_name(side)] = (lambda: pipe.decode_images(lat, side, side), None)
    return out


def run_ours(args, dtype: str, peaks: dict, rnd: int) -> list[dict]:
    """One round of our workloads in `dtype` (fresh load and compile, as upstream's fresh process): rows."""
    rows = []
    rel = load(args, dtype)
    for name, (fn, flops) in workloads(rel, args).items():
        compile_s, run_s = W.timed(fn, args.repeats)
        rate = flops / run_s if flops else None
        pct = f"{100 * rate / peaks[dtype]:6.1f}%" if rate else "      -"
        gf = f"{rate / 1e9:8.1f}" if rate else "       -"
        print(f"{name:36s} {dtype:9s} {compile_s:9.2f} {run_s:8.4f} {gf} {pct}", flush=True)
        row = dict(workload=name, dtype=dtype, compile_s=compile_s, run_s=run_s, flops=flops, round=rnd)
        if args.profile and rnd == 0:  # one more call under the profiler: its XLA ops by time
            folder = os.path.join(args.profile, dtype, re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
            row["top_ops"] = xla_profile.top_ops(fn, folder)
            print(f"    {xla_profile.format_ops(row['top_ops'])}", flush=True)
        rows.append(row)
    return rows


def run_upstream(args, dtype: str, rnd: int) -> list[dict]:
    """One round of upstream's workloads in `dtype`: upstream_bagel.py under --upstream-python."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "upstream.json")
        subprocess.run([args.upstream_python, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                           "upstream_bagel.py"),
                        "--bagel", args.upstream_bagel, "--release", args.release, "--dtype", dtype,
                        "--repeats", str(args.repeats), "--size", str(args.size), "--steps", str(args.steps),
                        "--threads", str(args.upstream_threads), "--json", out], check=True)
        with open(out) as f:
            return [dict(r, round=rnd) for r in json.load(f)["rows"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--release", default=os.path.join(REPO, "tests/goldens/bagel_tiny_a"))
    ap.add_argument("--preset", default=None, help="random weights from a config preset instead of --release")
    ap.add_argument("--write-release", default=None, help="with --preset: write its random weights here as a "
                    "release folder and load that (both sides)")
    ap.add_argument("--dtype", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--upstream-bagel", default=None, help="ByteDance-Seed/Bagel work tree (with --upstream-python)")
    ap.add_argument("--upstream-python", default=None, help="python of a torch environment for upstream_bagel.py")
    ap.add_argument("--upstream-threads", type=int, default=2, help="torch.set_num_threads on the upstream side")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 2 with upstream, else 1)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--profile", default=None, help="trace one more call of each of our workloads (first round) "
                    "into DIR/<dtype>/<workload> and print its top XLA ops (xla_profile.py)")
    args = ap.parse_args()
    upstream = bool(args.upstream_bagel and args.upstream_python)
    if bool(args.upstream_bagel) != bool(args.upstream_python):
        ap.error("--upstream-bagel and --upstream-python go together")
    if args.write_release:
        if not args.preset:
            ap.error("--write-release needs --preset")
        args.release, args.preset = write_release(args.preset, args.write_release), None
        print(f"wrote a random-weight {os.path.basename(args.release)} release to {args.release}")
    if upstream and args.preset:
        ap.error("upstream reads a release folder: add --write-release DIR to --preset")
    rounds = args.rounds or (2 if upstream else 1)

    def measure_peaks():
        return {"bfloat16": matmul_peak_flops(1024, jnp.bfloat16), "float32": matmul_peak_flops(1024, jnp.float32)}

    peaks = measure_peaks()  # measured again at the end; the larger of the two is the peak (noisy hosts)
    print(f"matmul peaks at the start (jnp.dot 1024^3, f32 accumulation): bf16 {peaks['bfloat16'] / 1e9:.0f} "
          f"GFLOP/s, f32 {peaks['float32'] / 1e9:.0f} GFLOP/s; {jax.devices()[0].device_kind}, {os.cpu_count()} cores")
    results = {"peaks": peaks, "model": args.preset or args.release, "rows": [], "upstream_rows": []}
    for rnd in range(rounds):
        if rounds > 1:
            print(f"round {rnd + 1}/{rounds}")
        print(f"{'workload':36s} {'dtype':9s} {'compile s':>9s} {'run s':>8s} {'GFLOP/s':>8s} {'% peak':>7s}")
        for dtype in args.dtype.split(","):
            results["rows"] += run_ours(args, dtype, peaks, rnd)
            if upstream:
                results["upstream_rows"] += run_upstream(args, dtype, rnd)
    end = measure_peaks()
    peaks = {k: max(v, end[k]) for k, v in peaks.items()}
    results["peaks"] = peaks
    print(f"matmul peaks at the end: bf16 {end['bfloat16'] / 1e9:.0f}, f32 {end['float32'] / 1e9:.0f} GFLOP/s; the "
          f"% peak column used the start's (a ratio above 100% means the start was measured under load)")
    if upstream:
        results["pooled"] = W.ratio_table(results["rows"], results["upstream_rows"])
        W.print_ratio_table(results["pooled"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
