"""Ahead-of-time compile the RT2I GRPO programs of a training config for a TPU topology; per-device memory.

    python -m alphagrpo_jax.tools.compile_check --config configs/bagel_7b_rt2i.py:v5p-64
    python -m alphagrpo_jax.tools.compile_rt2i --config configs/toy_rt2i.py --topology v5p:2x2x2 \
        --config.mesh.fsdp=4 --config.mesh.tensor=2 --model tiny_a

The programs are the trainer's own jitted functions, lowered with the config's shapes (B = P prompts x G samples
per round, think tokens, cache, image size, SDE window) and abstract params (never allocated) sharded by the
rules:
  prefill     sampling.context._prefill: the P prompt contexts (--prompt-tokens each) into empty caches
  decode      sampling.text.decode: the think while_loop over the B rows
  image       sampling.image.sample: the SDE/ODE scan, CFG branches stacked on the batch
  vae_decode  rl.rollout.decode_images: B latents -> uint8 pixels
  grads       rl.learner.Learner.jit_steps: value_and_grad of the image (SDE window) + think-text GRPO loss
  apply       rl.learner.Learner.jit_steps: the optax update (params and optimizer state donated)

Memory per device is `compiled.memory_analysis()` (arguments, outputs, temporaries, donated aliases) plus
`resident`: arrays alive during the program that are not its arguments, from their shardings (the optimizer
state; the step's other rounds' rollouts, which the trainer keeps until their rewards arrive; the gradient
accumulator; the frozen params during `apply`). total = args + out + temp - alias + resident. Rollout arrays
(caches, trajectories) are taken as sharded by the activation rules (batch over data x fsdp, KV heads over
tensor). Exits 1, naming the programs, when one does not fit the chip's HBM.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax import cli, errors, optim, plugins
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel import config as cfg_lib, model as model_lib, packing, release
from alphagrpo_jax.models.bagel.llm import KVCache
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.rl import lora, rollout as rollout_lib
from alphagrpo_jax.rl.config import loss_config, optim_config, rollout_config
from alphagrpo_jax.rl.learner import Learner, masters, optimizer_shardings
from alphagrpo_jax.rl.rollout import Rollout
from alphagrpo_jax.sampling import context as ctx_lib, image as image_lib, text as text_lib
from alphagrpo_jax.sampling.context import Context
from alphagrpo_jax.sampling.prompts import think_system_prompt
from alphagrpo_jax.tools.aot import HBM_GIB, ProgramMemory, memory_of, topology_devices

PROGRAMS = ("prefill", "decode", "image", "vae_decode", "grads", "apply")
# Release folder names the AOT check may not have locally -> the model preset with the same numbers.
RELEASE_PRESETS = {"BAGEL-7B-MoT": "bagel_7b_mot"}


@dataclasses.dataclass
class Fit:
    memory: ProgramMemory
    resident_gib: float
    seconds: float

    @property
    def total_gib(self) -> float:
        return self.memory.total_gib + self.resident_gib


def model_config(config, model: str | None):
    """The BagelConfig the trainer would build: release numbers (or `model` preset) + the config's numerics/LoRA."""
    m, t = config.model, config.train
    over = {k: m[k] for k in ("param_dtype", "dtype", "attention", "remat") if m.get(k)}
    if t.params == "lora":
        over.update(lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_targets=tuple(t.lora_targets))
    elif t.params != "full":
        raise SystemExit(f"config.train.params must be 'lora' or 'full', got {t.params!r}")
    if model:
        return cfg_lib.preset(model, **over)
    if os.path.isdir(m.release):
        return cfg_lib.from_release_dir(m.release, **over)
    name = RELEASE_PRESETS.get(os.path.basename(m.release.rstrip("/")))
    if name is None:
        raise SystemExit(f"config.model.release={m.release!r} is not a folder here nor a known release "
                         f"{sorted(RELEASE_PRESETS)}; pass --model with a preset of {sorted(cfg_lib.PRESETS)}")
    return cfg_lib.preset(name, **over)


