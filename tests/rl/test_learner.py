"""Rollout -> advantages -> learner on the tiny golden model with LoRA on the 8-device mesh: the learner's
teacher-forced log-probs reproduce the rollout's (on-policy ratio 1), gradients reach both experts' adapters, a
round's text weight scales only the text gradient (traced, one program for every weight), the update changes only the adapters, and repeated steps do
not recompile."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.rl import advantages, lora
from alphagrpo_jax.rl.config import loss_config
from alphagrpo_jax.rl.learner import Learner, LossConfig, add_grads
from alphagrpo_jax.rl.rollout import RolloutConfig, rollout_rt2i
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling import text as text_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from configs.grpo_base import rt2i_base
from tests.models.bagel.parity_utils import GOLDENS

RCFG = RolloutConfig(
    group_size=2, think=True, text=text_lib.TextSamplerConfig(max_new_tokens=5, temperature=1.0, top_p=0.9),
    image=image_lib.ImageSamplerConfig(num_timesteps=6, cfg=CFGConfig(4.0, 1.0, (0.4, 1.0)), sde_window=2),
    sde_window_range=(0, 5), height=32, width=32, cache_size=320, system_prompt="plan then draw")


def loss(**overrides) -> LossConfig:
    """The base config's LossConfig (configs/grpo_base.py) with `overrides`."""
    return dataclasses.replace(loss_config(rt2i_base()), **overrides)


@functools.lru_cache(maxsize=None)
def _setup():
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    rel = release.load_release(str(GOLDENS), mesh, param_dtype="float32", dtype="float32")
    model = lora.add_lora(rel.model, 4, 8.0, rel.cfg.lora_targets, mesh, jax.random.key(0))
    return mesh, rel, model


def _round(model, rel, key, ws=1):
    prompts = ["a red cube", "two blue balls", "a cat", "a dog"]
    return rollout_rt2i(model, rel.vae, rel.tokenizer, prompts, RCFG, key, ws)


def test_rollout_shapes_and_on_policy_ratio():
    mesh, rel, model = _setup()
    with rules_lib.use_rules(mesh):
        res = _round(model, rel, jax.random.key(1))
        r = res.rollout
        assert res.images.shape == (8, 32, 32, 3) and len(res.think_texts) == 8
        assert r.trajectory.shape == (8, 6, 4, 64) and r.image_logp.shape == (8, 2)
        # The stored contexts hold the live cache slots only (the learner attends over those).
        live = ctx_lib.live_size([r.ctx, r.text_uncond])
        assert r.ctx.cache.size == r.text_uncond.cache.size == live <= RCFG.cache_size
        assert live < RCFG.cache_size or int(jnp.max(r.ctx.cache.length)) > RCFG.cache_size // 2
        np.testing.assert_array_equal(res.prompt_index, [0, 0, 1, 1, 2, 2, 3, 3])
        learner = Learner(model, nnx.LoRAParam, optax.adamw(1e-3), loss(image_clip_eps=1e-3), RCFG.image)
        adv = jnp.asarray(advantages.compute("grpo", np.arange(8.0).reshape(4, 2)).reshape(-1))
        grads, m = learner.grads(r, adv)
    # Same params as the rollout: the recomputed log-probs equal the sampler's (fp32).
    assert float(m["image/logp_drift"]) < 1e-4 and float(m["text/logp_drift"]) < 1e-4
    assert abs(float(m["image/ratio_mean"]) - 1) < 1e-4 and abs(float(m["text/ratio_mean"]) - 1) < 1e-4
    g = nnx.to_pure_dict(grads)["language_model"]["layers"]
    # Gen expert (index 1) adapters get image gradients; und expert (index 0) adapters get text gradients.
    assert float(jnp.abs(g["q_proj"]["lora_b"][:, 1]).max()) > 0
    assert float(jnp.abs(g["q_proj"]["lora_b"][:, 0]).max()) > 0
    # A round's own text weight (SRR rounds in a mixed run): the text gradient scales with it, the image part
    # does not: g(w) = g_image + w * g_text.
    with rules_lib.use_rules(mesh):
        g0, g_half = (learner.grads(r, adv, text_loss_weight=w)[0] for w in (0.0, 0.5))
    assert learner._grad._cache_size() == 1  # the weight is traced: no program per weight
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(nnx.to_pure_dict(t))])  # noqa: E731
    g0, g_half, g1 = flat(g0), flat(g_half), flat(grads)
    assert np.abs(g1 - g0).max() > 1e-3 * np.abs(g1).max()
    np.testing.assert_allclose(g_half - g0, 0.5 * (g1 - g0), atol=1e-5 * np.abs(g1).max())


def test_update_changes_only_adapters_and_does_not_recompile():
    mesh, rel, model = _setup()
    model = jax.tree.map(jnp.copy, model)  # the learner donates its trainable arrays; keep the cached model intact
    with rules_lib.use_rules(mesh):
        learner = Learner(model, nnx.LoRAParam, optax.adamw(1e-2), loss(image_clip_eps=1e-3), RCFG.image)
        frozen_before = jax.tree.map(np.asarray, nnx.to_pure_dict(learner.frozen))
        sizes = []
        for step in range(2):
            acc = None
            for rnd in range(2):
                res = _round(learner.model(), rel, jax.random.key(10 * step + rnd), ws=rnd + 1)
                rewards = np.random.default_rng(step * 2 + rnd).random((4, 2))
                adv = jnp.asarray(advantages.compute("grpo", rewards).reshape(-1))
                grads, _ = learner.grads(res.rollout, adv)
                acc = grads if acc is None else add_grads(acc, grads)
            gnorm = learner.apply(acc, 2)
            assert float(gnorm) > 0
            sizes.append((learner._grad._cache_size(), learner._apply._cache_size(),
                          image_lib.sample._cache_size(), text_lib.decode._cache_size()))
        assert sizes[0] == sizes[1], sizes  # step 2 compiled nothing new
    after = nnx.to_pure_dict(learner.frozen)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b)), frozen_before, after)
    lb = nnx.to_pure_dict(learner.trainable)["language_model"]["layers"]["q_proj"]["lora_b"]
    assert float(jnp.abs(lb).max()) > 0  # adapters moved away from zero


def test_kl_reference_is_the_base_model():
    mesh, rel, model = _setup()
    with rules_lib.use_rules(mesh):
        res = _round(model, rel, jax.random.key(5))
        config = loss(image_clip_eps=1e-3, image_kl_beta=0.1, text_kl_beta=0.1)
        learner = Learner(model, nnx.LoRAParam, optax.adamw(1e-3), config, RCFG.image)
        _, m = learner.grads(res.rollout, jnp.zeros(8))
    # Adapters start at B = 0: the policy IS the reference, so both KL terms are 0.
    assert abs(float(m["image/kl"])) < 1e-9 and abs(float(m["text/kl"])) < 1e-9


@pytest.mark.parametrize("bad", [dict(image_clip_eps=-1)])
def test_loss_config_is_plain(bad):
    assert loss(**bad).image_clip_eps == -1  # validated by the config layer, not here
