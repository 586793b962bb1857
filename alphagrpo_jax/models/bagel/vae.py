"""BAGEL's VAE: the FLUX autoencoder in Flax NNX (NHWC), latent patchify, and its `ae.safetensors` map.

Layout: pixels [B, H, W, 3] in [-1, 1]; latents z [B, H/8, W/8, z_channels] (scaled, as the LLM sees them).
The official path runs the VAE in float32 (`param_dtype` float32); with bf16 params, convolutions and matmuls
still accumulate in fp32, and GroupNorm and the attention softmax are always computed in fp32.

NNX paths mirror the FLUX names (`encoder.down.{i}.block.{j}.norm1.weight` lives at
`encoder/down/i/block/j/norm1/scale`), so `weight_map` is a plain rename plus layout transforms.
"""
from __future__ import annotations

import functools

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models.bagel import weight_map as wm
from alphagrpo_jax.models.bagel.config import ConfigError, VAEConfig
from alphagrpo_jax.models.bagel.subpixel import upsample2x_conv3x3
from alphagrpo_jax.models.layers import Dense
from alphagrpo_jax.parallel.rules import constrain
from alphagrpo_jax.parallel.state import param

GROUPS = 32
NORM_EPS = 1e-6
CONV_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")
IMAGE_AXES = ("batch", None, None, None)


# ------------------------------------------------------------------------------------------ building blocks