def device_gib(tree) -> float:
    """Bytes per device of a pytree of sharded ShapeDtypeStructs (the largest shard), in GiB."""
    total = 0
    for x in jax.tree.leaves(tree):
        shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
        total += math.prod(shape) * x.dtype.itemsize
    return total / 2 ** 30


def abstract_module(make, mesh, rules):
    """`make()`'s module with every Variable an abstract, rule-sharded ShapeDtypeStruct."""
    graphdef, state = nnx.split(nnx.eval_shape(make))
    shardings = dict(nnx.to_flat_state(rules_lib.state_shardings(state, mesh, rules)))
    for path, var in nnx.to_flat_state(state):
        sh = shardings[path].get_value() if hasattr(shardings[path], "get_value") else shardings[path]
        v = var.get_value()
        var.set_value(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh))
    return nnx.merge(graphdef, state)


class Shapes:
    """Abstract rollout-side arrays, sharded as `constrain` would shard activations of these logical names."""

    def __init__(self, cfg, mesh, rules):
        self.cfg, self.mesh, self.rules = cfg, mesh, rules

    def act(self, shape, dtype, names):
        shape = tuple(shape)
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rules_lib.activation_sharding(shape, names, self.mesh,
                                                                                        self.rules))

    def context(self, batch: int, size: int):
        c = self.cfg.llm
        kv = self.act((c.num_layers, batch, size, c.num_kv_heads, c.head_dim), jnp.dtype(self.cfg.dtype),
                      ("layers", "batch", "kv_length", "act_kv_heads", None))
        rows = self.act((batch,), jnp.int32, ("batch",))
        return Context(KVCache(kv, kv, rows), rows)

    def keys(self, batch: int | None):
        k = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch or 1))
        return self.act(k.shape, k.dtype, ("batch",)) if batch else self.act((), k.dtype, ())

    def packed(self, rows: int, tokens: int):
        """The packed block of `rows` text prompts of `tokens` tokens each (BAGEL's layout, real packer)."""
        block = packing.pack([[[packing.Text((0,) * (tokens - 2))]] for _ in range(rows)], self.cfg,
                             np.zeros(rows, np.int64))
        per_row = lambda x: ("batch",) + (None,) * (x.ndim - 1) if x.shape[:1] == (rows,) else (None,) * x.ndim  # noqa
        return jax.tree.map(lambda x: self.act(x.shape, x.dtype, per_row(x)), block.batch)


