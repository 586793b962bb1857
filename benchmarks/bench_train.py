"""GRPO train-step time by phase, and the FLOP/s of the image gradient, on this host.

    python benchmarks/bench_train.py [--config toy|small_100m|both] [--steps N] [--quick] [--compile-cache DIR]

Configs: `toy` = configs/toy_rt2i.py with the shipped toy release (assets/toy_base) and the in-process toy
verifier as reward; `small_100m` = the same trainer config shape on a random-init `config.small_100m` model
(bf16, LoRA r=32 as the 7B config, FLUX-kind autoencoder, the toy tokenizer) with a trivial reward (mean pixel
value) and small rollout sizes that fit a CPU. Both are built by `train.build` (model + LoRA + Learner), inside
the trainer's mesh and sharding rules.

1. Step time by phase, as the trainer runs a step of one round (rl/rounds.start_round -> rl/rollout.py):
   rollout_text (prefill + think decode) and rollout_image (CFG-branch prefills + SDE sampler + VAE decode)
   are the `metrics.phase` sub-phases the rollout records into an active `PhaseTimer`; rollout_host is the
   rest of the rollout call (tokenising, decoding think text); reward = waiting on the reward future;
   gradient = `Learner.grads` (the config's loss: image + text); update = `Learner.apply`. One step warms up
   (compiles), then `--steps` steps are timed; every step reuses the same prompt batch (so no shape bucket
   recompiles; a compile counter checks it), with the trainer's per-step PRNG keys and SDE-window draws.
   Printed: the median seconds per phase and its share of the median step (shares need not sum to 100%).
   Extra rows: the image-only and (not with --quick) text-only gradients (LossConfig train_text / train_image
   off, through a second Learner on the same params) of the last rollout, as a share of the full gradient.
   --quick: 2 timed steps and smaller rollouts (toy: 2 prompts x 4 instead of 4 x 8).

2. Image-gradient FLOP/s as a fraction of the matmul peak (`common.matmul_peak_flops`, 1024^3 jnp.dot in the
   model's compute dtype; the median of one measurement per gradient-timing round, interleaved with the
   gradients), over the median time of the image-only gradient of the last rollout. Its FLOPs:

       F_fwd = sum_{j in SDE window} k_j * B * [ (N + 2) * (llm_flops_per_token(cfg, S + N + 2) + lora)
                                                  + N * heads ]
       model FLOPs    = 3 * F_fwd                 (forward + backward, the MFU convention)
       executed FLOPs = (3 + m) * F_fwd           (remat "none": m = 0; "experts": m <= 1, the layers recompute
                                                   their per-token expert functions, so the figure is an upper
                                                   bound; the jax.checkpoint policies: m = 2, `image_log_probs`
                                                   rematerialises each window step and the layers recompute
                                                   their forward once more inside it)

   B = prompts x group; N latent tokens (+2: vision start/end, routed to the und expert); k_j = number of CFG
   branches (cond + text-uncond [+ img-uncond]) when step j's t is inside the CFG interval, else 1 (outside it
   only the conditional branch runs, `lax.cond`), except under remat "none" / "experts", where the window's
   steps run as one batched forward with every branch; S = the context cache size (the rollout cuts it to the
   live slots' bucket): the jnp attention scores the whole (masked) cache, so S is what is executed, not the
   valid prefix; llm_flops_per_token is
   bench_model's (2 x matmul params + QK^T and PV per layer); lora = sum over adapted projections of
   2 r (in + out); heads = vae2llm + llm2vae + the timestep MLP per latent token. With LoRA the frozen base
   weights get no weight gradient, so "3x" then slightly overstates the backward and the executed figure
   overstates it by about one forward of the base matmuls; both are printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import types
import warnings
from concurrent.futures import Future
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax import metrics as metrics_lib, plugins
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from bench_model import llm_flops_per_token
from common import REPO, matmul_peak_flops
from configs import grpo_base, toy_rt2i

PHASES = ("rollout_text", "rollout_image", "rollout_host", "reward", "gradient", "update")


_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.perf_counter() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


class CompileCounter:
    """Counts XLA backend compiles (and their seconds) via jax.monitoring."""

    def __init__(self):
        self.n, self.sec = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            self.n += 1
            self.sec += duration


class TrivialReward:
    """The reward service interface (submit -> Future) with reward = mean pixel value of each image."""

    def submit(self, images, prompts, records=None, texts=None) -> Future:
        f = Future()
        f.set_result(types.SimpleNamespace(rewards=np.asarray(images, np.float32).mean(axis=(1, 2, 3)) / 255.0))
        return f

    def close(self):
        pass


# ------------------------------------------------------------------------------------------------ setups

def toy_setup(args, workdir):
    from alphagrpo_jax.reward.service import build_reward_fn

    c = toy_rt2i.get_config()
    plugins.load(c)  # the toy world: toy_dvreward, the toy prompt source
    c.workdir = workdir
    c.model.release = os.path.join(REPO, "assets/toy_base")
    if args.quick:
        c.rollout.update(dict(prompts_per_round=2, group_size=4))
    return c, None, build_reward_fn(c.reward)


def small_setup(args, workdir):
    c = grpo_base.rt2i_base()
    c.workdir = workdir
    c.model.release = "<random-init small_100m>"
    c.model.param_dtype = c.model.dtype = "bfloat16"
    q = args.quick
    c.rollout.update(dict(prompts_per_round=2, group_size=2 if q else 4, rounds_per_step=1, cache_size=128,
                          height=64 if q else 128, width=64 if q else 128))
    c.rollout.text.update(dict(max_new_tokens=16 if q else 32, temperature=1.0, top_p=0.9))
    c.rollout.image.update(dict(num_timesteps=8 if q else 12, shift=3.0, sde_window=2 if q else 3,
                                sde_window_range=(0, 6)))
    c.loss.image_clip_eps = 1e-3
    c.plugins = ("alphagrpo_jax.toy.plugin",)  # prompts from the toy world
    c.data.prompt_source = "toy"
    c.toy = dict(train_per_category=4, eval_per_category=1)
    plugins.load(c)

    def load_release(path, mesh, rules=rules_lib.DEFAULT_RULES, **overrides):
        from flax import nnx

        from alphagrpo_jax.models.bagel import config as config_lib, model as model_lib, release
        from alphagrpo_jax.models.bagel.tokenizer import load_tokenizer

        def jit_init(make):  # one compiled init (rbg keys: threefry's compile is ~4x slower on CPU)
            graphdef, _ = nnx.split(nnx.eval_shape(make))
            return nnx.merge(graphdef, jax.jit(lambda: nnx.split(make())[1])())

        cfg = config_lib.small_100m(**overrides)
        # The toy BPE (ids < 512, same special ids); HF decode drops sampled ids beyond its vocabulary.
        tok = load_tokenizer(os.path.join(REPO, "assets/toy_base"), cfg.tokens)
        def rngs(seed):
            return nnx.Rngs(jax.random.key(seed, impl="unsafe_rbg"))

        return release.Release(cfg, jit_init(lambda: model_lib.Bagel(cfg, rngs(0))),
                               jit_init(lambda: release.make_autoencoder(cfg, rngs(1))), tok)

    return c, load_release, TrivialReward()


# ------------------------------------------------------------------------------------------------ FLOPs

def lora_flops_per_token(cfg) -> float:
    if not cfg.lora_rank:
        return 0.0
    c = cfg.llm
    d, q, kv, f = c.hidden_size, c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
    dims = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "gate_proj": (d, f),
            "up_proj": (d, f), "down_proj": (f, d)}
    return c.num_layers * sum(2 * cfg.lora_rank * sum(dims[t]) for t in cfg.lora_targets if t in dims)


def image_grad_flops(cfg, rollout, sampler_config) -> tuple[float, int, list[int]]:
    """(forward FLOPs of the window steps, the executed multiplier, CFG branches per window step)."""
    from alphagrpo_jax.models.bagel.embeddings import FREQUENCY_DIM

    b, n = rollout.latent_pos.shape
    s = rollout.ctx.cache.size
    d, lat = cfg.llm.hidden_size, cfg.patch_latent_dim
    per_query = llm_flops_per_token(cfg, s + n + 2) + lora_flops_per_token(cfg)
    heads = 2 * (2 * lat * d) + 2 * (FREQUENCY_DIM * d + d * d)
    ts = sampler_config.timesteps()
    lo, hi = sampler_config.cfg.interval
    n_branches = 1 + sampler_config.cfg.uses_text_branch + sampler_config.cfg.uses_img_branch
    ws = int(rollout.window_start)
    batched = cfg.remat in ("none", "experts")  # rl/learner.image_log_probs: one forward, every branch
    ks = [n_branches if batched or lo < ts[ws + j] <= hi else 1 for j in range(sampler_config.sde_window)]
    fwd = sum(k * b * ((n + 2) * per_query + n * heads) for k in ks)
    # "experts" recomputes the layers' per-token expert functions (not attention): at most one forward more.
    return fwd, {"none": 3, "experts": 4}.get(cfg.remat, 5), ks


# ------------------------------------------------------------------------------------------------ run

def run_config(name, args, compiles: CompileCounter):
    from alphagrpo_jax import train as train_lib
    from alphagrpo_jax.data.prompts import prompt_dataset
    from alphagrpo_jax.models.bagel import release
    from alphagrpo_jax.rl import advantages, lora
    from alphagrpo_jax.rl.learner import Learner
    from alphagrpo_jax.rl.tasks.rt2i import RT2I

    workdir = tempfile.mkdtemp(prefix=f"bench_train_{name}_")
    config, load_release, reward_fn = (toy_setup if name == "toy" else small_setup)(args, workdir)
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    with rules_lib.use_rules(mesh, rules):
        t0 = time.perf_counter()
        if load_release is None:
            rel, rollout_config, learner, _ = train_lib.build(config, mesh)
        else:  # build() exactly as the trainer, with the release folder replaced by a random-init model
            with mock.patch.object(release, "load_release", load_release):
                rel, rollout_config, learner, _ = train_lib.build(config, mesh)
        task = RT2I.from_config(config, rollout_config)
        t_build = time.perf_counter() - t0
        log(f"{name}: built in {t_build:.0f}s")
        cfg = learner.model().cfg
        n_params = sum(x.size for x in jax.tree.leaves(learner.frozen)) + sum(
            x.size for x in jax.tree.leaves(learner.trainable))
        n_train = sum(x.size for x in jax.tree.leaves(learner.trainable))
        train_path, _ = train_lib.prompt_files(config)
        records = next(iter(prompt_dataset(train_path, batch_size=config.rollout.prompts_per_round,
                                           seed=config.seed, shuffle=True)))
        rows, step_sec, compiles_timed = [], [], (compiles.n, compiles.sec)
        for step in range(1, args.steps + 2):  # step 1 warms up (compiles)
            if step == 2:
                compiles_timed = (compiles.n, compiles.sec)
                log(f"{name}: compiles so far: {compiles.n} ({compiles.sec:.0f}s)")
            timer = metrics_lib.PhaseTimer()
            ws = (rollout_config.draw_window_start(np.random.default_rng((config.seed, step, 0)))
                  if rollout_config.image.sde_window else 0)
            t_step = time.perf_counter()
            with timer.active():
                t0 = time.perf_counter()
                rd = task.start_round(learner.model(), rel, records, reward_fn,
                                      train_lib.round_key(config.seed, step, 0), ws)
                jax.block_until_ready(rd.result.rollout.trajectory)
                t_roll = time.perf_counter() - t0
            with timer("reward"):
                rewards = rd.rewards().rewards
            adv = jnp.asarray(advantages.compute(config.advantage.name, rewards, std=config.advantage.std,
                                                 eps=config.advantage.eps).reshape(-1))
            with timer("gradient"):
                grads, _ = learner.grads(rd.result.rollout, adv)
                jax.block_until_ready(grads)
            with timer("update"):
                jax.block_until_ready(learner.apply(grads, 1))
            step_sec.append(time.perf_counter() - t_step)
            log(f"{name}: step {step} {step_sec[-1]:.1f}s {'(warm-up)' if step == 1 else ''}")
            row = timer.pop(prefix="")
            row["rollout_host"] = t_roll - row.get("rollout_text", 0.0) - row.get("rollout_image", 0.0)
            rows.append(row)
        compiles_timed = (compiles.n - compiles_timed[0], compiles.sec - compiles_timed[1])
        warm_sec, rows, step_sec = step_sec[0], rows[1:], step_sec[1:]

        # Gradient split and image FLOP/s on the last rollout: learners sharing the current params (only their
        # `grads` run, so the donation in `apply` never touches them). After a first (compiling) call each, the
        # matmul peak and the gradients are timed in interleaved rounds, so host-load drift hits all alike.
        r, sampler_config = rd.result.rollout, rollout_config.image
        tf = lora.trainable_filter(config.train.params)
        learners = {"full": learner}
        for key, lc in (("image", dict(train_text=False)), ("text", dict(train_image=False))):
            if key == "text" and (args.quick or not learner.loss_config.train_text) or (
                    key == "image" and not learner.loss_config.train_image):
                continue
            learners[key] = Learner(learner.model(), tf, learner.tx, dataclasses.replace(learner.loss_config, **lc),
                                    sampler_config)
        first, times, peaks = {}, {k: [] for k in learners}, []
        for key, lr in learners.items():
            t0 = time.perf_counter()
            jax.block_until_ready(lr.grads(r, adv))
            first[key] = time.perf_counter() - t0
            log(f"{name}: {key} gradient compiled/ran in {first[key]:.0f}s")
        for _ in range(args.grad_repeats):
            peaks.append(matmul_peak_flops(1024, dtype=jnp.dtype(cfg.dtype), repeats=3))
            for key, lr in learners.items():
                t0 = time.perf_counter()
                jax.block_until_ready(lr.grads(r, adv))
                times[key].append(time.perf_counter() - t0)
        grad_sec = {k: float(np.median(v)) for k, v in times.items()}
        peak = float(np.median(peaks))
        flops = image_grad_flops(cfg, r, sampler_config) if "image" in learners else None

    reward_fn.close()
    b, n = r.latent_pos.shape
    print(f"\n=== {name}: {n_params / 1e6:.1f}M params ({n_train / 1e6:.2f}M trainable, {config.train.params}), "
          f"dtype={cfg.dtype}, B={b} ({config.rollout.prompts_per_round} prompts x {rollout_config.group_size}), "
          f"think<={rollout_config.text.max_new_tokens} tok, {rollout_config.height}x{rollout_config.width} px = "
          f"{n} latents, {rollout_config.image.num_steps} steps, SDE window {rollout_config.image.sde_window}, "
          f"cache {r.ctx.cache.size}")
    print(f"build {t_build:.1f}s, warm-up step (compiles{' or cache loads' if args.compile_cache else ''}) "
          f"{warm_sec:.1f}s; timed steps: {len(rows)}, "
          f"compiles during them: {compiles_timed[0]} ({compiles_timed[1]:.1f}s)")
    med_step = float(np.median(step_sec))
    print(f"{'phase':<24}{'median s':>10}{'% of step':>11}")
    for p in PHASES:
        sec = float(np.median([row.get(p, 0.0) for row in rows]))
        print(f"{p:<24}{sec:>10.3f}{sec / med_step:>10.1%}")
    print(f"{'step (wall)':<24}{med_step:>10.3f}{1:>10.1%}")
    print(f"{'gradient split':<24}{'median s':>10}{'% of full':>11}{'1st call s':>12}")
    for key, sec in grad_sec.items():
        label = "full (config loss)" if key == "full" else f"{key}-only"
        print(f"{'  ' + label:<24}{sec:>10.3f}{sec / grad_sec['full']:>10.1%}{first[key]:>12.1f}")
    print(f"matmul peak (1024^3 {cfg.dtype} jnp.dot; median of {len(peaks)}, one per gradient round: "
          f"{' / '.join(f'{p / 1e9:.1f}' for p in peaks)}): {peak / 1e9:.1f} GFLOP/s")
    if flops is not None:
        fwd, mult, ks = flops
        sec = grad_sec["image"]
        print(f"image-only gradient: window start {int(r.window_start)}, CFG branches per window step {ks}; "
              f"forward {fwd / 1e9:.2f} GFLOP")
        bound = "<=" if cfg.remat == "experts" else ""
        for label, f in (("model FLOPs (3x fwd)", 3 * fwd), (f"executed ({bound}{mult}x fwd)", mult * fwd)):
            print(f"  {label:<22}{f / 1e9:9.2f} GFLOP in {sec:.3f}s = {f / sec / 1e9:8.1f} GFLOP/s "
                  f"= {f / sec / peak:6.1%} of peak")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="both", choices=("toy", "small_100m", "both"))
    ap.add_argument("--steps", type=int, default=None, help="timed steps after the warm-up step (default 3; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="fewer steps, smaller rollouts, no text-only gradient")
    ap.add_argument("--compile-cache", default="", metavar="DIR",
                    help="JAX persistent compilation cache: a rerun loads the executables instead of compiling "
                         "(the warm-up figure then measures cache loads)")
    args = ap.parse_args()
    # Learner.apply donates the gradient sum too, which no output can reuse: XLA warns at each compile.
    warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if args.steps is None:
        args.steps = 2 if args.quick else 3
    args.grad_repeats = 3 if args.quick else 5
    print(f"backend={jax.default_backend()} devices={jax.device_count()} quick={args.quick}")
    compiles = CompileCounter()
    for name in (("toy", "small_100m") if args.config == "both" else (args.config,)):
        run_config(name, args, compiles)


if __name__ == "__main__":
    main()
