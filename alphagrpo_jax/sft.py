"""Supervised fine-tuning of a BAGEL-shaped model, and the export of the base model.

    python -m alphagrpo_jax.sft --config configs/toy_sft.py --config.workdir=runs/toy_sft \\
        --config.export_dir=assets/toy_base

The data comes from the SFT data source `config.data_source` (data/sft_sources.py), registered by a plug-in of
`config.plugins`: the toy world's "toy" (toy/sft_source.py) for configs/toy_sft.py.

Objective (BAGEL, spec §9): next-token CE on text with loss + flow-matching MSE on noisy latents, each a
per-token mean over the whole (accumulated) batch; flow time t = shift(sigmoid(n)), n ~ N(0, 1), one draw per
noisy image; t and the noise come from fold_in(key(seed), step) inside the jitted step, so a resumed run
draws exactly what an uninterrupted one would. AdamW (optim.py) on fp32 master parameters; the state is
created sharded on the mesh and updated by one jitted step with donated state. Orbax checkpoints
(checkpointing.py) hold the state plus the data iterator's state; a restart resumes from the last complete
one and logs the same losses. Workdir: metrics.jsonl (+ TensorBoard), tokenizer/, checkpoints/,
eval/step_N.{json,png}. At the end the model is exported as a release folder (`release.load_release` reads
it), re-loaded from there and evaluated on held-out prompts: eval.json and eval.png (a sample grid: rows =
categories, columns = plain T2I then think samples) go next to it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image

from alphagrpo_jax import checkpointing, checks, cli, integrity, metrics, optim, paths, plugins
from alphagrpo_jax.data import sft_sources
from alphagrpo_jax.models.bagel import checkpoint as ckpt_io, config as config_lib, model as model_lib
from alphagrpo_jax.models.bagel import packed_forward as packed
from alphagrpo_jax.models.bagel import release as release_lib
from alphagrpo_jax.models.bagel.tokenizer import load_tokenizer
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.parallel.state import create_sharded
from alphagrpo_jax.sampling import generation_config
from alphagrpo_jax.sampling.prompts import think_system_prompt

log = logging.getLogger("alphagrpo_jax.sft")
BATCH_AXES = ("data", "fsdp")


def model_config(config) -> config_lib.BagelConfig:
    """The preset `config.model` with `config.model_llm` (LLMConfig fields) and `config.model_overrides`
    (BagelConfig fields) applied; parameters are fp32 master weights whatever the preset says, and
    `timestep_shift` (config.loss) and `think_system_prompt` (config.data.system_prompt) are the ones trained
    with, so the exported bagel_config.json records them."""
    cfg = config_lib.preset(config.model)
    if config.model_llm:
        cfg = cfg.replace(llm=dataclasses.replace(cfg.llm, **dict(config.model_llm)))
    return cfg.replace(**{**dict(config.model_overrides), "param_dtype": "float32",
                          "timestep_shift": float(config.loss.timestep_shift),
                          "think_system_prompt": data_config(config).system_prompt})


def data_source(config) -> sft_sources.SFTSource:
    """The config's SFT data source (its plug-ins imported first)."""
    plugins.load(config)
    return sft_sources.get(config.data_source)


def data_config(config):
    """The data source's settings from `config.data`."""
    return data_source(config).settings(config.data)


def build_tokenizer(config, workdir: str, cfg: config_lib.BagelConfig):
    """workdir/tokenizer (trained once, deterministically from the seed) and a cached encoder."""
    folder = os.path.join(workdir, "tokenizer")
    if jax.process_index() == 0 and not os.path.exists(os.path.join(folder, "vocab.json")):
        source = data_source(config)
        texts = source.corpus(config.seed, config.tokenizer.corpus_examples, data_config(config))
        source.build_tokenizer(folder, texts, cfg.llm.vocab_size)
    tok = load_tokenizer(folder, cfg.tokens)
    return folder, tok, functools.lru_cache(maxsize=1 << 16)(lambda s: tuple(tok.encode(s)))


# ------------------------------------------------------------------------------------------------ state

