"""Advantages and losses against hand-computed cases, including each ratio paired with its own advantage."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.rl import advantages, losses


def test_grpo_global_std():
    r = np.array([[1.0, 0.0], [0.5, 0.5]])
    a = advantages.compute("grpo", r)
    std = r.std()  # global over the round: sqrt(mean((r - .5)^2)) = .35355
    np.testing.assert_allclose(a, [[0.5 / (std + 1e-4), -0.5 / (std + 1e-4)], [0.0, 0.0]], rtol=1e-6)


def test_grpo_group_std_and_rloo():
    r = np.array([[1.0, 0.0, 0.5], [0.2, 0.4, 0.6]])
    a = advantages.compute("grpo", r, std="group", eps=0.0)
    np.testing.assert_allclose(a[1], (r[1] - 0.4) / r[1].std(), rtol=1e-6, atol=1e-7)
    b = advantages.compute("rloo", r, std="none")
    np.testing.assert_allclose(b[0], [1.0 - 0.25, 0.0 - 0.75, 0.5 - 0.5], rtol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((3,)), np.zeros((2, 1)), np.array([[np.nan, 1.0]])])
def test_bad_rewards(bad):
    with pytest.raises(ValueError):
        advantages.compute("grpo", bad)


def test_flow_grpo_hand_case():
    logp = jnp.array([[0.0, 0.1], [0.2, -0.1]])
    old = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    adv = jnp.array([2.0, -1.0])
    loss, m = losses.flow_grpo(logp, old, adv, jnp.ones(2), clip_eps=0.05, adv_clip=5.0)
    r = np.exp(np.array([[0.0, 0.1], [0.2, -0.1]]))
    per = np.maximum(-np.array([[2.0], [-1.0]]) * r, -np.array([[2.0], [-1.0]]) * np.clip(r, 0.95, 1.05))
    np.testing.assert_allclose(loss, per.mean(axis=0).sum(), rtol=1e-6)
    assert 0 < float(m["image/clip_frac"]) <= 1


def test_flow_grpo_gradient_uses_own_advantage_and_clip():
    # Sample 0 has A=+1, sample 1 A=-1: each gradient has the sign of its own advantage, and a step whose ratio is
    # outside the clip range (in the direction of its advantage) gets no gradient.
    old = jnp.zeros((2, 1))
    g = jax.grad(lambda lp: losses.flow_grpo(lp, old, jnp.array([1.0, -1.0]), jnp.ones(2), clip_eps=0.1)[0])(
        jnp.zeros((2, 1)))
    np.testing.assert_allclose(g, [[-0.5], [0.5]], rtol=1e-6)
    g = jax.grad(lambda lp: losses.flow_grpo(lp, old, jnp.array([1.0, -1.0]), jnp.ones(2), clip_eps=0.1)[0])(
        jnp.array([[0.5], [-0.5]]))
    np.testing.assert_allclose(g, [[0.0], [0.0]], atol=1e-7)


def test_gspo_pairs_each_ratio_with_its_own_advantage():
    # Two sequences with different ratios and opposite advantages. The reference's broadcast ([B] x [B,1]) would
    # give each sequence the MEAN advantage (0 here) and a zero gradient; element-wise pairing does not.
    logp = jnp.array([[0.1, 0.1, 0.0], [-0.2, 0.0, 0.0]])
    old = jnp.zeros((2, 3))
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    adv = jnp.array([1.0, -1.0])
    loss, _ = losses.gspo(logp, old, adv, mask, jnp.ones(2))
    s = np.exp([0.1, -0.2 / 3])
    expect = np.mean([-min(s[0] * 1, np.clip(s[0], 0.8, 1.28) * 1), -min(s[1] * -1, np.clip(s[1], 0.8, 1.28) * -1)])
    np.testing.assert_allclose(loss, expect, rtol=1e-6)
    g = jax.grad(lambda lp: losses.gspo(lp, old, adv, mask, jnp.ones(2))[0])(logp)
    # d/dlogp of -s*A/2 for sequence 0 (2 tokens): -s0/2/2 per valid token; sequence 1: +s1/2/3.
    np.testing.assert_allclose(g[0, :2], -s[0] / 4, rtol=1e-5)
    np.testing.assert_allclose(g[1], s[1] / 6, rtol=1e-5)
    assert float(g[0, 2]) == 0.0
    broadcast = np.mean(np.exp([0.1, -0.2 / 3])[None, :] * np.array([[1.0], [-1.0]]), axis=0)
    assert np.allclose(broadcast.mean(), 0.0, atol=0.1)  # the buggy pairing would wash the signal out


def test_gspo_asymmetric_clip():
    old = jnp.zeros((1, 1))
    # Positive advantage, ratio above 1.28: clipped, no gradient; at 1.2 it is inside the upper range.
    for lr, zero in ((np.log(1.4), True), (np.log(1.2), False)):
        g = jax.grad(lambda lp: losses.gspo(lp, old, jnp.ones(1), jnp.ones((1, 1)), jnp.ones(1))[0])(
            jnp.full((1, 1), lr))
        assert (float(g[0, 0]) == 0.0) == zero


def test_kl_terms():
    mean = jnp.ones((2, 3, 4))
    kl, _ = losses.image_kl(mean, mean * 0.5, jnp.array([1.0, 2.0, 0.5]), jnp.ones(2))
    np.testing.assert_allclose(kl, 0.25 / 2 * (1 + 1 / 4 + 4), rtol=1e-6)
    logp, ref = jnp.array([[-1.0, -2.0]]), jnp.array([[-1.5, -2.0]])
    kl, _ = losses.text_k3_kl(logp, ref, jnp.ones((1, 2)), jnp.ones(1))
    d = -0.5
    np.testing.assert_allclose(kl, (np.exp(d) - d - 1) / 2, rtol=1e-6)
