"""FLUX autoencoder (BAGEL's VAE) against the upstream PyTorch goldens (tiny_a: ch 32, ch_mult (1, 1, 2, 2)).

Measured max abs error vs the fp32 goldens (CPU, fp32 params): enc_mean 4.2e-6, enc_logvar 4.4e-6,
z 1.9e-6, decoded 6.3e-6, decoded_rand 4.8e-6, d2 vae_latent_z 2.1e-6 (the goldens themselves are within
7.5e-6 of a float64 reference). Asserted at atol = rtol = 1e-4.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from alphagrpo_jax.models.bagel import vae
from alphagrpo_jax.models.bagel import weight_map as wm
from alphagrpo_jax.models.bagel.config import tiny_a
from alphagrpo_jax.parallel.rules import DEFAULT_RULES, axes_of

CFG = tiny_a().vae
TOL = dict(atol=1e-4, rtol=1e-4)


def nhwc(a):
    """Goldens are NCHW [1, C, H, W]; our images and latents are NHWC."""
    return np.transpose(np.asarray(a), (0, 2, 3, 1))


@pytest.fixture(scope="module")
def tensors(goldens_dir):
    return load_file(str(goldens_dir / "ae.safetensors"))


@pytest.fixture(scope="module")
def model(tensors):
    # Abstract build (no random init) then fill: the loaded values are all that matter here.
    m = nnx.eval_shape(lambda: vae.AutoEncoder(CFG, rngs=nnx.Rngs(0)))
    return vae.load_weights(m, CFG, tensors)


@pytest.fixture(scope="module")
def f_case(goldens_dir):
    return dict(np.load(goldens_dir / "f_vae.npz"))


encode_moments = jax.jit(lambda m, x: m.encode_moments(x))
encode_eps = jax.jit(lambda m, x, e: m.encode(x, eps=e))
decode = jax.jit(lambda m, z: m.decode(z))


# ------------------------------------------------------------------------------------------ parity

def test_encoder_moments_match_goldens(model, f_case):
    mean, logvar = encode_moments(model, nhwc(f_case["pixels"]))
    assert mean.shape == (1, 8, 8, 16) and mean.dtype == jnp.float32
    np.testing.assert_allclose(mean, nhwc(f_case["enc_mean_fp32"]), **TOL)
    np.testing.assert_allclose(logvar, nhwc(f_case["enc_logvar_fp32"]), **TOL)


def test_encode_with_stored_posterior_noise(model, f_case):
    z = encode_eps(model, nhwc(f_case["pixels"]), nhwc(f_case["posterior_noise"]))
    np.testing.assert_allclose(z, nhwc(f_case["z_fp32"]), **TOL)


def test_decode_matches_goldens(model, f_case):
    out = decode(model, nhwc(f_case["z_fp32"]))
    assert out.shape == (1, 64, 64, 3) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, nhwc(f_case["decoded_fp32"]), **TOL)
    np.testing.assert_allclose(decode(model, nhwc(f_case["rand_latent"])), nhwc(f_case["decoded_rand_fp32"]), **TOL)


def test_d2_edit_conditioning_latent(model, goldens_dir):
    d2 = np.load(goldens_dir / "d2_edit.npz")
    pixels = np.transpose(d2["vae_pixels"], (1, 2, 0))[None]  # CHW -> [1, H, W, C]
    z = encode_eps(model, pixels, nhwc(d2["vae_posterior_noise"]))
    np.testing.assert_allclose(z, nhwc(d2["vae_latent_z_fp32"]), **TOL)


def test_encode_draws_standard_normal_noise_from_key(model, f_case):
    px = nhwc(f_case["pixels"])
    enc_key = jax.jit(lambda m, x, k: m.encode(x, k))
    z1, z2 = enc_key(model, px, jax.random.key(1)), enc_key(model, px, jax.random.key(2))
    mean, logvar = encode_moments(model, px)
    eps = (np.asarray(z1) / CFG.scale_factor + CFG.shift_factor - mean) / np.exp(0.5 * np.asarray(logvar))
    assert abs(eps.mean()) < 0.15 and abs(eps.std() - 1.0) < 0.1, (eps.mean(), eps.std())  # 1024 draws
    assert np.abs(np.asarray(z1) - np.asarray(z2)).max() > 1e-3
    with pytest.raises(ValueError, match="exactly one"):
        model.encode(px)
    with pytest.raises(ValueError, match="eps shape"):
        model.encode(px, eps=np.zeros((1, 4, 4, 16), np.float32))


def test_bf16_params_stay_close_to_fp32(tensors, f_case):
    m = nnx.eval_shape(lambda: vae.AutoEncoder(CFG, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16))
    vae.load_weights(m, CFG, tensors)
    assert m.decoder.conv_in.kernel[...].dtype == jnp.bfloat16
    out = decode(m, nhwc(f_case["z_fp32"]))
    assert out.dtype == jnp.float32
    err = np.abs(np.asarray(out) - nhwc(f_case["decoded_fp32"])).max()
    assert 0 < err < 0.1, err  # bf16 weight rounding only; activations and accumulation stay fp32


# ------------------------------------------------------------------------------------------ uint8 output

def test_to_uint8_truncates_like_upstream():
    x = jnp.array([-2.0, -1.0, 0.0, 1.0, 3.0, 2 * (254.99 / 255) - 1], jnp.float32)
    # 0.0 -> 127.5 -> 127 (rounding would give 128); 254.99 -> 254.
    np.testing.assert_array_equal(vae.to_uint8(x), np.array([0, 0, 127, 255, 255, 254], np.uint8))
    assert vae.to_uint8(x).dtype == jnp.uint8


@pytest.mark.parametrize("case", ["d1_t2i", "d2_edit"])
def test_to_uint8_reproduces_golden_pictures(goldens_dir, case):
    d = np.load(goldens_dir / f"{case}.npz")
    for mode in ("fp32", "bf16asis"):
        decoded = np.transpose(d[f"decoded_{mode}"], (1, 2, 0))
        ours = np.asarray(vae.to_uint8(decoded))
        np.testing.assert_array_equal(ours, d[f"image_uint8_{mode}"])
        rounded = np.round(np.clip(decoded * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
        assert (rounded != ours).any()  # the pictures do tell truncation from rounding


# ------------------------------------------------------------------------------------------ latent tokens

def test_patchify_order_is_bagels_not_fluxs():
    c, p, h, w = 3, 2, 2, 3
    chw = np.arange(c * p * h * p * w, dtype=np.float32).reshape(c, p * h, p * w)  # upstream layout [C, 2h, 2w]
    expected = np.zeros((h * w, p * p * c), np.float32)
    for r in range(h):
        for q in range(w):
            for py in range(p):
                for px in range(p):
                    for ch in range(c):
                        expected[r * w + q, (py * p + px) * c + ch] = chw[ch, r * p + py, q * p + px]
    # Upstream: [C, 2h, 2w] -> (c, h, p, w, q) -> "chpwq->hwpqc" -> [h*w, p*p*C].
    upstream = np.einsum("chpwq->hwpqc", chw.reshape(c, h, p, w, p)).reshape(h * w, p * p * c)
    np.testing.assert_array_equal(upstream, expected)
    flux = np.einsum("chpwq->hwcpq", chw.reshape(c, h, p, w, p)).reshape(h * w, p * p * c)
    assert not np.array_equal(flux, expected)  # FLUX's (c, py, px) packing would fail below

    ours = vae.patchify_latent(jnp.asarray(chw.transpose(1, 2, 0))[None], p)
    np.testing.assert_array_equal(ours[0], expected)
    np.testing.assert_array_equal(vae.unpatchify_latent(ours, h, w, p, c)[0], chw.transpose(1, 2, 0))


def test_patchify_golden_latent_matches_upstream_einsum(goldens_dir):
    z = np.load(goldens_dir / "d2_edit.npz")["vae_latent_z_fp32"]  # [1, 16, 14, 14]
    upstream = np.einsum("chpwq->hwpqc", z[0].reshape(16, 7, 2, 7, 2)).reshape(49, 64)
    tokens = vae.patchify_latent(jnp.asarray(nhwc(z)))
    np.testing.assert_array_equal(tokens[0], upstream)
    np.testing.assert_array_equal(vae.unpatchify_latent(tokens, 7, 7), nhwc(z))


def test_patchify_rejects_bad_shapes():
    with pytest.raises(ValueError, match="patchify_latent"):
        vae.patchify_latent(jnp.zeros((1, 5, 4, 16)))
    with pytest.raises(ValueError, match="unpatchify_latent"):
        vae.unpatchify_latent(jnp.zeros((1, 12, 64)), 3, 3)


# ------------------------------------------------------------------------------------------ weight map

def test_weight_map_reads_every_file_key_and_fills_every_array(tensors):
    read_keys = []

    def read(key):
        read_keys.append(key)
        return tensors[key]

    m = nnx.eval_shape(lambda: vae.AutoEncoder(CFG, rngs=nnx.Rngs(0)))
    wm.fill_state(nnx.state(m), vae.weight_map(CFG), read)  # raises if a model array has no entry
    assert sorted(read_keys) == sorted(tensors)
    assert len(read_keys) == len(set(read_keys)) == 240


def test_weight_map_prefix_and_decoder_level_order():
    maps = {m.all_keys()[0]: m.path for m in vae.weight_map(CFG, prefix=("vae",))}
    assert maps["encoder.conv_in.weight"] == ("vae", "encoder", "conv_in", "kernel")
    # FLUX's decoder.up.3 is the deepest level (applied first): it is fed by the mid block at 64 channels.
    assert maps["decoder.up.3.upsample.conv.weight"] == ("vae", "decoder", "up", 3, "upsample", "conv", "kernel")
    assert "decoder.up.0.upsample.conv.weight" not in maps
    assert "decoder.up.1.block.0.nin_shortcut.weight" in maps and "decoder.up.2.block.0.nin_shortcut.weight" not in maps


def test_export_round_trips_bit_exactly(model, tensors):
    out = vae.export_weights(model, CFG)
    assert sorted(out) == sorted(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape, k
        np.testing.assert_array_equal(out[k], v, err_msg=k)


def test_missing_or_unused_keys_give_clear_errors(tensors):
    m = nnx.eval_shape(lambda: vae.AutoEncoder(CFG, rngs=nnx.Rngs(0)))
    partial = {k: v for k, v in tensors.items() if k != "decoder.up.2.block.1.conv2.weight"}
    with pytest.raises(wm.WeightMapError, match=r"ae\.safetensors: missing tensor 'decoder\.up\.2\.block\.1\.conv2"):
        vae.load_weights(m, CFG, partial)
    extra = dict(tensors, **{"encoder.down.4.block.0.norm1.weight": np.ones(64, np.float32)})
    with pytest.raises(wm.WeightMapError, match=r"does not use: \['encoder\.down\.4"):
        vae.load_weights(m, CFG, extra)


def test_every_param_has_known_logical_axes():
    m = nnx.eval_shape(lambda: vae.AutoEncoder(CFG, rngs=nnx.Rngs(0)))
    known = dict(DEFAULT_RULES)
    n = 0
    for path, var in nnx.to_flat_state(nnx.state(m, nnx.Param)):
        axes = axes_of(var)
        assert axes is not None and len(axes) == var.get_value().ndim, (path, axes)
        assert all(a in known for a in axes), (path, axes)
        n += 1
    assert n == 240


def test_config_errors_are_clear():
    from alphagrpo_jax.models.bagel.config import ConfigError, VAEConfig
    with pytest.raises(ConfigError, match="GroupNorm"):
        nnx.eval_shape(lambda: vae.AutoEncoder(VAEConfig(ch=48), rngs=nnx.Rngs(0)))
