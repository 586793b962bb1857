"""The parameter-free pixel autoencoder: exact round trip, BAGEL's (py, px, c) channel order, the toy scaling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import config as config_lib, release
from alphagrpo_jax.models.bagel.pixel_ae import PixelAutoEncoder, depth_to_space, encode_pixels, space_to_depth
from alphagrpo_jax.models.bagel.vae import patchify_latent
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.toy import prompts, world


def _toy_images(n, seed=0):
    rng = np.random.default_rng(seed)
    specs = prompts.split_prompts("train", "two_objects")
    ims = [world.render(prompts.sample_scene(specs[rng.integers(len(specs))], rng)) for _ in range(n)]
    return np.stack(ims).astype(np.float32) / 127.5 - 1.0


def test_round_trip_is_exact_and_keeps_the_interface():
    cfg = config_lib.toy()
    ae = release.make_autoencoder(cfg)
    assert isinstance(ae, PixelAutoEncoder)
    assert (ae.downsample, ae.z_channels, ae.in_channels) == (2, 12, 3)
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 32, 16, 3)), jnp.float32)
    z = ae.encode(x, jax.random.key(0))  # key accepted and ignored: deterministic
    assert z.shape == (2, 16, 8, 12) and z.dtype == jnp.float32
    np.testing.assert_array_equal(z, ae.encode(x, eps=jnp.ones_like(z)))
    np.testing.assert_allclose(ae.decode(z), x, atol=2e-7, rtol=0)


def test_channel_order_is_py_px_c_and_numpy_matches_jax():
    x = np.arange(1 * 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    z = space_to_depth(x, 2)
    # latent cell (0, 1) holds pixels rows 0..1, cols 2..3; feature (py*2 + px)*3 + c
    for py in range(2):
        for px in range(2):
            np.testing.assert_array_equal(z[0, 0, 1, (py * 2 + px) * 3:(py * 2 + px + 1) * 3], x[0, py, 2 + px])
    np.testing.assert_array_equal(depth_to_space(z, 2), x)
    np.testing.assert_array_equal(np.asarray(space_to_depth(jnp.asarray(x), 2)), z)
    np.testing.assert_allclose(np.asarray(encode_pixels(jnp.asarray(x), 2, 1.5, 0.5)), encode_pixels(x, 2, 1.5, 0.5))


def test_toy_scaling_gives_unit_variance_latents():
    cfg = config_lib.toy()
    z = PixelAutoEncoder(cfg.vae).encode(jnp.asarray(_toy_images(64)))
    assert abs(float(z.mean())) < 0.15 and 0.85 < float(z.std()) < 1.15


def test_jitted_context_encoding_path_works():
    """sampling.context encodes conditioning images with a jitted call taking the autoencoder as an argument."""
    cfg = config_lib.toy()
    ae = release.make_autoencoder(cfg)
    x = _toy_images(2)
    toks = ctx_lib.encode_vae_images(ae, [ctx_lib.VaeImage(im) for im in x], jax.random.key(0), cfg)
    want = patchify_latent(encode_pixels(x, 2, cfg.vae.scale_factor, cfg.vae.shift_factor), 2)
    np.testing.assert_allclose(np.stack(toks), want, atol=1e-6)
    assert toks[0].shape == ((32 // cfg.latent_downsample) ** 2, cfg.patch_latent_dim) == (64, 48)


@pytest.mark.parametrize("bad", [(1, 31, 32, 3), (1, 32, 32, 1)])
def test_bad_shapes_are_clear_errors(bad):
    ae = PixelAutoEncoder(config_lib.toy().vae)
    with pytest.raises(ValueError, match="pixel_ae"):
        ae.encode(jnp.zeros(bad))


def test_config_rejects_inconsistent_channels():
    with pytest.raises(config_lib.ConfigError, match="z_channels"):
        config_lib.VAEConfig(kind="pixel", downsample=2, z_channels=16)
    with pytest.raises(config_lib.ConfigError, match="kind='pixel'"):
        PixelAutoEncoder(config_lib.VAEConfig())