def rollout_shapes(s: Shapes, rcfg, b: int):
    """An abstract `Rollout` of b samples as `rl.rollout.rollout_from_items` stores it."""
    cfg, scfg = s.cfg, rcfg.image
    n = (rcfg.height // cfg.latent_downsample) * (rcfg.width // cfg.latent_downsample)
    t, w, d = rcfg.text.max_new_tokens, scfg.sde_window, cfg.patch_latent_dim
    ctx = s.context(b, rcfg.cache_size)
    rows = s.act((b,), jnp.int32, ("batch",))
    latents = ("batch", None, "length", "act_latent")
    return Rollout(
        ctx=ctx, text_uncond=ctx if scfg.cfg.uses_text_branch else None,
        img_uncond=ctx if scfg.cfg.uses_img_branch else None, prompt_len=rows, prompt_rope=rows,
        think_ids=s.act((b, t), jnp.int32, ("batch", "length")),
        think_logp=s.act((b, t), jnp.float32, ("batch", "length")), think_len=rows,
        think_truncated=s.act((b,), jnp.bool_, ("batch",)),
        trajectory=s.act((b, scfg.num_timesteps, n, d), jnp.float32, latents), window_start=s.act((), jnp.int32, ()),
        image_logp=s.act((b, w), jnp.float32, ("batch", None)), image_means=s.act((b, w, n, d), jnp.float32, latents),
        latent_pos=s.act((b, n), jnp.int32, ("batch", "length")))


def compile_rt2i(config, mesh, model: str | None = None, programs=PROGRAMS, prompt_tokens: int = 256,
                 log=print) -> dict[str, Fit]:
    """Lowers and compiles `programs` for `mesh` (any devices, e.g. a TPU topology's). Returns name -> Fit."""
    unknown = set(programs) - set(PROGRAMS)
    if unknown:
        raise SystemExit(f"--programs: unknown {sorted(unknown)}; known: {', '.join(PROGRAMS)}")
    cfg = model_config(config, model)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    rcfg = rollout_config(config, think_system_prompt(cfg))
    p, b, rounds = config.rollout.prompts_per_round, config.rollout.prompts_per_round * rcfg.group_size, \
        config.rollout.rounds_per_step
    s = Shapes(cfg, mesh, rules)
    out: dict[str, Fit] = {}
    policy = abstract_module(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), mesh, rules)
    vae = abstract_module(lambda: release.make_autoencoder(cfg), mesh, rules)
    graphdef, trainable, frozen = nnx.split(policy, lora.trainable_filter(config.train.params), ...)
    compute_dtypes = tuple(x.dtype for x in jax.tree.leaves(trainable))
    base_trainable, trainable = trainable, masters(trainable)  # the learner's fp32 masters (optimizer state too)
    tx, _ = optim.build_optimizer(optim_config(config))
    # Outside the mesh context: optax builds its placeholder state eagerly, which compile-only devices cannot run.
    opt_state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                             jax.eval_shape(tx.init, trainable), optimizer_shardings(tx, trainable))
    with rules_lib.use_rules(mesh, rules):
        rollout = rollout_shapes(s, rcfg, b)
        gh, gw = rcfg.height // cfg.latent_downsample, rcfg.width // cfg.latent_downsample
        latents = s.act((b, gh * gw, cfg.patch_latent_dim), jnp.float32, ("batch", "length", "act_latent"))
        lcfg = loss_config(config)
        needs_ref = lcfg.image_kl_beta > 0 or lcfg.text_kl_beta > 0
        grad_step, apply_step = Learner.jit_steps(graphdef, tx, lcfg, needs_ref,
                                                  jax.tree.map(lambda x: x.sharding, trainable),
                                                  jax.tree.map(lambda x: x.sharding, opt_state), compute_dtypes)
        ref = base_trainable if (config.train.params == "full" and needs_ref) else None
        gib = dict(opt=device_gib(opt_state), rollout=device_gib(rollout), params=device_gib(trainable),
                   frozen=device_gib(frozen))
        log(f"per device: trainable {gib['params']:.3f} GiB, frozen {gib['frozen']:.3f}, optimizer "
            f"{gib['opt']:.3f}, one round's rollout {gib['rollout']:.3f} (x{rounds} rounds per step)")
        earlier = gib["opt"] + (rounds - 1) * gib["rollout"]

        # name -> (lowering thunk, resident GiB)
        lowerings = {
            "prefill": (lambda: ctx_lib._prefill.lower(
                policy, s.context(p, rcfg.cache_size), s.packed(p, prompt_tokens),
                s.act((p,), jnp.int32, ("batch",)), False), earlier),
            "decode": (lambda: text_lib.decode.lower(policy, rollout.ctx, s.keys(b), cfg=rcfg.text), earlier),
            "image": (lambda: image_lib.sample.lower(policy, rollout.branches, latents, rollout.latent_pos,
                                                     s.keys(None), rollout.window_start,
                                                     sampler_config=rcfg.image), earlier),
            "vae_decode": (lambda: rollout_lib.decode_images.lower(vae, latents, gh, gw, cfg.latent_patch_size,
                                                                   cfg.vae.z_channels), earlier + gib["rollout"]),
            "grads": (lambda: grad_step.lower(trainable, frozen, ref, rollout, s.act((b,), jnp.float32, ("batch",)),
                                              jax.ShapeDtypeStruct((), jnp.float32),
                                              jax.ShapeDtypeStruct((), jnp.float32), sampler_config=rcfg.image),
                      earlier + gib["params"]),
            "apply": (lambda: apply_step.lower(trainable, opt_state, trainable, jax.ShapeDtypeStruct((), jnp.float32)),
                      gib["frozen"] + rounds * gib["rollout"]),
        }
        for name in programs:
            lower, resident = lowerings[name]
            t0 = time.time()
            compiled = lower().compile()
            out[name] = Fit(memory_of(name, compiled), resident, time.time() - t0)
            log(f"  compiled {name} in {out[name].seconds:.0f} s")
    return out


