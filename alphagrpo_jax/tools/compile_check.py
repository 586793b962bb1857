"""Ahead-of-time compile BAGEL programs for a TPU topology from any host and print per-device memory.

    pip install -e ".[tpu]"   # libtpu provides the TPU compiler; no TPU is needed
    python -m alphagrpo_jax.tools.compile_check --model bagel_7b_mot --topology v5p:2x2x2 --mesh fsdp=4,tensor=2

Programs: `und_prefill` (a text block of --prefill-len tokens written into a --cache-len KV cache) and
`gen_step` (one denoising forward: [vision_start, --latent-tokens latents, vision_end] against the cache,
returning the velocity). Params are abstract (nothing is allocated); memory comes from the compiled
executables' `memory_analysis()`. Exits non-zero when a program does not fit the chip's HBM.

With `--config configs/x.py[:variant]` it compiles a training config's whole RT2I programs instead (rollout and
learner; see tools/compile_rt2i.py).
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from alphagrpo_jax.models.bagel import config, model as model_lib
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.tools import compile_rt2i
from alphagrpo_jax.tools.aot import HBM_GIB, ProgramMemory, memory_of, topology_devices

def parse_mesh(text: str) -> dict[str, int]:
    out = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise SystemExit(f"--mesh: expected name=size pairs like fsdp=4,tensor=2, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = int(v)
    return out


def compile_programs(cfg, mesh, batch: int, prefill_len: int, cache_len: int, latent_tokens: int,
                     programs: list[str]) -> list[ProgramMemory]:
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: model_lib.Bagel(cfg, nnx.Rngs(0))))
    shardings = rules_lib.state_shardings(abstract, mesh, rules_lib.DEFAULT_RULES)
    params = jax.tree.map(lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
                          nnx.to_pure_dict(abstract), nnx.to_pure_dict(shardings))
    # The batch is split over (data, fsdp) when it divides; a smaller batch is replicated.
    batch_axes = ("data", "fsdp") if batch % (mesh.shape["data"] * mesh.shape["fsdp"]) == 0 else None

    def sds(shape, dtype, spec):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))

    c = cfg.llm
    kv_shape = (c.num_layers, batch, cache_len, c.num_kv_heads, c.head_dim)
    kv_spec = P(None, batch_axes, None, "tensor", None)
    cache = KVCache(sds(kv_shape, cfg.dtype, kv_spec), sds(kv_shape, cfg.dtype, kv_spec),
                    sds((batch,), jnp.int32, P(batch_axes)))

    def bound(p):
        st = nnx.State(jax.tree.map(lambda x: x, abstract))
        nnx.replace_by_pure_dict(st, p)
        return nnx.merge(graphdef, st)

    def und_prefill(p, cache, ids, pos):
        m = bound(p)
        mask = CacheMask(cache.length, jnp.full((batch,), ids.shape[1], jnp.int32), True)
        h, cache, _ = m.language_model(m.embed_text(ids), pos, Routing.und(), mask, cache, write_cache=True)
        return m.logits(h[:, -1]), cache

    def gen_step(p, cache, x, t, lat_pos, rope):
        m = bound(p)
        q = m.image_block(m.embed_latents(x, t, lat_pos))
        n = q.shape[1]
        pos = jnp.broadcast_to(rope[:, None], (batch, n))
        mask = CacheMask(cache.length, jnp.full((batch,), n, jnp.int32), False)
        h, _, _ = m.language_model(q, pos, Routing.block(1, n - 1), mask, cache)
        return m.velocity(h[:, 1:-1])

    out = []
    with rules_lib.use_rules(mesh):
        if "und_prefill" in programs:
            ids = sds((batch, prefill_len), jnp.int32, P(batch_axes))
            f = jax.jit(und_prefill, donate_argnums=(1,))
            out.append(memory_of("und_prefill", f.lower(params, cache, ids, ids).compile()))
        if "gen_step" in programs:
            x = sds((batch, latent_tokens, cfg.patch_latent_dim), jnp.float32, P(batch_axes))
            t = sds((batch,), jnp.float32, P(batch_axes))
            lp = sds((batch, latent_tokens), jnp.int32, P(batch_axes))
            rope = sds((batch,), jnp.int32, P(batch_axes))
            f = jax.jit(gen_step)
            out.append(memory_of("gen_step", f.lower(params, cache, x, t, lp, rope).compile()))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--config" or a.startswith("--config=") for a in argv):  # whole training programs of a config
        return compile_rt2i.main(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bagel_7b_mot", help="model preset (see models/bagel/config.py PRESETS)")
    ap.add_argument("--topology", default="v5p:2x2x2", help="TPU topology, e.g. v5p:2x2x2, v5e:4x4, v6e:4x4")
    ap.add_argument("--mesh", default="fsdp=-1", help="mesh axis sizes, e.g. data=1,fsdp=4,tensor=2")
    ap.add_argument("--programs", default="und_prefill,gen_step")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prefill-len", type=int, default=1024)
    ap.add_argument("--cache-len", type=int, default=2048)
    ap.add_argument("--latent-tokens", type=int, default=1024, help="1024 = a 512x512 image")
    ap.add_argument("--hbm-gib", type=float, default=None, help="per-chip HBM (default: from the topology name)")
    ap.add_argument("--attention", default="jnp", help="attention implementation: jnp | splash")
    args = ap.parse_args(argv)

    devices = topology_devices(args.topology)
    mesh = mesh_lib.make_mesh(parse_mesh(args.mesh), devices=devices)
    cfg = config.preset(args.model, attention=args.attention)
    programs = [p for p in args.programs.split(",") if p]
    unknown = set(programs) - {"und_prefill", "gen_step"}
    if unknown:
        raise SystemExit(f"--programs: unknown {sorted(unknown)}; known: und_prefill, gen_step")
    chip = args.topology.split(":")[0]
    hbm = args.hbm_gib or HBM_GIB.get(chip)
    print(f"model={args.model} topology={args.topology} ({len(devices)} chips) mesh={mesh_lib.describe(mesh)} "
          f"batch={args.batch} prefill={args.prefill_len} cache={args.cache_len} latents={args.latent_tokens}")
    results = compile_programs(cfg, mesh, args.batch, args.prefill_len, args.cache_len, args.latent_tokens,
                               programs)
    print(f"{'program':<14}{'args GiB':>10}{'out GiB':>10}{'temp GiB':>10}{'total GiB':>11}   HBM {hbm} GiB")
    ok = True
    for r in results:
        fits = hbm is None or r.total_gib <= hbm
        ok &= fits
        print(f"{r.name:<14}{r.argument_gib:>10.2f}{r.output_gib:>10.2f}{r.temp_gib:>10.2f}{r.total_gib:>11.2f}"
              f"   {'fits' if fits else 'DOES NOT FIT'}")
    if not ok:
        print("error: at least one program does not fit in HBM; use a larger mesh or smaller batch/lengths",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
