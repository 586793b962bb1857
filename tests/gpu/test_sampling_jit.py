"""Jitted image sampling on a GPU, in bf16: the T2I golden (text CFG with global renorm) end to end, and the
RL form (an SDE window whose log-probs the training path re-scores to the same values)."""
import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from tests.gpu.gpu_utils import load_model, on_gpu, require_gpu
from tests.models.bagel.parity_utils import bf16_tol, golden

require_gpu()

CFG = CFGConfig(4.0, 1.0, (0.4, 1.0), "global")
RESCORE_ATOL = 2e-2  # bf16: per-element log-probs are ~ -z^2/2 (mean about -0.5); x and means are O(1)


def _inputs(m, cfg):
    d = golden("d1_t2i.npz")
    cond = ctx_lib.build(m, None, [[ctx_lib.Text(tuple(int(i) for i in d["prompt_ids"][1:-1]))]], cache_size=64)
    branches = image_lib.Branches(cond, ctx_lib.build(m, None, [[]], cache_size=64))
    h, w = (int(x) for x in d["image_hw"])
    pos = image_lib.grid_positions(h // 16, w // 16, cfg.max_latent_size, 1)
    return d, branches, pos, jnp.asarray(d["init_noise"])[None]


def test_t2i_golden():
    cfg, m = load_model("bf16")
    d, branches, pos, x0 = _inputs(m, cfg)
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=8, shift=3.0, cfg=CFG)
    out = image_lib.sample(m, branches, x0, pos, jax.random.key(0), jnp.int32(0), sampler_config)
    assert on_gpu(out.latents) and on_gpu(branches.cond.cache.k)
    np.testing.assert_allclose(np.asarray(out.latents[0]), d["final_latent_bf16asis"],
                               atol=bf16_tol("d1.final_latent"), rtol=0)


def test_sde_window_rescored_by_the_training_path():
    cfg, m = load_model("bf16")
    _, branches, pos, x0 = _inputs(m, cfg)
    ode = image_lib.sample(m, branches, x0, pos, jax.random.key(0), jnp.int32(0),
                           image_lib.ImageSamplerConfig(num_timesteps=8, shift=3.0, cfg=CFG))
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=8, shift=3.0, cfg=CFG, sde_window=2, eta=0.7)
    out = image_lib.sample(m, branches, x0, pos, jax.random.key(1), jnp.int32(2), sampler_config)
    assert out.log_probs.shape == (1, 2) and np.isfinite(np.asarray(out.log_probs)).all()
    # Grid points 0..2 precede the first SDE step; step 2 injects noise into point 3.
    np.testing.assert_allclose(out.trajectory[:, :3], ode.trajectory[:, :3], atol=RESCORE_ATOL)
    assert np.abs(np.asarray(out.trajectory[:, 3] - ode.trajectory[:, 3])).max() > 0.1
    lps, means = image_lib.window_log_probs(m, branches, out.trajectory, out.window_start, pos, sampler_config)
    np.testing.assert_allclose(lps, out.log_probs, atol=RESCORE_ATOL)
    np.testing.assert_allclose(means, out.means, atol=RESCORE_ATOL)