def init_params(pure: dict, ic, model: model_lib.Bagel, key) -> dict:
    """Training-start changes to the random init. `zero_residual`: the residual branches' output projections
    (o_proj, down_proj, both experts) start at 0, as in DiT's adaLN-Zero, so every layer starts as the identity.
    `identity_velocity`: vae2llm writes the latent (x `vae2llm_scale`) into directions orthogonal to every
    latent position and timestep embedding, and llm2vae reads it back, so the first velocity is v = x_t: the
    right answer at t = 1 up to the mean image. A tiny model trained for minutes otherwise leaves that gain
    ~10% short, and samples keep part of their initial noise. Without it llm2vae starts at 0 (BAGEL)."""
    zeros = lambda x: jnp.zeros_like(x)  # noqa: E731
    pure["llm2vae"] = jax.tree.map(zeros, pure["llm2vae"])
    if ic.zero_residual:
        for name in ("o_proj", "down_proj"):
            layer = pure["language_model"]["layers"][name]
            layer["kernel"] = zeros(layer["kernel"])
    if ic.identity_velocity:
        if not ic.zero_residual:
            raise ValueError("sft config: init.identity_velocity needs init.zero_residual")
        cfg = model.cfg
        pos = model.latent_pos_embed(jnp.arange(cfg.max_latent_size ** 2)).astype(jnp.float32)
        time = model.time_embedder(jnp.linspace(0.0, 1.0, 33)).astype(jnp.float32)
        _, sv, vt = jnp.linalg.svd(jnp.concatenate([pos, time]), full_matrices=True)
        free = vt[int(jnp.sum(sv > sv[0] * 1e-4)):]  # orthonormal complement of the context directions
        if free.shape[0] < cfg.patch_latent_dim:
            raise ValueError(f"sft init: only {free.shape[0]} free directions for {cfg.patch_latent_dim} latent dims")
        q = jnp.linalg.qr(jax.random.normal(key, (free.shape[0], cfg.patch_latent_dim)))[0].T @ free
        scale = float(ic.vae2llm_scale)
        h0 = pos[:, None] + time[None]  # what the final RMSNorm sees besides the (small) latent
        rms = jnp.sqrt(jnp.mean(h0 ** 2))
        pure["vae2llm"] = {"kernel": scale * q, "bias": zeros(pure["vae2llm"]["bias"])}
        pure["llm2vae"]["kernel"] = (rms / scale) * q.T
    return pure


class TrainSetup:
    """Model graph, frozen (non-Param) state, sharded train state {params, opt, step} and its shardings."""

    def __init__(self, config, cfg: config_lib.BagelConfig, mesh, rules):
        self.cfg, self.mesh, self.rules = cfg, mesh, rules
        graphdef, state, _ = create_sharded(lambda: model_lib.Bagel(cfg, nnx.Rngs(config.seed)), mesh, rules)
        self.graphdef, params, self.rest = nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)
        self.abstract_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        self.rest_shardings = rules_lib.state_shardings(self.rest, mesh, rules)
        param_sh = nnx.to_pure_dict(rules_lib.state_shardings(params, mesh, rules))
        pure = nnx.to_pure_dict(params)
        pure = init_params(pure, config.init, self.model(pure), jax.random.key(config.seed + 1))
        pure = jax.device_put(pure, param_sh)  # init_params computes some leaves outside the mesh layout
        optim.check_fp32(pure)
        self.tx, self.schedule = optim.build_optimizer(config.optim)
        repl = NamedSharding(mesh, PartitionSpec())
        opt_abs = jax.eval_shape(self.tx.init, pure)
        opt_sh = optax.tree_map_params(self.tx, lambda _, s: s, opt_abs, param_sh, transform_non_params=lambda _: repl)
        self.shardings = {"params": param_sh, "opt": opt_sh, "step": repl}
        opt = jax.jit(self.tx.init, out_shardings=opt_sh)(pure)
        self.state = {"params": pure, "opt": opt, "step": jax.device_put(jnp.int32(0), repl)}

    def model(self, pure_params, rest=None) -> model_lib.Bagel:
        """The module from pure-dict parameters and the frozen state (default: this setup's)."""
        st = jax.tree.map(lambda x: x, self.abstract_params)
        nnx.replace_by_pure_dict(st, pure_params)
        return nnx.merge(self.graphdef, st, self.rest if rest is None else rest)

    def abstract_state(self):
        return checkpointing.abstract_with_shardings(self.state, self.shardings)


