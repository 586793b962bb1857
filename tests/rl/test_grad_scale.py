"""The update's gradient normalisation against a numpy transcription of the reference's (accelerate + DeepSpeed:
one backward per trained image step and one for the think text of each of its rounds of `population` prompts,
each divided by the accumulation count), on one stored round of the tiny model; the population and the
reference's accumulation count are the same for every mesh preset of the 7B configs."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.rl import accumulation, advantages, losses
from alphagrpo_jax.rl import learner as learner_lib
from alphagrpo_jax.rl.learner import Learner
from configs import bagel_7b_rt2i, bagel_7b_srr, meshes
from tests.rl.test_learner import RCFG, _round, _setup, loss


LOSS = loss(image_clip_eps=1e-3)


def _config(population, normalization, prompts_per_round, rounds_per_step=1):
    return ml_collections.ConfigDict(dict(
        train=dict(skipped_rounds="redraw", max_extra_rounds=4), advantage=dict(population=population),
        loss=dict(grad_normalization=normalization),
        rollout=dict(prompts_per_round=prompts_per_round, rounds_per_step=rounds_per_step)))


def _policy(graphdef, compute_dtypes, tr, frozen):
    return nnx.merge(graphdef, learner_lib.cast_to(tr, compute_dtypes), frozen)


# Module-level, with the round and the divisor as arguments: both populations' runs share the programs.
@functools.partial(jax.jit, static_argnums=(0, 1))
@functools.partial(jax.grad, argnums=2)
def _image_step_loss(graphdef, compute_dtypes, tr, frozen, r, j, adv, valid, accum):
    lps, _ = learner_lib.image_log_probs(_policy(graphdef, compute_dtypes, tr, frozen), r, RCFG.image)
    lp_j, old_j = jax.lax.dynamic_slice_in_dim(lps, j, 1, 1), jax.lax.dynamic_slice_in_dim(r.image_logp, j, 1, 1)
    return losses.flow_grpo(lp_j, old_j, adv, valid, clip_eps=LOSS.image_clip_eps)[0] / accum


@functools.partial(jax.jit, static_argnums=(0, 1))
@functools.partial(jax.grad, argnums=2)
def _text_loss(graphdef, compute_dtypes, tr, frozen, r, adv, valid, accum):
    lp = learner_lib.think_log_probs(_policy(graphdef, compute_dtypes, tr, frozen), r, LOSS.text_temperature)
    mask = jnp.arange(r.think_ids.shape[1])[None] < r.think_len[:, None]
    w = RCFG.image.sde_window
    return losses.gspo(lp, r.think_logp, adv, mask, valid)[0] * w * LOSS.text_loss_weight / accum


def _reference_grad(learner, r, rewards, population, group):
    """numpy transcription of the reference: per reference round u (population prompts), advantages
    (r - group mean) / (std over u + 1e-4); backward(L_j(u) / accum) for each window step j and
    backward(W * text_loss_weight * L_text(u) / accum); accum = rounds x (W + 1); gradients add up."""
    w = RCFG.image.sde_window
    units = rewards.shape[0] // population
    accum = np.float32(units * (w + 1))
    model = (learner.graphdef, learner.compute_dtypes, learner.trainable, learner.frozen, r)
    total = None
    for u in range(units):
        rows = slice(u * population * group, (u + 1) * population * group)
        ru = rewards[u * population:(u + 1) * population]
        adv = np.zeros(rewards.size, np.float32)
        valid = np.zeros(rewards.size, np.float32)
        adv[rows] = ((ru - ru.mean(axis=1, keepdims=True)) / (ru.std() + 1e-4)).reshape(-1)
        valid[rows] = 1.0
        calls = [_image_step_loss(*model, j, adv, valid, accum) for j in range(w)]
        calls.append(_text_loss(*model, adv, valid, accum))
        for g in calls:
            g = [np.asarray(x, np.float64) for x in jax.tree.leaves(g)]
            total = g if total is None else [a + b for a, b in zip(total, g)]
    return total


@pytest.mark.parametrize("population", [4, 2])  # the stored round is one reference round / holds two
def test_reference_normalisation_matches_the_reference(population):
    mesh, rel, model = _setup()
    with rules_lib.use_rules(mesh):
        r = _round(model, rel, jax.random.key(3)).rollout
        model = jax.tree.map(jnp.copy, model)  # the learner donates its trainable arrays at apply
        learner = Learner(model, nnx.LoRAParam, optax.sgd(0.0), LOSS, RCFG.image)
        rewards = np.random.default_rng(population).random((4, RCFG.group_size))
        want = _reference_grad(learner, r, rewards, population, RCFG.group_size)

        calls = {"rt2i": accumulation.backward_calls(RCFG.image.sde_window, True, True)}
        plan = accumulation.from_config(_config(population, "reference", 4), ("rt2i",), calls)
        adv = advantages.compute("grpo", rewards, population=plan.population)
        acc, _ = learner.grads(r, jnp.asarray(adv.reshape(-1)), scale=plan.round_scale())
        got = [np.asarray(x, np.float64) / plan.divisor(1) for x in jax.tree.leaves(acc)]
        gnorm = float(learner.apply(acc, plan.divisor(1)))

        # Today's rule (round_mean) on the same round: the round's loss gradient, (W + 1) x units larger.
        mean_plan = accumulation.from_config(_config(0, "round_mean", 4), ("rt2i",), calls)
        assert mean_plan.round_scale() == 1.0 and mean_plan.divisor(1) == 1.0
    norm = lambda t: np.sqrt(sum(np.sum(x ** 2) for x in t))  # noqa: E731
    assert norm(want) > 0
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * norm(want))
    np.testing.assert_allclose(gnorm, norm(want), rtol=1e-5)


@pytest.mark.parametrize("module,calls_per_round", [(bagel_7b_rt2i, 11), (bagel_7b_srr, 6)])
def test_7b_accumulation_is_the_same_on_every_mesh_preset(module, calls_per_round):
    """32 prompts per update = 4 reference rounds of 8: divisor 4 x (W + 1) and population 8 on every preset."""
    for name in [None] + sorted(meshes.MESHES):
        c = module.get_config(name) if module is bagel_7b_rt2i else module.get_config()
        if name and module is bagel_7b_srr:
            meshes.apply(c, name)
        kinds = tuple(c.task.kinds) * c.rollout.rounds_per_step
        w = c.rollout.image.sde_window if kinds[0] == "rt2i" else c.task.srr.sde_window
        plan = accumulation.from_config(c, kinds, {kinds[0]: accumulation.backward_calls(w, True, True)})
        assert plan.population == 8 and plan.normalization == "reference" and plan.skipped == "redraw"
        assert plan.divisor(c.rollout.rounds_per_step) == 4 * calls_per_round, name
        assert plan.round_scale() * c.rollout.rounds_per_step == 4, name  # reference rounds per update
        blocks = plan.blocks()
        assert sorted(i for b in blocks for i in b) == list(range(c.rollout.rounds_per_step))
        assert all(len(b) * c.rollout.prompts_per_round >= 8 for b in blocks)


def test_populations_and_config_errors():
    rewards = np.random.default_rng(0).random((4, 3))
    adv = advantages.compute("grpo", rewards, population=2)
    np.testing.assert_allclose(adv[:2], advantages.compute("grpo", rewards[:2]), rtol=1e-6)
    np.testing.assert_allclose(adv[2:], advantages.compute("grpo", rewards[2:]), rtol=1e-6)
    with pytest.raises(ValueError, match="populations of 3"):
        advantages.compute("grpo", rewards, population=3)
    # 4-prompt rounds pair up into populations of 8 (blocks of 2 rounds of one task).
    plan = accumulation.from_config(_config(8, "reference", 4, 4), ("rt2i", "srr") * 2, {"rt2i": 3, "srr": 2})
    assert plan.blocks() == [[0, 2], [1, 3]] and plan.divisor(4) == (2 * 3 + 2 * 2) * 4 / 8  # 2 reference rounds
    with pytest.raises(ValueError, match="advantage.population = 8: a step's rt2i rounds hold 1 x 4 prompts"):
        accumulation.from_config(_config(8, "reference", 4, 1), ("rt2i",), {"rt2i": 3})
    with pytest.raises(ValueError, match="must divide rollout.prompts_per_round = 4"):
        accumulation.from_config(_config(3, "reference", 4), ("rt2i",), {"rt2i": 3})
    with pytest.raises(ValueError, match="loss.grad_normalization must be one of"):
        accumulation.from_config(_config(4, "sum", 4), ("rt2i",), {"rt2i": 3})