def report(fits: dict[str, Fit], hbm: float | None, log=print) -> list[str]:
    """Prints the table; returns the names of programs over `hbm` GiB."""
    log(f"{'program':<11}{'args':>8}{'out':>8}{'temp':>8}{'alias':>8}{'resident':>10}{'total':>8}  GiB/device"
        f" (HBM {hbm if hbm else '?'} GiB)")
    over = []
    for name, f in fits.items():
        m = f.memory
        fits_hbm = hbm is None or f.total_gib <= hbm
        over += [] if fits_hbm else [name]
        log(f"{name:<11}{m.argument_gib:>8.3f}{m.output_gib:>8.3f}{m.temp_gib:>8.3f}{m.alias_gib:>8.3f}"
            f"{f.resident_gib:>10.3f}{f.total_gib:>8.3f}  {'fits' if fits_hbm else 'DOES NOT FIT'}")
    return over


def main(argv=None) -> int:
    """The tool's own flags; config overrides use the one syntax of every program: --config.a.b=value."""
    argv = sys.argv[1:] if argv is None else argv
    overrides = [a for a in argv if a.startswith("--config.")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="config overrides: --config.a.b=value (repeatable), as for every program")
    ap.add_argument("--config", required=True, help="training config file[:variant], e.g. "
                    "configs/bagel_7b_rt2i.py:v5p-64 (a configs/meshes.py preset supplies topology and HBM)")
    ap.add_argument("--topology", help="TPU topology, e.g. v5p:4x4x2 (default: config.hardware.topology)")
    ap.add_argument("--slices", type=int, help="slices of the topology (default: config.hardware.slices or 1)")
    ap.add_argument("--hbm-gib", type=float, help="per-chip memory (default: config.hardware.hbm_gib, else the "
                    "topology's chip)")
    ap.add_argument("--model", help="model preset instead of config.model.release (models/bagel/config.py)")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--prompt-tokens", type=int, default=256, help="prefill length of a prompt (system + user)")
    args = ap.parse_args([a for a in argv if not a.startswith("--config.")])
    try:
        config = cli.load_config(args.config, overrides)
        plugins.load(config)
    except UsageError as e:  # one line, exit code 2
        return errors.report(e)
    hw = config.get("hardware", None) or {}
    topology = args.topology or hw.get("topology")
    if not topology:
        raise SystemExit("no topology: pass --topology (e.g. v5p:4x4x2) or use a configs/meshes.py preset "
                         "variant (--config configs/bagel_7b_rt2i.py:v5p-64)")
    slices = args.slices or hw.get("slices", 1)
    hbm = args.hbm_gib or hw.get("hbm_gib") or HBM_GIB.get(topology.split(":")[0])
    devices = topology_devices(topology, slices)
    mesh = mesh_lib.make_mesh(dict(config.mesh), dict(config.mesh_dcn) if slices > 1 else None, devices=devices)
    r = config.rollout
    print(f"config={args.config} topology={topology} x{slices} ({len(devices)} chips) mesh="
          f"{mesh_lib.describe(mesh)}{' (GPU proxy: ' + hw['name'] + ')' if hw.get('platform') == 'gpu' else ''}")
    print(f"round: {r.prompts_per_round} prompts x {r.group_size} = {r.prompts_per_round * r.group_size} samples, "
          f"{r.rounds_per_step} rounds/step; think <= {r.text.max_new_tokens} tokens, cache {r.cache_size}, "
          f"{r.height}x{r.width} px, {r.image.num_timesteps} timesteps, SDE window {r.image.sde_window}, "
          f"CFG text {r.cfg.text_scale} img {r.cfg.img_scale}, remat {config.model.remat}, attention "
          f"{config.model.attention}")
    fits = compile_rt2i(config, mesh, args.model, [p for p in args.programs.split(",") if p], args.prompt_tokens)
    over = report(fits, hbm)
    if over:
        print(f"error: {', '.join(over)} do(es) not fit in {hbm} GiB of HBM per chip on {topology}; use a larger "
              "mesh (more fsdp/tensor), fewer prompts per round, or a shorter cache/think budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