def flow_inputs(key, batch: packed.PackedBatch, image_id, num_images: int, shift: float):
    """Flow time per noisy image (logit-normal, shifted; 0 on clean latents) and Gaussian noise per token."""
    k_t, k_noise = jax.random.split(key)
    t = jax.nn.sigmoid(jax.random.normal(k_t, (num_images,), jnp.float32))
    t = shift * t / (1.0 + (shift - 1.0) * t)
    timestep = jnp.where(batch.mse_mask, t[jnp.clip(image_id, 0)], 0.0)
    noise = jax.random.normal(k_noise, batch.latent_x0.shape, jnp.float32)
    return batch.replace(timestep=timestep, noise=noise)


def make_train_step(setup: TrainSetup, config, batch_sharding):
    """jit(state, rest, batch, image_id) -> (state, metrics); the state is donated, `rest` is the frozen
    (non-Param) model state. Gradient accumulation splits the rows into `grad_accum` micro-batches (every
    micro-batch sees all ViT images) and normalises by the whole batch's CE / MSE token counts."""
    lc, accum = config.loss, int(config.grad_accum)
    num_images = config.data.rows * jax.process_count() * config.data.max_vae_per_row
    base_key = jax.random.key(config.seed)
    per_row = {"kind", "text_ids", "positions", "segment_ids", "split_ids", "modes", "ce_labels", "vit_index",
               "latent_x0", "latent_pos", "timestep", "noise", "mse_mask"}

    def micro_loss(params, rest, batch, ce_total, mse_total):
        out = packed.forward_packed(setup.model(params, rest), batch)
        ce = jnp.sum(out["ce"]) / ce_total
        mse = jnp.sum(jnp.mean(out["mse"], axis=-1)) / mse_total
        return lc.ce_weight * ce + lc.mse_weight * mse, (ce, mse)

    def step_fn(state, rest, batch, image_id):
        key = jax.random.fold_in(base_key, state["step"])
        batch = flow_inputs(key, batch, image_id, num_images, lc.timestep_shift)
        ce_total = jnp.maximum(jnp.sum(batch.ce_labels >= 0), 1).astype(jnp.float32)
        mse_total = jnp.maximum(jnp.sum(batch.mse_mask), 1).astype(jnp.float32)
        split = lambda name, x: x.reshape((accum, -1) + x.shape[1:]) if name in per_row else x  # noqa: E731
        micro = batch.replace(**{n: split(n, getattr(batch, n)) for n in per_row})
        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def body(acc, a):
            mb = micro.replace(**{n: getattr(micro, n)[a] for n in per_row})
            (loss, (ce, mse)), g = grad_fn(state["params"], rest, mb, ce_total, mse_total)
            return jax.tree.map(jnp.add, acc, (g, loss, ce, mse)), None

        zero = (jax.tree.map(jnp.zeros_like, state["params"]), 0.0, 0.0, 0.0)
        (grads, loss, ce, mse), _ = jax.lax.scan(body, zero, jnp.arange(accum))
        updates, opt = setup.tx.update(grads, state["opt"], state["params"])
        new = {"params": optax.apply_updates(state["params"], updates), "opt": opt, "step": state["step"] + 1}
        m = dict(loss=loss, ce=ce, mse=mse, grad_norm=optax.tree.norm(grads), lr=setup.schedule(state["step"]))
        return new, m

    batch_sh = packed.PackedBatch(**{k: batch_sharding for k in packed.PackedBatch.__dataclass_fields__})
    return jax.jit(step_fn, in_shardings=(setup.shardings, setup.rest_shardings, batch_sh, batch_sharding),
                   out_shardings=(setup.shardings, None), donate_argnums=(0,))


def to_device(host: dict, sharding: NamedSharding, n_vit_local: int, n_img_local: int):
    """Host batch (this process's rows) -> global arrays sharded over the batch axes. Per-process image and
    ViT indices are offset so they index the global arrays."""
    b = dict(host["batch"])
    p = jax.process_index()
    b["vit_index"] = np.where(b["kind"] == packed.VIT, b["vit_index"] + p * n_vit_local * b["vit_pos"].shape[1], 0)
    image_id = np.where(host["image_id"] >= 0, host["image_id"] + p * n_img_local, -1)
    put = lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x))  # noqa: E731
    return packed.PackedBatch(**{k: put(v) for k, v in b.items()}), put(image_id)


# ------------------------------------------------------------------------------------------------ export

