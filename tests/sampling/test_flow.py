"""Flow schedule and SDE steps against AlphaGRPO's reference outputs (goldens case i)."""
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.sampling import flow


@pytest.fixture(scope="module")
def gi(goldens_dir):
    return np.load(goldens_dir / "i_sde_step.npz")


def test_schedule_matches_upstream(gi):
    np.testing.assert_allclose(flow.timesteps(16, 3.0), gi["timesteps"], atol=1e-7)


def test_sde_step_and_log_prob(gi):
    eta = float(gi["noise_level"])
    for i in range(len(gi["step_index"])):
        t, t_next, t_max = gi["sigma"][i], gi["sigma_prev"][i], gi["sigma_max"][i]
        x_next, lp, mean, std = flow.sde_step(gi["x"][i], gi["v"][i], t, t_next, t_max, eta, gi["noise"][i])
        np.testing.assert_allclose(std, gi["std_dev_t"][i], rtol=1e-6)
        np.testing.assert_allclose(mean, gi["mean"][i], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(x_next, gi["x_next"][i], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(lp, gi["log_prob"][i], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(flow.mean_log_prob(lp[None]), gi["log_prob_mean"][i:i + 1], rtol=1e-5)
        # Re-scoring the stored sample under another velocity (the training log-prob path).
        m2, s2 = flow.sde_mean(gi["x"][i], gi["v_recompute"][i], t, t_next, t_max, eta)
        lp2 = flow.sde_log_prob(gi["x_next"][i], m2, s2, t, t_next)
        np.testing.assert_allclose(m2, gi["mean_recompute"][i], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(lp2, gi["log_prob_recompute"][i], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(jnp.mean(lp2), gi["log_prob_recompute_mean"][i], rtol=1e-5)


def test_first_step_uses_second_grid_point(gi):
    # At t == 1 the variance would be infinite; the reference substitutes t_max = t_1.
    std = flow.sde_std(1.0, gi["timesteps"][1], 0.7)
    assert np.isfinite(std) and std == pytest.approx(0.7 * np.sqrt(1.0 / (1.0 - gi["timesteps"][1])), rel=1e-6)


def test_cps_step(gi):
    eta = float(gi["noise_level"])
    for i in range(len(gi["step_index"])):
        x_next, lp, mean, std = flow.cps_step(gi["x"][i], gi["v"][i], gi["sigma"][i], gi["sigma_prev"][i], eta,
                                              gi["noise"][i])
        np.testing.assert_allclose(std, gi["cps_std_dev_t"][i], rtol=1e-6)
        np.testing.assert_allclose(mean, gi["cps_mean"][i], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(x_next, gi["cps_x_next"][i], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(lp, gi["cps_log_prob"][i], atol=1e-5, rtol=1e-4)


def test_euler_bf16_velocity_delta_is_rounded():
    x = jnp.zeros((4,), jnp.float32)
    v = jnp.asarray([1.001, 2.003, 3.007, 0.1], jnp.bfloat16)
    out = flow.euler_step(x, v, jnp.float32(1.0), jnp.float32(0.9))
    expect = (v.astype(jnp.float32) * (jnp.float32(0.9) - jnp.float32(1.0))).astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expect))
