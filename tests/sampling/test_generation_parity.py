"""Full generations against upstream BAGEL (goldens d1: T2I with text CFG + global renorm; d2: editing with an
image in context, image CFG and text_channel renorm), given the injected initial and posterior noise."""
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import packing
from alphagrpo_jax.models.bagel.vae import patchify_latent, to_uint8, unpatchify_latent
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import image as image_lib
from alphagrpo_jax.sampling.cfg import CFGConfig
from tests.models.bagel.parity_utils import FP32_ATOL, bf16_tol, golden, load_model, load_vae, suffix


def _text(ids):
    return ctx_lib.Text(tuple(int(i) for i in ids[1:-1]))


def _decode(vae, latents, h, w, cfg):
    z = unpatchify_latent(latents, h // 16, w // 16, cfg.latent_patch_size, cfg.vae.z_channels)
    pix = vae.decode(z)
    return np.asarray(pix[0]).transpose(2, 0, 1), np.asarray(to_uint8(pix)[0])


def _run(m, branches, d, cfg, sampler_config):
    h, w = (int(x) for x in d["image_hw"])
    pos = image_lib.grid_positions(h // 16, w // 16, cfg.max_latent_size, 1)
    out = image_lib.sample(m, branches, jnp.asarray(d["init_noise"])[None], pos, jax_key(0), jnp.int32(0),
                           sampler_config)
    return out, h, w


def jax_key(i):
    import jax
    return jax.random.key(i)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_t2i_with_global_renorm(precision):
    cfg, m = load_model(precision)
    d, s = golden("d1_t2i.npz"), suffix(precision)
    cond = ctx_lib.build(m, None, [[_text(d["prompt_ids"])]], cache_size=64)
    text_uncond = ctx_lib.build(m, None, [[]], cache_size=64)
    assert int(cond.cache.length[0]) == int(d["ctx_cond_kv_len"][0]) and int(cond.rope[0]) == d["ctx_cond_rope"][0]
    assert int(text_uncond.rope[0]) == int(d["ctx_text_uncond_rope"][0]) == 0
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=8, shift=3.0,
                                                  cfg=CFGConfig(4.0, 1.0, (0.4, 1.0), "global"))
    out, h, w = _run(m, image_lib.Branches(cond, text_uncond), d, cfg, sampler_config)
    traj = np.asarray(out.trajectory[0])
    if precision == "fp32":
        np.testing.assert_allclose(traj[:7], d["step_x_t_fp32"], atol=FP32_ATOL, rtol=1e-5)
        np.testing.assert_allclose(out.latents[0], d["final_latent_fp32"], atol=FP32_ATOL, rtol=1e-5)
        decoded, img = _decode(load_vae(), out.latents, h, w, cfg)
        np.testing.assert_allclose(decoded, d["decoded_fp32"], atol=FP32_ATOL)
        assert np.abs(img.astype(int) - d["image_uint8_fp32"].astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(out.latents[0], d["final_latent" + s], atol=bf16_tol("d1.final_latent"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_edit_with_image_cfg_text_channel(precision):
    cfg, m = load_model(precision)
    vae = load_vae()
    d, s = golden("d2_edit.npz"), suffix(precision)
    vae_pix = d["vae_pixels"].transpose(1, 2, 0)
    z = vae.encode(jnp.asarray(vae_pix)[None], eps=jnp.asarray(d["vae_posterior_noise"].transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(np.asarray(z[0]).transpose(2, 0, 1), d["vae_latent_z_fp32"][0], atol=FP32_ATOL)
    vae_item, vit_item = ctx_lib.condition_image(vae_pix, d["vit_pixels"].transpose(1, 2, 0))
    tokens = {id(vae_item): np.asarray(patchify_latent(z, cfg.latent_patch_size)[0])}

    def build(items, size=192):
        ctx = ctx_lib.Context.empty(cfg, 1, size)
        block = packing.pack([[items]], cfg, [0], tokens)
        return ctx_lib.prefill(m, ctx, block)

    instr = _text(d["prompt_ids"])
    cond = build([vae_item, vit_item, instr])
    text_uncond = build([vae_item, vit_item])
    img_uncond = build([instr])
    for name, c in (("cond", cond), ("text_uncond", text_uncond), ("img_uncond", img_uncond)):
        n = int(c.cache.length[0])
        assert n == int(d[f"ctx_{name}_kv_len"][0]) and int(c.rope[0]) == int(d[f"ctx_{name}_rope"][0])
        tol = FP32_ATOL if precision == "fp32" else bf16_tol(f"d2.ctx_{name}_k_cache")
        np.testing.assert_allclose(c.cache.k[:, 0, :n], d[f"ctx_{name}_k_cache" + s], atol=tol)
        np.testing.assert_allclose(c.cache.v[:, 0, :n], d[f"ctx_{name}_v_cache" + s], atol=tol)
    sampler_config = image_lib.ImageSamplerConfig(num_timesteps=8, shift=3.0,
                                        cfg=CFGConfig(4.0, 2.0, (0.4, 1.0), "text_channel"))
    out, h, w = _run(m, image_lib.Branches(cond, text_uncond, img_uncond), d, cfg, sampler_config)
    if precision == "fp32":
        np.testing.assert_allclose(np.asarray(out.trajectory[0, :7]), d["step_x_t_fp32"], atol=FP32_ATOL, rtol=1e-5)
        np.testing.assert_allclose(out.latents[0], d["final_latent_fp32"], atol=FP32_ATOL, rtol=1e-5)
        decoded, img = _decode(vae, out.latents, h, w, cfg)
        np.testing.assert_allclose(decoded, d["decoded_fp32"], atol=FP32_ATOL)
        assert np.abs(img.astype(int) - d["image_uint8_fp32"].astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(out.latents[0], d["final_latent" + s], atol=bf16_tol("d2.final_latent"))