def export_release(model, cfg: config_lib.BagelConfig, tokenizer_dir: str, out: str, dtype: str,
                   generation: dict | None = None) -> str:
    """A release folder (local or gs://): ema.safetensors, llm_config.json, vit_config.json, bagel_config.json,
    tokenizer and (given `generation`) generation_config.json."""
    paths.makedirs(out)
    ckpt_io.export_state(nnx.state(model), model_lib.weight_map(cfg), paths.join(out, "ema.safetensors"), dtype)
    c, v = cfg.llm, cfg.vit
    llm = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=c.hidden_size,
               num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
               head_dim=c.head_dim, intermediate_size=c.intermediate_size, vocab_size=c.vocab_size,
               hidden_act="silu", rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta, rope_scaling=None,
               tie_word_embeddings=False, torch_dtype=dtype)
    vit = dict(model_type="siglip_vision_model", hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
               num_attention_heads=v.num_heads, num_hidden_layers=v.num_layers + 1,  # loaders drop the last one
               patch_size=v.patch_size, image_size=v.image_size, num_channels=v.num_channels,
               hidden_act="gelu_pytorch_tanh", layer_norm_eps=v.layer_norm_eps)
    t = cfg.tokens
    top = dict(latent_patch_size=cfg.latent_patch_size, max_latent_size=cfg.max_latent_size,
               vit_max_num_patch_per_side=cfg.vit_max_num_patch_per_side, connector_act="gelu_pytorch_tanh",
               timestep_shift=cfg.timestep_shift, inference_timestep_shift=cfg.inference_timestep_shift,
               think_system_prompt=think_system_prompt(cfg),
               new_token_ids=dict(bos_token_id=t.bos, eos_token_id=t.eos, start_of_image=t.start_of_image,
                                  end_of_image=t.end_of_image),
               vae_config={k: (list(x) if isinstance(x, tuple) else x) for k, x in vars(cfg.vae).items()})
    for name, d in (("llm_config.json", llm), ("vit_config.json", vit), ("bagel_config.json", top)):
        paths.write_text(paths.join(out, name), json.dumps(d, indent=1))
    for name in paths.listdir(tokenizer_dir):
        paths.copy(paths.join(tokenizer_dir, name), paths.join(out, name))
    if generation is not None:
        generation_config.write(out, generation)
    return out


# ------------------------------------------------------------------------------------------------ loop

def _write_eval(folder: str, name: str, result: dict, grid: np.ndarray) -> None:
    paths.write_text(paths.join(folder, f"{name}.json"), json.dumps(result, indent=1))
    paths.save_image(paths.join(folder, f"{name}.png"), Image.fromarray(grid))


