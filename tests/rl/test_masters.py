"""fp32 master weights: the learners of the 7B configs (bf16 model) hold every trainable leaf and every optimizer
moment in fp32 while the policy they hand out keeps the model's bf16; and small AdamW updates on a bf16 base move
the masters exactly as in an all-fp32 run (in bf16 they would be rounded away)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from alphagrpo_jax import train
from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.rl import lora
from alphagrpo_jax.rl.learner import Learner
from alphagrpo_jax.sampling import image as image_lib
from configs import bagel_7b_rt2i, bagel_7b_srr
from tests.models.bagel.parity_utils import GOLDENS
from tests.rl.test_learner import loss


def _float_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


@pytest.mark.parametrize("module,params", [(bagel_7b_rt2i, "lora"), (bagel_7b_srr, "lora"), (bagel_7b_rt2i, "full")])
def test_7b_config_learner_holds_fp32_masters(module, params):
    c = module.get_config()
    c.model.release = str(GOLDENS)
    c.train.params = params
    assert c.model.param_dtype == "bfloat16"
    mesh = mesh_lib.mesh_from_config(c)
    # The trainer's own build (the learner's constructor reads its state's shardings, so it is built for real:
    # the tiny release keeps that small).
    trainable, opt_state, policy = _state(c, mesh)
    assert trainable and all(x.dtype == jnp.float32 for x in jax.tree.leaves(trainable))
    moments = [x for x in _float_leaves(opt_state) if x.ndim > 0]
    assert len(moments) == 2 * len(jax.tree.leaves(trainable))  # AdamW's mu and nu per trainable leaf
    assert all(x.dtype == jnp.float32 for x in moments)
    # The policy (rollouts, and the learner's forward) keeps the model's bf16 weights.
    assert {x.dtype for x in jax.tree.leaves(policy)} == {jnp.dtype(jnp.bfloat16)}


def _state(config, mesh):
    _, _, learner, _ = train.build(config, mesh)
    policy = nnx.state(learner.model(), lora.trainable_filter(config.train.params))
    return learner.trainable, learner.opt_state, policy


def _learner(param_dtype, lr):
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    rel = release.load_release(str(GOLDENS), mesh, param_dtype=param_dtype, dtype=param_dtype)
    model = lora.add_lora(rel.model, 4, 8.0, rel.cfg.lora_targets, mesh, jax.random.key(0))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                                                 mu_dtype=jnp.float32))
    return Learner(model, nnx.LoRAParam, tx, loss(), image_lib.ImageSamplerConfig())


def test_small_updates_on_a_bf16_base_move_like_fp32():
    lr = 5e-5  # the 7B recipe's
    lo = _learner("bfloat16", lr)
    hi = _learner("float32", lr)
    hi.trainable = jax.tree.map(jnp.copy, lo.trainable)  # the same (bf16-rounded) initial masters
    hi.opt_state = hi.tx.init(hi.trainable)
    start = [np.asarray(x) for x in jax.tree.leaves(lo.trainable)]
    rng = np.random.default_rng(0)
    for step in range(20):
        g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), lo.trainable)
        lo.apply(g, 1.0)
        hi.apply(jax.tree.map(jnp.copy, g), 1.0)
        if step == 0:  # one step moves nonzero entries by ~lr: below half a bf16 ulp of most of them
            stuck = 0
            for a, s in zip(jax.tree.leaves(lo.trainable), start):
                moved = np.abs(np.asarray(a) - s)
                stuck += np.sum((moved > 0) & (moved < np.abs(s) * 2.0 ** -9))
            assert stuck > 0  # entries a bf16 update would have left unchanged moved in the masters
    for a, b, s in zip(jax.tree.leaves(lo.trainable), jax.tree.leaves(hi.trainable), start):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == np.float32 and np.abs(a - s).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)
    # The policy the learner hands out is bf16 and equals the masters rounded.
    a = nnx.to_pure_dict(lo.trainable)["language_model"]["layers"]["q_proj"]["lora_a"]
    q = lo.model().language_model.layers.q_proj.lora_a.get_value()
    assert q.dtype == jnp.bfloat16
    rounded = jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(q.astype(jnp.float32)), np.asarray(rounded))
