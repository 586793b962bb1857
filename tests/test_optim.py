"""optim.py: learning-rate schedules, clipping, fp32 moments, weight-decay mask, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alphagrpo_jax import optim


def test_warmup_then_constant_and_cosine():
    const = optim.learning_rate_schedule(dict(lr=1e-3, warmup_steps=10))
    np.testing.assert_allclose([float(const(s)) for s in (0, 5, 10, 1000)], [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    cos = optim.learning_rate_schedule(dict(lr=1e-3, warmup_steps=10, schedule="cosine", decay_steps=100,
                                            min_lr=1e-4))
    np.testing.assert_allclose([float(cos(s)) for s in (10, 60, 110, 500)], [1e-3, 5.5e-4, 1e-4, 1e-4],
                               rtol=1e-5)


def test_update_matches_hand_computed_adamw_step_with_clipping():
    tx, _ = optim.build_optimizer(dict(lr=0.1, warmup_steps=0, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0))
    params = {"w": jnp.ones((2, 2)), "b": jnp.zeros((2,))}
    grads = {"w": jnp.full((2, 2), 3.0), "b": jnp.full((2,), 4.0)}  # global norm sqrt(4*9 + 2*16) = sqrt(68)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    # first Adam step: m_hat = g_clipped, v_hat = g_clipped^2 -> update = -lr * sign(g) (up to eps)
    np.testing.assert_allclose(updates["w"], -0.1 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -0.1 * np.ones(2), rtol=1e-6)
    mu = [s for s in jax.tree.leaves(state) if getattr(s, "shape", None) == (2, 2)]
    np.testing.assert_allclose(mu[0], 0.1 * 3.0 / np.sqrt(68.0), rtol=1e-6)  # moments see the clipped gradient


def test_moments_are_fp32_and_weight_decay_skips_vectors():
    tx, _ = optim.build_optimizer(dict(lr=1.0, warmup_steps=0, weight_decay=0.5, clip_norm=0.0))
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    state = tx.init(params)
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state))
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, state, params)
    np.testing.assert_allclose(updates["w"], -0.5 * np.ones((2, 2)))  # decoupled decay: -lr * wd * w
    np.testing.assert_allclose(updates["b"], np.zeros(2))


def test_check_fp32_and_bad_configs():
    optim.check_fp32({"w": jnp.ones(2)})
    with pytest.raises(optim.OptimConfigError, match="fp32"):
        optim.check_fp32({"w": jnp.ones(2, jnp.bfloat16)})
    with pytest.raises(optim.OptimConfigError, match="unknown field"):
        optim.build_optimizer(dict(learning_rate=1e-3))
    with pytest.raises(optim.OptimConfigError, match="decay_steps"):
        optim.build_optimizer(dict(schedule="cosine"))
    with pytest.raises(optim.OptimConfigError, match="schedule"):
        optim.build_optimizer(dict(schedule="linear"))
    assert isinstance(optim.build_optimizer({})[0], optax.GradientTransformation)


def test_grpo_cosine_zero_decay_steps_spans_the_run():
    import ml_collections

    from alphagrpo_jax.rl.config import optim_config

    c = ml_collections.ConfigDict(dict(total_steps=40, optim=dict(lr=1e-3, warmup_steps=0, schedule="cosine",
                                                                  decay_steps=0)))
    sched = optim.learning_rate_schedule(optim_config(c))
    assert float(sched(0)) == pytest.approx(1e-3, rel=1e-5) and float(sched(20)) == pytest.approx(5e-4, rel=1e-3)
    assert float(sched(40)) == pytest.approx(0.0, abs=1e-6)
    c.optim.schedule = "constant"
    assert optim_config(c)["decay_steps"] == 0
