"""CFG combination against the upstream per-step branch velocities (goldens d1: global, d2: text_channel)."""
import numpy as np
import pytest

from alphagrpo_jax.sampling import cfg as cfg_lib


def _check_case(npz, cfg):
    for s in range(npz["step_t_fp32"].shape[0]):
        v = cfg_lib.combine(cfg, npz["step_v_cond_fp32"][s][None], npz["step_v_text_uncond_fp32"][s][None],
                            npz["step_v_img_uncond_fp32"][s][None],
                            active=cfg.active(npz["step_t_fp32"][s]))
        assert bool(cfg.active(npz["step_t_fp32"][s])) == bool(npz["step_text_uncond_computed_fp32"][s])
        np.testing.assert_allclose(np.asarray(v[0]), npz["step_v_fp32"][s], atol=2e-5, rtol=1e-5)


def test_global_renorm_text_cfg(goldens_dir):
    _check_case(np.load(goldens_dir / "d1_t2i.npz"), cfg_lib.CFGConfig(4.0, 1.0, (0.4, 1.0), "global", 0.0))


def test_text_channel_with_image_cfg(goldens_dir):
    _check_case(np.load(goldens_dir / "d2_edit.npz"), cfg_lib.CFGConfig(4.0, 2.0, (0.4, 1.0), "text_channel", 0.0))


def test_wrong_renorm_type_would_not_match(goldens_dir):
    d2 = np.load(goldens_dir / "d2_edit.npz")
    cfg = cfg_lib.CFGConfig(4.0, 2.0, (0.4, 1.0), "global", 0.0)
    v = cfg_lib.combine(cfg, d2["step_v_cond_fp32"][0][None], d2["step_v_text_uncond_fp32"][0][None],
                        d2["step_v_img_uncond_fp32"][0][None])
    assert np.abs(np.asarray(v[0]) - d2["step_v_fp32"][0]).max() > 1e-2


def test_renorm_min_one_disables_renorm():
    rng = np.random.default_rng(0)
    vc, vu = rng.normal(size=(1, 4, 8)), rng.normal(size=(1, 4, 8))
    out = cfg_lib.combine(cfg_lib.CFGConfig(3.0, 1.0, (0.0, 1.0), "global", 1.0), vc, vu)
    np.testing.assert_allclose(np.asarray(out), vu + 3.0 * (vc - vu), rtol=1e-5, atol=1e-6)


def test_no_guidance_when_text_scale_le_one():
    rng = np.random.default_rng(0)
    vc = rng.normal(size=(2, 4, 8)).astype(np.float32)
    out = cfg_lib.combine(cfg_lib.CFGConfig(1.0, 2.0), vc, None, None)
    np.testing.assert_array_equal(np.asarray(out), vc)


def test_bad_renorm_type():
    with pytest.raises(ValueError, match="renorm_type"):
        cfg_lib.CFGConfig(renorm_type="per_pixel")
