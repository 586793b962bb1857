"""The jitted GRPO learner: text (GSPO) + image (Flow-GRPO) losses on stored rollouts, gradient
accumulation over micro-rounds (each round's loss scaled by the trainer's normalisation, rl/accumulation.py),
and the optax update with donated state.

Mixed precision as the reference's DeepSpeed bf16: `trainable` (LoRA adapters, or every Param in full
fine-tuning) is held as fp32 master weights and the optimizer state is built from them; the policy is
`merge(graphdef, cast(trainable), frozen)` with the masters cast to the model's own param dtypes (bf16 in the
7B configs), so gradients flow through the cast back to fp32 and updates too small for a bf16 ulp still
accumulate. Only `trainable` is differentiated. Context caches are stop-gradient inputs: the image loss reaches
the params through the image queries only, the text loss through the teacher-forced think tokens.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from alphagrpo_jax.models import layers
from alphagrpo_jax.rl import lora, losses
from alphagrpo_jax.rl.rollout import Rollout
from alphagrpo_jax.sampling import flow
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling import text as text_lib


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The learner's losses (built from config.loss by rl/config.loss_config: the config holds the values)."""
    image_loss: str                    # rl/losses registry name ("flow_grpo")
    text_loss: str                     # ("gspo")
    image_clip_eps: float
    adv_clip: float
    text_clip: tuple[float, float]     # (low, high)
    text_loss_weight: float            # text weight = (#trained image steps) x this
    train_image: bool
    train_text: bool
    image_kl_beta: float
    text_kl_beta: float
    max_log_ratio: float
    text_temperature: float            # the rollout's sampling temperature: log-probs of log_softmax(logits/T)


def think_log_probs(model, r: Rollout, temperature: float) -> jax.Array:
    """Teacher-forced log-probs [B, T] of the sampled think ids given the (stop-gradient) prompt cache."""
    return text_lib.continuation_log_probs(model, r.ctx.cache, r.prompt_len, r.prompt_rope, r.think_ids, temperature)


def image_log_probs(model, r: Rollout, sampler_config: image_lib.ImageSamplerConfig):
    """Log-probs [B, W] and SDE means [B, W, N, 64] of the stored window transitions. Under a jax.checkpoint
    remat policy ("full", "save_dots*") the steps run one after another, each rematerialised as a whole in the
    backward pass; under "none" and "experts" the W steps are one forward of W x B rows (one forward less, and
    one program the size of a single step)."""
    branches = jax.tree.map(jax.lax.stop_gradient, r.branches)
    steps = r.window_start + jnp.arange(sampler_config.sde_window)
    if layers.REMAT_POLICIES[model.cfg.remat] is None:
        x, x_next = (jnp.take(r.trajectory, steps + d, axis=1).swapaxes(0, 1) for d in (0, 1))
        lps, means = image_lib.steps_log_prob(model, branches, x, x_next, steps, r.latent_pos, sampler_config)
        return lps.T, means.swapaxes(0, 1)

    @jax.checkpoint
    def one(_, i):
        x, x_next = jnp.take(r.trajectory, i, axis=1), jnp.take(r.trajectory, i + 1, axis=1)
        return None, image_lib.step_log_prob(model, branches, x, x_next, i, r.latent_pos, sampler_config)

    _, (lps, means) = jax.lax.scan(one, None, steps)
    return lps.T, means.swapaxes(0, 1)


