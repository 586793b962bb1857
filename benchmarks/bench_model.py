"""Forward throughput of a ~100M-param BAGEL config on this host: und prefill and gen denoising.

Prints tokens/s and achieved FLOP/s as a fraction of the measured peak of a plain bf16 x bf16 -> f32 jnp.dot
of similar size in the same run.   python benchmarks/bench_model.py [--batch 4] [--latents 256]
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax.models.bagel import config, model as model_lib
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from common import matmul_peak_flops, time_fn


def llm_flops_per_token(cfg, context: int) -> float:
    """Forward FLOPs per token of one expert path: 2 x matmul params + attention (QK^T and PV)."""
    c = cfg.llm
    d, hq, hk, hd, f = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size
    per_layer = d * hq * hd + 2 * d * hk * hd + hq * hd * d + 3 * d * f
    attn = 2 * hq * hd * context  # scores + weighted sum, multiply-adds
    return c.num_layers * (2 * per_layer + 2 * attn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prefill", type=int, default=256)
    ap.add_argument("--latents", type=int, default=256)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    cfg = config.small_100m(param_dtype=args.dtype, dtype=args.dtype)
    graphdef, state = nnx.split(model_lib.Bagel(cfg, nnx.Rngs(0)))
    n_params = sum(x.size for x in jax.tree.leaves(nnx.to_pure_dict(state)))
    b, lp, nl = args.batch, args.prefill, args.latents
    cache = KVCache.zeros(cfg, b, lp + nl + 8)

    @jax.jit
    def prefill(state, cache, ids):
        m = nnx.merge(graphdef, state)
        mask = CacheMask(cache.length, jnp.full((b,), lp, jnp.int32), True)
        pos = jnp.broadcast_to(jnp.arange(lp), (b, lp))
        h, cache, _ = m.language_model(m.embed_text(ids), pos, Routing.und(), mask, cache, write_cache=True)
        return h, cache

    @jax.jit
    def denoise(state, cache, x):
        m = nnx.merge(graphdef, state)
        q = m.image_block(m.embed_latents(x, jnp.full((b,), 0.5), jnp.broadcast_to(jnp.arange(nl), (b, nl))))
        mask = CacheMask(cache.length, jnp.full((b,), nl + 2, jnp.int32), False)
        pos = jnp.full((b, nl + 2), lp, jnp.int32)
        h, _, _ = m.language_model(q, pos, Routing.block(1, nl + 1), mask, cache)
        return m.velocity(h[:, 1:-1])

    ids = jnp.ones((b, lp), jnp.int32)
    peak = matmul_peak_flops(1024)
    c_pre, t_pre = time_fn(prefill, state, cache, ids)
    _, cache = prefill(state, cache, ids)
    x = jnp.zeros((b, nl, cfg.patch_latent_dim), jnp.float32)
    c_gen, t_gen = time_fn(denoise, state, cache, x)
    f_pre = b * lp * llm_flops_per_token(cfg, lp // 2)
    f_gen = b * (nl + 2) * llm_flops_per_token(cfg, lp + nl + 2)
    print(f"backend={jax.default_backend()} devices={jax.device_count()} params={n_params / 1e6:.1f}M "
          f"dtype={args.dtype} batch={b}")
    print(f"baseline: bf16 1024^3 jnp.dot peak = {peak / 1e9:.1f} GFLOP/s")
    for name, comp, sec, flops, toks in (("und prefill", c_pre, t_pre, f_pre, b * lp),
                                         ("gen denoise", c_gen, t_gen, f_gen, b * (nl + 2))):
        print(f"{name:<12} compile {comp:6.2f}s  run {sec * 1e3:8.1f} ms  {toks / sec:9.0f} tok/s  "
              f"{flops / sec / 1e9:7.1f} GFLOP/s = {flops / sec / peak:5.1%} of peak")


if __name__ == "__main__":
    main()
