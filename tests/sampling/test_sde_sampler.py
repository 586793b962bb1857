"""The SDE-window sampler: ODE outside the window, re-scoring stored trajectories with the training path gives
the sampler's own log-probs, and the window's transitions have the Gaussian statistics they claim."""
import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from tests.models.bagel.parity_utils import load_model

CFG = CFGConfig(4.0, 1.0, (0.4, 1.0), "global")


def _setup(batch=2):
    cfg, m = load_model("fp32")
    cond = ctx_lib.build(m, None, [[ctx_lib.Text((40 + i, 50, 60 + i))] for i in range(batch)], cache_size=32)
    unc = ctx_lib.build(m, None, [[] for _ in range(batch)], cache_size=32)
    pos = image_lib.grid_positions(2, 2, cfg.max_latent_size, batch)
    x0 = jax.random.normal(jax.random.key(7), (batch, 4, cfg.patch_latent_dim))
    return m, image_lib.Branches(cond, unc), pos, x0


def test_window_zero_is_the_ode_and_outside_window_steps_are_ode():
    m, br, pos, x0 = _setup()
    ode = image_lib.sample(m, br, x0, pos, jax.random.key(0), jnp.int32(0),
                           image_lib.ImageSamplerConfig(num_timesteps=9, cfg=CFG))
    assert ode.log_probs.shape == (2, 0)
    sde = image_lib.sample(m, br, x0, pos, jax.random.key(0), jnp.int32(3),
                           image_lib.ImageSamplerConfig(num_timesteps=9, cfg=CFG, sde_window=2, eta=0.7))
    # Grid points 0..3 come before the first SDE step (step 3 produces point 4).
    np.testing.assert_allclose(sde.trajectory[:, :4], ode.trajectory[:, :4], atol=1e-6)
    assert np.abs(np.asarray(sde.trajectory[:, 4] - ode.trajectory[:, 4])).max() > 1e-2
    assert int(sde.window_start) == 3 and sde.log_probs.shape == (2, 2) and sde.means.shape == (2, 2, 4, 64)


def test_rescored_log_probs_equal_sampler_log_probs():
    m, br, pos, x0 = _setup()
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=9, cfg=CFG, sde_window=3, eta=0.7)
    out = image_lib.sample(m, br, x0, pos, jax.random.key(1), jnp.int32(1), sampler_config)
    lps, means = image_lib.window_log_probs(m, br, out.trajectory, out.window_start, pos, sampler_config)
    np.testing.assert_allclose(lps, out.log_probs, atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(means, out.means, atol=1e-5)
    # With the exact sample the per-element log-prob is -z^2/2 for z ~ N(0, 1): the mean is about -0.5.
    assert np.all(np.abs(np.asarray(out.log_probs) + 0.5) < 0.25)


def test_window_start_is_traced_no_recompile():
    m, br, pos, x0 = _setup()
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=9, cfg=CFG, sde_window=2)
    image_lib.sample(m, br, x0, pos, jax.random.key(0), jnp.int32(0), sampler_config)
    before = image_lib.sample._cache_size()
    for ws in (1, 2, 5):
        image_lib.sample(m, br, x0, pos, jax.random.key(ws), jnp.int32(ws), sampler_config)
    assert image_lib.sample._cache_size() == before


def test_steps_at_once_equal_step_by_step():
    """`steps_log_prob` (the W window steps as one forward of W x B rows, the learner's path without a
    checkpoint remat policy) gives each step's `step_log_prob`, also for steps outside the CFG interval (the
    shifted grid of 9 points has t <= 0.4 from step 7 on) and with the image-CFG branch."""
    m, br, pos, x0 = _setup()
    unc_img = ctx_lib.build(m, None, [[ctx_lib.Text((41 + i,))] for i in range(2)], cache_size=32)
    for cfg, branches in ((CFG, br), (CFGConfig(4.0, 1.5, (0.4, 1.0), "text_channel"),
                                      image_lib.Branches(br.cond, br.text_uncond, unc_img))):
        sampler_config = image_lib.ImageSamplerConfig(num_timesteps=9, cfg=cfg, sde_window=4, eta=0.7)
        assert [bool(cfg.active(t)) for t in sampler_config.timesteps()[4:8]] == [True, True, True, False]
        out = image_lib.sample(m, branches, x0, pos, jax.random.key(2), jnp.int32(4), sampler_config)
        steps = jnp.arange(4, 8)
        x, x_next = (jnp.take(out.trajectory, steps + d, axis=1).swapaxes(0, 1) for d in (0, 1))
        lps, means = jax.jit(image_lib.steps_log_prob, static_argnames="sampler_config")(
            m, branches, x, x_next, steps, pos, sampler_config=sampler_config)
        one = jax.jit(image_lib.step_log_prob, static_argnames="sampler_config")
        for j in range(4):
            lp, mean = one(m, branches, x[j], x_next[j], steps[j], pos, sampler_config=sampler_config)
            np.testing.assert_allclose(lps[j], lp, atol=1e-5, rtol=1e-6)
            np.testing.assert_allclose(means[j], mean, atol=1e-5)
        np.testing.assert_allclose(lps.T, out.log_probs, atol=1e-5, rtol=1e-6)