def policy_loss(model, ref_model, r: Rollout, adv: jax.Array, loss_config: LossConfig,
                sampler_config: image_lib.ImageSamplerConfig, text_loss_weight):
    """(total loss, metrics). `ref_model` is used only when a KL beta is > 0. `text_loss_weight`: the round's
    text weight per trained image step (a scalar, traced; Learner.grads resolves the LossConfig default)."""
    valid = jnp.ones(adv.shape, jnp.float32)
    total, metrics = jnp.float32(0.0), {}
    w = sampler_config.sde_window
    if loss_config.train_image and w > 0:
        lps, means = image_log_probs(model, r, sampler_config)
        li, m = losses.get(loss_config.image_loss)(lps, r.image_logp, adv, valid,
                                                   clip_eps=loss_config.image_clip_eps, adv_clip=loss_config.adv_clip,
                                                   max_log_ratio=loss_config.max_log_ratio)
        total += li
        metrics.update(m, **{"loss/image": li, "image/logp_drift": jnp.max(jnp.abs(lps - r.image_logp))})
        if loss_config.image_kl_beta > 0:
            _, ref_means = image_log_probs(ref_model, r, sampler_config)
            ts = jnp.asarray(sampler_config.timesteps())
            idx = r.window_start + jnp.arange(w)
            std = flow.sde_std(ts[idx], ts[1], sampler_config.eta)
            kl, mk = losses.image_kl(means, jax.lax.stop_gradient(ref_means), std, valid)
            total += loss_config.image_kl_beta * kl
            metrics.update(mk)
    if loss_config.train_text:
        lp = think_log_probs(model, r, loss_config.text_temperature)
        mask = jnp.arange(r.think_ids.shape[1])[None] < r.think_len[:, None]
        lt, m = losses.get(loss_config.text_loss)(lp, r.think_logp, adv, mask, valid,
                                                  clip_low=loss_config.text_clip[0], clip_high=loss_config.text_clip[1],
                                                  max_log_ratio=loss_config.max_log_ratio)
        weight = max(w if loss_config.train_image else 1, 1) * text_loss_weight
        total += weight * lt
        drift = jnp.max(jnp.where(mask, jnp.abs(lp - r.think_logp), 0.0))
        metrics.update(m, **{"loss/text": lt, "text/logp_drift": drift})
        if loss_config.text_kl_beta > 0:
            ref_lp = jax.lax.stop_gradient(think_log_probs(ref_model, r, loss_config.text_temperature))
            kl, mk = losses.text_k3_kl(lp, ref_lp, mask, valid)
            total += loss_config.text_kl_beta * weight * kl
            metrics.update(mk)
    metrics["loss/total"] = total
    return total, metrics


def masters(tree):
    """fp32 copies of the floating leaves of `tree` (arrays, or ShapeDtypeStructs keeping their sharding)."""
    def f(x):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == jnp.float32:
            return x
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(x.shape, jnp.float32, sharding=x.sharding)
        return x.astype(jnp.float32)

    return jax.tree.map(f, tree)


def cast_to(tree, dtypes: tuple):
    """`tree`'s leaves cast to `dtypes` (one per leaf, in tree.leaves order); differentiable."""
    leaves, treedef = jax.tree.flatten(tree)
    return jax.tree.unflatten(treedef, [x if x.dtype == d else x.astype(d) for x, d in zip(leaves, dtypes)])


_cast_to_jit = jax.jit(cast_to, static_argnums=1)