class Conv2d(nnx.Module):
    """NHWC convolution, kernel HWIO [k, k, c_in, c_out], bias [c_out]; fp32 accumulation."""

    def __init__(self, c_in: int, c_out: int, k: int, *, stride: int = 1, padding, rngs: nnx.Rngs,
                 param_dtype=jnp.float32):
        self.stride = stride
        self.padding = padding
        w = jax.random.normal(rngs.params(), (k, k, c_in, c_out), jnp.float32) * (k * k * c_in) ** -0.5
        self.kernel = param(w.astype(param_dtype), CONV_AXES)
        self.bias = param(jnp.zeros((c_out,), param_dtype), ("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...]
        y = jax.lax.conv_general_dilated(
            x.astype(w.dtype), w, (self.stride, self.stride), self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=jnp.float32)
        return self._biased(y, x)

    def upsampled(self, x: jax.Array) -> jax.Array:
        """self(nearest 2x upsampling of x), a 3x3 conv with padding 1: with an fp32 kernel as four 2x2 convs of x
        (subpixel.py: 2.25x fewer FLOPs), with a 16-bit one as written (pair sums in bf16 would round)."""
        w = self.kernel[...]
        if w.dtype != jnp.float32:
            return self(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))
        return self._biased(upsample2x_conv3x3(x.astype(w.dtype), w), x)

    def _biased(self, y: jax.Array, x: jax.Array) -> jax.Array:
        return (y + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def conv3x3(c_in, c_out, rngs, param_dtype):
    return Conv2d(c_in, c_out, 3, padding=((1, 1), (1, 1)), rngs=rngs, param_dtype=param_dtype)


class GroupNorm(nnx.Module):
    """torch GroupNorm(32, C, eps=1e-6, affine): biased variance over (H, W, C/32), computed in fp32."""

    def __init__(self, channels: int, *, param_dtype=jnp.float32):
        if channels % GROUPS:
            raise ConfigError(f"VAEConfig: GroupNorm({GROUPS}) needs channels divisible by {GROUPS}, got {channels}")
        self.scale = param(jnp.ones((channels,), param_dtype), ("norm",))
        self.bias = param(jnp.zeros((channels,), param_dtype), ("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = x.astype(jnp.float32).reshape(b, h, w, GROUPS, c // GROUPS)
        mean = jnp.mean(g, axis=(1, 2, 4), keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=(1, 2, 4), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + NORM_EPS)).reshape(b, h, w, c)
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)


def swish(x):
    return x * jax.nn.sigmoid(x)


class ResnetBlock(nnx.Module):
    """x + conv2(swish(norm2(conv1(swish(norm1(x)))))); a 1x1 `nin_shortcut` when channels change."""

    def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.norm1 = GroupNorm(c_in, param_dtype=param_dtype)
        self.conv1 = conv3x3(c_in, c_out, rngs, param_dtype)
        self.norm2 = GroupNorm(c_out, param_dtype=param_dtype)
        self.conv2 = conv3x3(c_out, c_out, rngs, param_dtype)
        self.nin_shortcut = (Conv2d(c_in, c_out, 1, padding="VALID", rngs=rngs, param_dtype=param_dtype)
                             if c_in != c_out else None)

    def __call__(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nnx.Module):
    """Single-head self-attention over all H*W positions; q/k/v/proj_out are 1x1 convs (Dense [C, C])."""

    def __init__(self, c: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.norm = GroupNorm(c, param_dtype=param_dtype)
        mk = lambda: Dense(c, c, ("conv_in", "conv_out"), rngs=rngs, param_dtype=param_dtype)  # noqa: E731
        self.q, self.k, self.v, self.proj_out = mk(), mk(), mk(), mk()

    def __call__(self, x):
        b, h, w, c = x.shape
        hn = self.norm(x).reshape(b, h * w, c)
        q, k, v = self.q(hn), self.k(hn), self.v(hn)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, preferred_element_type=jnp.float32) * c ** -0.5
        probs = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", probs, v.astype(jnp.float32), preferred_element_type=jnp.float32)
        return x + self.proj_out(out.astype(x.dtype)).reshape(b, h, w, c)


class MidBlock(nnx.Module):
    def __init__(self, c: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.block_1 = ResnetBlock(c, c, rngs=rngs, param_dtype=param_dtype)
        self.attn_1 = AttnBlock(c, rngs=rngs, param_dtype=param_dtype)
        self.block_2 = ResnetBlock(c, c, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Resample(nnx.Module):
    """`down`: zero-pad right/bottom by 1, 3x3 conv stride 2. `up`: nearest 2x, 3x3 conv pad 1
    (`Conv2d.upsampled`)."""

    def __init__(self, c: int, mode: str, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.mode = mode
        self.conv = (Conv2d(c, c, 3, stride=2, padding=((0, 1), (0, 1)), rngs=rngs, param_dtype=param_dtype)
                     if mode == "down" else conv3x3(c, c, rngs, param_dtype))

    def __call__(self, x):
        return self.conv.upsampled(x) if self.mode == "up" else self.conv(x)


class Level(nnx.Module):
    """One resolution level: `n` ResnetBlocks, then `downsample`/`upsample` (or neither, at the end)."""

    def __init__(self, c_in: int, c_out: int, n: int, resample: str | None, *, rngs, param_dtype):
        self.block = nnx.List([ResnetBlock(c_in if j == 0 else c_out, c_out, rngs=rngs, param_dtype=param_dtype)
                               for j in range(n)])
        if resample == "down":
            self.downsample = Resample(c_out, "down", rngs=rngs, param_dtype=param_dtype)
        elif resample == "up":
            self.upsample = Resample(c_out, "up", rngs=rngs, param_dtype=param_dtype)
        self.resample = resample

    def __call__(self, x):
        for blk in self.block:
            x = blk(x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x


# ------------------------------------------------------------------------------------------ encoder/decoder

def _level_channels(cfg: VAEConfig) -> list[tuple[int, int]]:
    """(c_in, c_out) of encoder level i; the decoder's level i maps c_out(i+1 or last) -> c_out(i)."""
    mults = (1,) + tuple(cfg.ch_mult)
    return [(cfg.ch * mults[i], cfg.ch * cfg.ch_mult[i]) for i in range(len(cfg.ch_mult))]


class Encoder(nnx.Module):
    """pixels [B, H, W, in_ch] -> moments [B, H/8, W/8, 2*z_channels] (mean first, then logvar)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        levels = _level_channels(cfg)
        n = len(levels)
        self.conv_in = conv3x3(cfg.in_channels, cfg.ch, rngs, param_dtype)
        self.down = nnx.List([Level(ci, co, cfg.num_res_blocks, "down" if i < n - 1 else None,
                                    rngs=rngs, param_dtype=param_dtype) for i, (ci, co) in enumerate(levels)])
        top = levels[-1][1]
        self.mid = MidBlock(top, rngs=rngs, param_dtype=param_dtype)
        self.norm_out = GroupNorm(top, param_dtype=param_dtype)
        self.conv_out = conv3x3(top, 2 * cfg.z_channels, rngs, param_dtype)

    def __call__(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class Decoder(nnx.Module):
    """z [B, h, w, z_channels] (unscaled) -> pixels [B, 8h, 8w, out_ch]. `up[i]` is level i: up[-1] runs first."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        outs = [co for _, co in _level_channels(cfg)]
        top = outs[-1]
        self.conv_in = conv3x3(cfg.z_channels, top, rngs, param_dtype)
        self.mid = MidBlock(top, rngs=rngs, param_dtype=param_dtype)
        ins = [outs[i + 1] for i in range(len(outs) - 1)] + [top]  # level i is fed by level i+1
        self.up = nnx.List([Level(ins[i], outs[i], cfg.num_res_blocks + 1, "up" if i > 0 else None,
                                  rngs=rngs, param_dtype=param_dtype) for i in range(len(outs))])
        self.norm_out = GroupNorm(outs[0], param_dtype=param_dtype)
        self.conv_out = conv3x3(outs[0], cfg.out_ch, rngs, param_dtype)

    def __call__(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoEncoder(nnx.Module):
    """FLUX AE: `encode` samples the posterior and scales; `decode` unscales and decodes (no clamp)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        self.scale_factor = float(cfg.scale_factor)
        self.shift_factor = float(cfg.shift_factor)
        self.z_channels = cfg.z_channels
        self.in_channels = cfg.in_channels
        self.downsample = cfg.downsample
        self.dtype = jnp.dtype(dtype)
        self.encoder = Encoder(cfg, rngs=rngs, param_dtype=param_dtype)
        self.decoder = Decoder(cfg, rngs=rngs, param_dtype=param_dtype)

    def encode_moments(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
        """pixels [B, H, W, 3] (H, W multiples of 8) -> (mean, logvar), each [B, H/8, W/8, z] fp32, unscaled."""
        if pixels.ndim != 4 or pixels.shape[-1] != self.in_channels:
            raise ValueError(f"vae.encode: pixels must be NHWC [B, H, W, {self.in_channels}], got {pixels.shape}")
        if pixels.shape[1] % self.downsample or pixels.shape[2] % self.downsample:
            raise ValueError(f"vae.encode: H, W must be multiples of {self.downsample}, got {pixels.shape[1:3]}")
        x = constrain(pixels.astype(self.dtype), IMAGE_AXES)
        moments = self.encoder(x).astype(jnp.float32)
        return moments[..., : self.z_channels], moments[..., self.z_channels:]

    def encode(self, pixels: jax.Array, key: jax.Array | None = None, *, eps: jax.Array | None = None):
        """Scaled posterior sample z = scale * (mean + exp(logvar/2) * eps - shift), [B, H/8, W/8, z] fp32.

        eps ~ N(0, 1) is drawn from `key`, or given explicitly (`eps`, same shape as z); exactly one of them.
        """
        if (key is None) == (eps is None):
            raise ValueError("vae.encode: pass exactly one of `key` (to draw eps) or `eps` (explicit noise)")
        shape = (pixels.shape[0], pixels.shape[1] // self.downsample, pixels.shape[2] // self.downsample,
                 self.z_channels)
        if eps is not None and tuple(eps.shape) != shape:
            raise ValueError(f"vae.encode: eps shape {tuple(eps.shape)} != latent shape {shape}")
        mean, logvar = self.encode_moments(pixels)
        if eps is None:
            eps = jax.random.normal(key, mean.shape, jnp.float32)
        z = mean + jnp.exp(0.5 * logvar) * eps.astype(jnp.float32)
        return self.scale_factor * (z - self.shift_factor)

    def decode(self, z: jax.Array) -> jax.Array:
        """Scaled latents [B, h, w, z] -> pixels [B, 8h, 8w, 3] fp32, nominally [-1, 1] (not clamped)."""
        if z.ndim != 4 or z.shape[-1] != self.z_channels:
            raise ValueError(f"vae.decode: z must be NHWC [B, h, w, {self.z_channels}], got {z.shape}")
        x = z.astype(jnp.float32) / self.scale_factor + self.shift_factor
        return self.decoder(constrain(x.astype(self.dtype), IMAGE_AXES)).astype(jnp.float32)


def to_uint8(pixels: jax.Array) -> jax.Array:
    """[-1, 1] floats -> uint8 levels, truncated like upstream's `.to(torch.uint8)` (not rounded)."""
    return (jnp.clip(pixels.astype(jnp.float32) * 0.5 + 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)


# ------------------------------------------------------------------------------------------ latent tokens

def patchify_latent(z: jax.Array, p: int = 2) -> jax.Array:
    """z [B, p*h, p*w, C] -> tokens [B, h*w, p*p*C], row-major tokens; feature (py*p + px)*C + c (BAGEL order)."""
    b, hh, ww, c = z.shape
    if hh % p or ww % p:
        raise ValueError(f"patchify_latent: latent H, W {(hh, ww)} not multiples of patch size {p}")
    t = z.reshape(b, hh // p, p, ww // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, (hh // p) * (ww // p), p * p * c)


def unpatchify_latent(tokens: jax.Array, h: int, w: int, p: int = 2, c: int | None = None) -> jax.Array:
    """Exact inverse of `patchify_latent`: tokens [B, h*w, p*p*C] -> z [B, p*h, p*w, C]."""
    b, n, d = tokens.shape
    c = d // (p * p) if c is None else c
    if n != h * w or d != p * p * c:
        raise ValueError(f"unpatchify_latent: tokens {tokens.shape} do not match h*w={h * w}, p*p*C={p * p * c}")
    t = tokens.reshape(b, h, w, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return t.reshape(b, h * p, w * p, c)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5))
def decode_latent_tokens(vae, tokens: jax.Array, h: int, w: int, p: int, c: int) -> jax.Array:
    """Latent tokens [B, h*w, p*p*C] -> uint8 pixels [B, H, W, 3] through `vae.decode`, as one program (one
    compile per size): op-by-op dispatch of the decoder costs ~1.4x on CPU."""
    return to_uint8(vae.decode(unpatchify_latent(tokens, h, w, p, c)))


# ------------------------------------------------------------------------------------------ ae.safetensors

def _attn_linear():
    """torch 1x1 conv [O, I, 1, 1] <-> our Dense kernel [I, O]."""
    return (lambda t: t[:, :, 0, 0].T), (lambda k: k.T[:, :, None, None])


def weight_map(cfg: VAEConfig, prefix: tuple[str, ...] = ()) -> list[wm.TensorMap]:
    """Every tensor of `ae.safetensors` (FLUX names, no prefix) -> our AutoEncoder paths under `prefix`."""
    maps: list[wm.TensorMap] = []
    prefix = tuple(prefix)

    def add(key, path, fns):
        maps.append(wm.TensorMap.single(prefix + tuple(path), key, *fns))

    def conv(key, path):
        add(f"{key}.weight", path + ("kernel",), wm.conv2d())
        add(f"{key}.bias", path + ("bias",), wm.identity())

    def norm(key, path):
        add(f"{key}.weight", path + ("scale",), wm.identity())
        add(f"{key}.bias", path + ("bias",), wm.identity())

    def resblock(key, path, c_in, c_out):
        norm(f"{key}.norm1", path + ("norm1",))
        conv(f"{key}.conv1", path + ("conv1",))
        norm(f"{key}.norm2", path + ("norm2",))
        conv(f"{key}.conv2", path + ("conv2",))
        if c_in != c_out:
            conv(f"{key}.nin_shortcut", path + ("nin_shortcut",))

    def mid(key, path, c):
        resblock(f"{key}.block_1", path + ("block_1",), c, c)
        norm(f"{key}.attn_1.norm", path + ("attn_1", "norm"))
        for name in ("q", "k", "v", "proj_out"):
            add(f"{key}.attn_1.{name}.weight", path + ("attn_1", name, "kernel"), _attn_linear())
            add(f"{key}.attn_1.{name}.bias", path + ("attn_1", name, "bias"), wm.identity())
        resblock(f"{key}.block_2", path + ("block_2",), c, c)

    levels = _level_channels(cfg)
    n, top = len(levels), levels[-1][1]
    conv("encoder.conv_in", ("encoder", "conv_in"))
    for i, (ci, co) in enumerate(levels):
        for j in range(cfg.num_res_blocks):
            resblock(f"encoder.down.{i}.block.{j}", ("encoder", "down", i, "block", j), ci if j == 0 else co, co)
        if i < n - 1:
            conv(f"encoder.down.{i}.downsample.conv", ("encoder", "down", i, "downsample", "conv"))
    mid("encoder.mid", ("encoder", "mid"), top)
    norm("encoder.norm_out", ("encoder", "norm_out"))
    conv("encoder.conv_out", ("encoder", "conv_out"))

    conv("decoder.conv_in", ("decoder", "conv_in"))
    mid("decoder.mid", ("decoder", "mid"), top)
    outs = [co for _, co in levels]
    for i in range(n):
        ci = outs[i + 1] if i < n - 1 else top
        for j in range(cfg.num_res_blocks + 1):
            resblock(f"decoder.up.{i}.block.{j}", ("decoder", "up", i, "block", j), ci if j == 0 else outs[i],
                     outs[i])
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", ("decoder", "up", i, "upsample", "conv"))
    norm("decoder.norm_out", ("decoder", "norm_out"))
    conv("decoder.conv_out", ("decoder", "conv_out"))
    return maps


def load_weights(model: AutoEncoder, cfg: VAEConfig, tensors: Mapping[str, np.ndarray],
                 source: str = "ae.safetensors") -> AutoEncoder:
    """Fills `model` in place from a {FLUX name: array} dict (e.g. `safetensors.numpy.load_file`).

    Raises WeightMapError naming `source` and the key if a tensor is missing or a key is left unused.
    """
    maps = weight_map(cfg)
    wanted = {k for m in maps for k in m.all_keys()}
    unused = sorted(set(tensors) - wanted)
    if unused:
        raise wm.WeightMapError(f"{source}: {len(unused)} tensor(s) the FLUX autoencoder does not use: {unused[:8]}")

    def read(key: str) -> np.ndarray:
        if key not in tensors:
            raise wm.WeightMapError(f"{source}: missing tensor {key!r} (expected by the FLUX autoencoder)")
        return np.asarray(tensors[key])

    state = wm.fill_state(nnx.state(model), maps, read)
    nnx.update(model, state)
    return model


def export_weights(model: AutoEncoder, cfg: VAEConfig) -> dict[str, np.ndarray]:
    """Our AutoEncoder params -> {FLUX name: torch-layout numpy array} (inverse of `load_weights`)."""
    flat = {path: var.get_value() for path, var in nnx.to_flat_state(nnx.state(model))}
    out = {}
    for m in weight_map(cfg):
        out[str(m.keys[()])] = np.ascontiguousarray(m.to_torch(np.asarray(flat[m.path])))
    return out
