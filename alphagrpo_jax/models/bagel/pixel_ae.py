"""A parameter-free "pixel" autoencoder for toy worlds: space-to-depth by `downsample`, scaled like FLUX's.

    encode: pixels [B, H, W, C] in [-1, 1] -> z [B, H/d, W/d, C*d*d],  z = scale * (s2d(x) - shift)
    decode: z -> pixels [B, d*h, d*w, C],                               x = d2s(z / scale + shift)

Channel order inside a latent cell is (py, px, c): index (py*d + px)*C + c (BAGEL's own patch order). The round
trip is exact up to fp32 rounding of the affine map. `scale_factor`/`shift_factor` come from the config: choose
them so latents are ~unit variance (the scale flow matching's N(0, 1) noise assumes); the toy preset uses the
toy images' pixel statistics (config.py `toy`). Encoding is deterministic: `key`/`eps` are accepted for
interface parity with `vae.AutoEncoder` (BAGEL samples the FLUX posterior) and ignored.
`space_to_depth` / `depth_to_space` work on numpy and jax arrays alike (host-side data pipelines use numpy).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax.models.bagel.config import ConfigError, VAEConfig


def space_to_depth(x, d: int):
    """[B, H, W, C] -> [B, H/d, W/d, d*d*C] (numpy or jax), feature (py*d + px)*C + c."""
    b, h, w, c = x.shape
    if h % d or w % d:
        raise ValueError(f"pixel_ae: image {h}x{w} (HxW) is not a multiple of downsample {d}")
    return x.reshape(b, h // d, d, w // d, d, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // d, w // d, d * d * c)


def depth_to_space(z, d: int):
    """Exact inverse of `space_to_depth`: [B, h, w, d*d*C] -> [B, d*h, d*w, C]."""
    b, h, w, f = z.shape
    if f % (d * d):
        raise ValueError(f"pixel_ae: {f} latent channels are not a multiple of downsample^2 = {d * d}")
    c = f // (d * d)
    return z.reshape(b, h, w, d, d, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * d, w * d, c)


def encode_pixels(x, d: int, scale: float, shift: float):
    """pixels [B, H, W, C] (numpy or jax) -> scaled latents scale * (s2d(x) - shift), fp32."""
    return scale * (space_to_depth(x.astype("float32"), d) - shift)


def decode_latents(z, d: int, scale: float, shift: float):
    """Inverse of `encode_pixels`."""
    return depth_to_space(z.astype("float32") / scale + shift, d)


class PixelAutoEncoder(nnx.Module):
    """The `vae.AutoEncoder` interface (`encode`, `decode`, `downsample`, `z_channels`, `in_channels`,
    `scale_factor`, `shift_factor`) without parameters."""

    def __init__(self, cfg: VAEConfig):
        if cfg.kind != "pixel":
            raise ConfigError(f"PixelAutoEncoder needs VAEConfig(kind='pixel'), got kind {cfg.kind!r}")
        if cfg.scale_factor == 0:
            raise ConfigError("VAEConfig.scale_factor must be non-zero for the pixel autoencoder")
        self.downsample = int(cfg.downsample)
        self.in_channels = int(cfg.in_channels)
        self.z_channels = int(cfg.z_channels)
        self.scale_factor = float(cfg.scale_factor)
        self.shift_factor = float(cfg.shift_factor)

    def encode(self, pixels: jax.Array, key: jax.Array | None = None, *, eps: jax.Array | None = None) -> jax.Array:
        """pixels [B, H, W, in_channels] (H, W multiples of `downsample`) -> z [B, H/d, W/d, z_channels] fp32."""
        del key, eps  # deterministic: nothing to sample
        if pixels.ndim != 4 or pixels.shape[-1] != self.in_channels:
            raise ValueError(f"pixel_ae.encode: pixels must be NHWC [B, H, W, {self.in_channels}], "
                             f"got {pixels.shape}")
        return encode_pixels(jnp.asarray(pixels), self.downsample, self.scale_factor, self.shift_factor)

    def decode(self, z: jax.Array) -> jax.Array:
        """z [B, h, w, z_channels] -> pixels [B, d*h, d*w, in_channels] fp32 (not clamped)."""
        if z.ndim != 4 or z.shape[-1] != self.z_channels:
            raise ValueError(f"pixel_ae.decode: z must be NHWC [B, h, w, {self.z_channels}], got {z.shape}")
        return decode_latents(jnp.asarray(z), self.downsample, self.scale_factor, self.shift_factor)
