"""Sampling throughput on this host: text decoding (tokens/s) and image denoising (steps/s).

    python benchmarks/bench_sampling.py [--model small_100m|tiny_a|toy] [--quick]

Each figure is a ratio to a naive baseline measured in the same run: decoding vs re-running the whole
forward over the growing sequence for every token (no KV cache); denoising with CFG vs without. Compile times
are reported apart from run times, and repeated calls must not recompile (checked with the jit cache size).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models.bagel import config, model as model_lib
from alphagrpo_jax.models.bagel.attention import PackedMask
from alphagrpo_jax.models.bagel.llm import Routing
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling import text as text_lib
from alphagrpo_jax.sampling.cfg import CFGConfig


def timed(fn, repeats=3):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return first - float(np.median(runs)), float(np.median(runs))


def naive_decode(model, ids, steps):
    """Greedy decoding WITHOUT a cache: the whole sequence is re-run for each new token (the baseline)."""
    @jax.jit
    def fwd(m, seq):
        ones = jnp.ones(seq.shape, jnp.int32)
        h, _, _ = m.language_model(m.embed_text(seq), jnp.broadcast_to(jnp.arange(seq.shape[1]), seq.shape),
                                   Routing.und(), PackedMask(ones, ones * 0, ones * 0))
        return jnp.argmax(m.logits(h[:, -1]), axis=-1)

    seq = ids
    for _ in range(steps):
        seq = jnp.concatenate([seq, fwd(model, seq)[:, None].astype(jnp.int32)], axis=1)
    return seq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small_100m")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="batch sizes 1 and 4 only, fewer tokens")
    args = ap.parse_args()
    cfg = config.preset(args.model, param_dtype="bfloat16", dtype="bfloat16")
    model = model_lib.Bagel(cfg, nnx.Rngs(0))
    t = 16 if args.quick else args.tokens
    print(f"backend={jax.default_backend()} model={args.model} dtype=bf16")
    print(f"{'decode':<28}{'compile s':>10}{'run s':>9}{'tok/s':>10}{'vs naive':>10}")
    for b in ((1, 4) if args.quick else (1, 16)):
        prompts = [[(7 * i + j) % 200 + 20 for j in range(24)] for i in range(b)]
        text_config = text_lib.TextSamplerConfig(max_new_tokens=t, greedy=True)

        def run():
            ctx = ctx_lib.build(model, None, [[ctx_lib.Text(tuple(p))] for p in prompts], cache_size=64 + t)
            return text_lib.decode(model, ctx, jax.random.split(jax.random.key(0), b), text_config)[1].tokens

        comp, sec = timed(run)
        before = text_lib.decode._cache_size()
        run()
        assert text_lib.decode._cache_size() == before, "decode recompiled for identical shapes"
        ids = jnp.asarray([[1] + p for p in prompts], jnp.int32)
        _, naive = timed(lambda: naive_decode(model, ids, t), repeats=1)
        print(f"{'cached decode, batch ' + str(b):<28}{comp:>10.2f}{sec:>9.3f}{b * t / sec:>10.1f}"
              f"{naive / sec:>9.1f}x")
    print(f"{'denoise (one step = all branches)':<36}{'compile s':>10}{'steps/s':>10}{'vs no-CFG':>10}")
    gh = gw = min(cfg.max_latent_size, 16)
    n_steps = 9
    for b in ((1, 4) if args.quick else (1, 8)):
        ctx = ctx_lib.build(model, None, [[ctx_lib.Text((30, 31, 32, 33))]] * b, cache_size=32)
        unc = ctx_lib.build(model, None, [[]] * b, cache_size=32)
        pos = image_lib.grid_positions(gh, gw, cfg.max_latent_size, b)
        x = jax.random.normal(jax.random.key(0), (b, gh * gw, cfg.patch_latent_dim))
        rates = {}
        for name, guidance in (("no CFG", CFGConfig(1.0)), ("text CFG", CFGConfig(4.0, 1.0, (0.0, 1.0)))):
            sampler_config = image_lib.ImageSamplerConfig(num_timesteps=n_steps + 1, cfg=guidance)
            br = image_lib.Branches(ctx, unc)
            comp, sec = timed(lambda: image_lib.sample(model, br, x, pos, jax.random.key(1), jnp.int32(0),
                                                       sampler_config).latents)
            rates[name] = n_steps / sec
            print(f"{name + ', batch ' + str(b) + f' ({gh * gw} latents)':<36}{comp:>10.2f}{rates[name]:>10.2f}"
                  f"{rates[name] / rates['no CFG']:>9.2f}x")


if __name__ == "__main__":
    main()