def train(config, step_hook=None) -> dict:
    """Runs (or resumes) SFT, then exports and evaluates the release; returns a summary dict.
    `step_hook(step, metrics)` runs after every step (tests raise from it to simulate a crash)."""
    workdir = config.workdir
    source = data_source(config)
    cfg, dc = model_config(config), data_config(config)
    mesh, rules = mesh_lib.make_mesh(dict(config.mesh)), rules_lib.DEFAULT_RULES
    n_batch = mesh.shape["data"] * mesh.shape["fsdp"]
    if (dc.rows * jax.process_count()) % n_batch or config.data.rows % int(config.grad_accum):
        raise ValueError(f"sft config: data.rows x processes ({dc.rows} x {jax.process_count()}) must be a "
                         f"multiple of the mesh batch axes ({n_batch}), and data.rows of grad_accum")
    os.makedirs(workdir, exist_ok=True)  # after the checks: a config that fails them leaves no empty workdir
    log.info("sft: tokenizer")
    tok_dir, tok, encode = build_tokenizer(config, workdir, cfg)
    writer = metrics.MetricsWriter(workdir, tensorboard=config.tensorboard)
    summary: dict = {}
    with rules_lib.use_rules(mesh, rules):
        log.info("sft: initialising the model and optimizer on the mesh %s", dict(mesh.shape))
        setup = TrainSetup(config, cfg, mesh, rules)
        batch_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
        step_fn = make_train_step(setup, config, batch_sharding)
        log.info("sft: data source %r", config.data_source)
        it = iter(source.dataset(cfg, dc, encode, config.seed))
        ck = config.checkpoint
        ckpt = checkpointing.CheckpointManager(os.path.join(workdir, "checkpoints"), keep=ck.keep, every=ck.every,
                                               async_save=ck.async_save)
        ckpt.install_preemption_handler()
        try:
            state, start, seen = setup.state, 0, {"tokens": 0, "kinds": [0] * len(source.kinds)}
            if ckpt.latest_step() is not None:
                state, extras = ckpt.restore(setup.abstract_state())
                it.set_state(extras["data"])
                start, seen = int(extras["step"]), extras["seen"]
                log.info("resumed from step %d (%s)", start, ckpt.directory)
            writer.truncate(start)  # what a killed run logged after its last checkpoint is logged again
            log.info("sft: training; the first step compiles the train step")
            bar = metrics.progress(config.total_steps, "sft", initial=start, unit="step")
            t_last = time.perf_counter()
            for step in range(start + 1, config.total_steps + 1):
                host = next(it)
                batch, image_id = to_device(host, batch_sharding, dc.rows * dc.max_vit_per_row,
                                            dc.rows * dc.max_vae_per_row)
                state, m = step_fn(state, setup.rest, batch, image_id)
                seen["tokens"] += int(host["tokens"])
                seen["kinds"] = [a + int(b) for a, b in zip(seen["kinds"], host["kind_counts"])]
                if step % config.log_every == 0 or step == config.total_steps:
                    m = {k: float(v) for k, v in jax.device_get(m).items()}
                    now = time.perf_counter()
                    m.update({"tokens_seen": seen["tokens"], "sec_per_step": (now - t_last) / config.log_every,
                              **{f"examples/{k}": n for k, n in zip(source.kinds, seen["kinds"])}})
                    t_last = now
                    writer.write(step, m)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", ce=f"{m['ce']:.3f}", mse=f"{m['mse']:.3f}")
                if step_hook is not None:
                    step_hook(step, m)
                if ckpt.should_save(step) or step == config.total_steps:
                    ckpt.save(step, state, {"step": step, "data": it.get_state(), "seen": seen})
                if config.eval.every and step % config.eval.every == 0 and step < config.total_steps:
                    rel = release_lib.Release(cfg, setup.model(state["params"]), release_lib.make_autoencoder(cfg), tok)
                    result, grid = source.evaluate(rel, config.eval, config.seed)
                    writer.write(step, {f"eval/{k}": v for k, v in result.items() if not isinstance(v, list)})
                    _write_eval(os.path.join(workdir, "eval"), f"step_{step}", result, grid)
                bar.update(1)
                if ckpt.preempted(step):
                    log.warning("preempted: checkpoint saved at step %d, exiting", step)
                    return {"preempted_at": step}
            bar.close()
        finally:
            ckpt.close()
        summary.update(step=config.total_steps, tokens_seen=seen["tokens"],
                       examples=dict(zip(source.kinds, seen["kinds"])))
        out = config.export_dir or os.path.join(workdir, "release")
        if jax.process_index() == 0:
            export_release(setup.model(state["params"]), cfg, tok_dir, out, config.export.dtype,
                           source.generation(config.eval) if source.generation else None)
        if jax.process_count() > 1:  # every host re-loads the folder (a shared filesystem or gs:// is assumed)
            multihost_utils.sync_global_devices("sft_export")
        if config.eval.final:
            rel = release_lib.load_release(out, mesh, rules, param_dtype="float32", dtype="float32")
            result, grid = source.evaluate(rel, config.eval, config.seed)
            writer.write(config.total_steps, {f"eval/{k}": v for k, v in result.items() if not isinstance(v, list)})
            if jax.process_index() == 0:
                _write_eval(out, "eval", {**result, "train": summary}, grid)
            summary["eval"] = result
    writer.close()
    return summary


def main(config) -> None:
    data_source(config)  # a UsageError when the config names no registered source (exit code 2)
    checks.int_at_least(config.total_steps, 1, "config.total_steps")  # before any model is built (exit code 2)
    checks.int_at_least(config.grad_accum, 1, "config.grad_accum")
    checks.int_at_least(config.data.rows, 1, "config.data.rows")
    checks.creatable_folder(config.workdir, "config.workdir")  # created once the run starts
    try:
        out = train(config)
    except (integrity.NonFiniteError, checkpointing.CheckpointDamagedError) as e:
        raise SystemExit(f"error: {e}") from e  # one line, exit 1
    if "preempted_at" in out:  # not finished (no export yet): the scheduler should requeue it
        print(f"preempted at step {out['preempted_at']}; checkpoint saved; rerun the same command to resume")
        raise SystemExit(checkpointing.PREEMPTED_EXIT_CODE)


if __name__ == "__main__":
    cli.run(main)