class Learner:
    """Holds graphdef + (fp32 master trainable, frozen) state and the optimizer; `grads` per round, `apply` per
    step.

    The learner takes ownership of `model`'s trainable arrays (they are donated at every update): use
    `learner.model()` afterwards, not the model passed in. `compute_dtypes`: the model's dtype of each trainable
    leaf (the forward casts the masters to them).
    """

    def __init__(self, model, trainable_filter, tx: optax.GradientTransformation, loss_config: LossConfig,
                 sampler_config: image_lib.ImageSamplerConfig, ref_trainable=None):
        self.graphdef, trainable, self.frozen = nnx.split(model, trainable_filter, ...)
        self.compute_dtypes = tuple(x.dtype for x in jax.tree.leaves(trainable))
        self.trainable = masters(trainable)
        self._model = (None, None)
        self.tx, self.loss_config, self.sampler_config = tx, loss_config, sampler_config
        self.needs_ref = loss_config.image_kl_beta > 0 or loss_config.text_kl_beta > 0
        # The KL reference: the given trainable values (full fine-tuning: the initial params) or, for LoRA,
        # the adapters with lora_b = 0 (the base model).
        self.ref_trainable = ref_trainable
        shardings = jax.tree.map(lambda x: x.sharding, self.trainable)
        opt_out = optimizer_shardings(tx, self.trainable)
        self.opt_state = (jax.jit(tx.init, out_shardings=opt_out) if opt_out else jax.jit(tx.init))(self.trainable)
        opt_shardings = jax.tree.map(lambda x: x.sharding, self.opt_state)
        self._grad, self._apply = self.jit_steps(self.graphdef, tx, loss_config, self.needs_ref, shardings,
                                                 opt_shardings, self.compute_dtypes)

    @staticmethod
    def jit_steps(graphdef, tx, loss_config, needs_ref, shardings, opt_shardings, compute_dtypes):
        """The jitted (grad, apply) steps (also lowered ahead of time by tools/compile_rt2i.py). `shardings` /
        `opt_shardings`: of the fp32 masters and their optimizer state; `compute_dtypes`: Learner.compute_dtypes."""
        # Fixed output shardings: the state comes back exactly as it went in, so no step recompiles.
        leaves, treedef = jax.tree.flatten(shardings)
        grad = _jit_grad(graphdef, loss_config, needs_ref, tuple(compute_dtypes), treedef, tuple(leaves))
        apply = jax.jit(functools.partial(Learner._apply_fn, tx), donate_argnums=(0, 1),
                        out_shardings=(shardings, opt_shardings, None))
        return grad, apply

    def model(self):
        """The policy with the masters cast to the model's dtypes (cached until `trainable` changes)."""
        if self._model[0] is not self.trainable:
            cast = self.trainable
            if any(x.dtype != d for x, d in zip(jax.tree.leaves(cast), self.compute_dtypes)):
                cast = _cast_to_jit(cast, self.compute_dtypes)  # one program, not one per leaf
            self._model = (self.trainable, nnx.merge(self.graphdef, cast, self.frozen))
        return self._model[1]

    @staticmethod
    def _grad_fn(graphdef, loss_config, needs_ref, compute_dtypes, trainable, frozen, ref_trainable, r, adv,
                 text_loss_weight, scale, sampler_config):
        # text_loss_weight and scale are traced: rounds with other weights (a mixed RT2I + SRR run) or other
        # normalisation factors share one program.
        def loss(tr):
            tr = cast_to(tr, compute_dtypes)  # fp32 masters -> the model's dtypes; grads flow back in fp32
            model = nnx.merge(graphdef, tr, frozen)
            ref = None
            if needs_ref:
                ref_tr = ref_trainable if ref_trainable is not None else lora.keep_experts(tr)
                ref = nnx.merge(graphdef, jax.lax.stop_gradient(ref_tr), frozen)
            total, metrics = policy_loss(model, ref, r, adv, loss_config, sampler_config, text_loss_weight)
            return total * scale, metrics

        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(trainable)
        return grads, metrics

    def grads(self, rollout: Rollout, adv: jax.Array, sampler_config: image_lib.ImageSamplerConfig | None = None,
              text_loss_weight: float | None = None, scale: float = 1.0):
        """Gradients (fp32, like the masters) of `scale` x the round's loss, and the round's (unscaled) metrics.
        `sampler_config`: the image sampler config the rollout used (default: the learner's); `text_loss_weight`:
        this round's (default: the LossConfig's; a mixed RT2I + SRR run weighs each task's text as its own recipe
        does); `scale`: the round's weight in the update (rl/accumulation.py)."""
        w = self.loss_config.text_loss_weight if text_loss_weight is None else text_loss_weight
        return self._grad(self.trainable, self.frozen, self.ref_trainable, rollout, adv, np.float32(w),
                          np.float32(scale), sampler_config=sampler_config or self.sampler_config)

    @staticmethod
    def _apply_fn(tx, trainable, opt_state, grad_sum, divisor):
        grads = jax.tree.map(lambda g: g / divisor, grad_sum)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, optax.tree.norm(grads)

    def apply(self, grad_sum, divisor: float):
        """One optimizer step with the gradient `grad_sum / divisor` (traced: no program per divisor); returns
        that gradient's global norm (before clipping)."""
        self.trainable, self.opt_state, gnorm = self._apply(self.trainable, self.opt_state, grad_sum,
                                                            np.float32(divisor))
        return gnorm


@functools.lru_cache(maxsize=8)
def _jit_grad(graphdef, loss_config, needs_ref, compute_dtypes, shardings_treedef, shardings_leaves):
    """The jitted Learner._grad_fn, one per (model structure, losses, shardings): a learner rebuilt in the same
    process (a resumed or repeated run) reuses its traced and compiled programs."""
    return jax.jit(functools.partial(Learner._grad_fn, graphdef, loss_config, needs_ref, compute_dtypes),
                   out_shardings=(jax.tree.unflatten(shardings_treedef, shardings_leaves), None),
                   static_argnames=("sampler_config",))


def optimizer_shardings(tx: optax.GradientTransformation, trainable):
    """Shardings of `tx.init(trainable)`: param-shaped leaves (moments) like their params, the rest replicated.
    None when the params are not mesh-sharded. (A bare jit of tx.init replicates the moments over the mesh: its
    zeros do not depend on the params' data, so nothing propagates their sharding.)"""
    shardings = jax.tree.map(lambda x: x.sharding, trainable)
    named = [s for s in jax.tree.leaves(shardings) if isinstance(s, NamedSharding)]
    if not named:
        return None
    replicated = NamedSharding(named[0].mesh, PartitionSpec())
    return optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, trainable), shardings,
                                 transform_non_params=lambda _: replicated)


@jax.jit
def add_grads(a, b):
    return jax.tree.map(jnp.add, a, b)
