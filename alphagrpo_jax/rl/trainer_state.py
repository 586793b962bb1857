"""What the GRPO programs (train, export, component_eval) share: the model, LoRA and learner built from a
config, the trainer's checkpoint of them and its round keys (the held-out eval is rl/tasks's).

    rel, rollout, learner, schedule = build(config, mesh)
    state, extras = restore_checkpoint(config, learner, step)   # {params, opt}, {step, data, ...}
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax import checkpointing, optim, paths
from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.rl import lora
from alphagrpo_jax.rl.config import loss_config, optim_config, rollout_config, think_system_setting
from alphagrpo_jax.rl.learner import Learner
from alphagrpo_jax.sampling.prompts import think_system_prompt


def round_key(seed: int, step: int, rnd: int) -> jax.Array:
    """The PRNG key of round `rnd` of step `step` (a resumed run draws exactly what an uninterrupted one would)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), rnd)


def build(config, mesh):
    """(release, RolloutConfig, Learner, lr schedule): the model (+ LoRA), autoencoder, tokenizer, learner."""
    m = config.model
    overrides = {k: m[k] for k in ("param_dtype", "dtype", "attention", "remat") if m.get(k)}
    overrides.update(think_system_setting(config))  # prompts.think_system wins over the release's
    rel = release.load_release(m.release, mesh, **overrides)
    model = rel.model
    if config.train.params == "lora":
        model = lora.add_lora(model, config.train.lora_rank, config.train.lora_alpha, tuple(config.train.lora_targets),
                              mesh, jax.random.key(config.seed), init=config.train.lora_init)
    rollout = rollout_config(config, think_system_prompt(rel.cfg))
    tx, schedule = optim.build_optimizer(optim_config(config))
    ref = None
    if config.train.params == "full" and (config.loss.image_kl_beta > 0 or config.loss.text_kl_beta > 0):
        ref = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    learner = Learner(model, lora.trainable_filter(config.train.params), tx, loss_config(config), rollout.image, ref)
    return rel, rollout, learner, schedule


def checkpoint_target(learner) -> dict:
    """The abstract {params, opt} state the trainer checkpoints, in the learner's shardings (a restore target)."""
    tree = {"params": learner.trainable, "opt": learner.opt_state}
    return checkpointing.abstract_with_shardings(tree, jax.tree.map(lambda x: x.sharding, tree))


def restore_checkpoint(config, learner, step: int | None = None) -> tuple[dict, dict]:
    """(state {params, opt}, extras) of checkpoint `step` (default: the latest) of `config.workdir`."""
    mgr = checkpointing.CheckpointManager(paths.join(config.workdir, "checkpoints"), keep=None)
    try:
        return mgr.restore(checkpoint_target(learner), step)
    finally:
        mgr.close()
