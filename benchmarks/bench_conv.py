"""The VAE decoder's 3x3 convolutions on this backend: XLA's convolution against the same convolution written as
nine shifted matmuls, in f32 and bf16, as FLOP/s and as a share of the matmul peak measured in the same run.

    python benchmarks/bench_conv.py [--size 256] [--ch 128] [--repeats 5]

Shapes: one resnet conv per decoder level (c -> c at the level's resolution) of a FLUX-kind autoencoder with
base channels `--ch` (the release's is 128) decoding a `--size` px image, batch 1 (models/bagel/vae.py).
Both forms accumulate in f32 (`preferred_element_type`), as `vae.Conv2d` does. The shifted form reads each input
9 times; it is a diagnostic of where XLA:CPU's convolution stands against its own matmul, not a proposal.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax.models.bagel.config import VAEConfig
from common import matmul_peak_flops, time_fn


def conv_xla(x, w):
    """x [1, H, W, C], w [3, 3, C, D] -> [1, H, W, D] f32: XLA's convolution."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=jnp.float32)


def conv_shifted(x, w):
    """The same as the sum over the 9 taps of a [H*W, C] @ [C, D] matmul of the shifted input."""
    h, wd = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(jnp.einsum("nhwc,cd->nhwd", xp[:, i:i + h, j:j + wd], w[i, j], preferred_element_type=jnp.float32)
               for i in range(3) for j in range(3))


def decoder_conv_shapes(size: int, ch: int) -> list[tuple[int, int]]:
    """(side px, channels) of one resnet conv per decoder level, deepest level first."""
    cfg = VAEConfig(ch=ch)
    outs = [cfg.ch * m for m in cfg.ch_mult]  # level i's channels (vae.Decoder)
    return [(size >> i, outs[i]) for i in reversed(range(len(outs)))]  # level i runs at size / 2^i


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--ch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    print(f"backend={jax.default_backend()} devices={jax.device_count()}")
    for dtype in (jnp.float32, jnp.bfloat16):
        peak = matmul_peak_flops(dtype=dtype)
        print(f"\n{jnp.dtype(dtype).name}: 1024^3 matmul peak {peak / 1e9:.0f} GFLOP/s")
        print(f"{'side':>5} {'C':>5} {'xla ms':>8} {'% peak':>7} {'shifted ms':>11} {'% peak':>7} {'xla/shifted':>12}")
        for side, c in decoder_conv_shapes(args.size, args.ch):
            x = jnp.asarray(rng.normal(size=(1, side, side, c)), dtype)
            w = jnp.asarray(rng.normal(size=(3, 3, c, c)) * 0.05, dtype)
            flops = 2 * side * side * c * c * 9
            t = {f.__name__: time_fn(jax.jit(f), x, w, warmup=2, repeats=args.repeats)[1]
                 for f in (conv_xla, conv_shifted)}
            a, b = t["conv_xla"], t["conv_shifted"]
            print(f"{side:5d} {c:5d} {a * 1e3:8.1f} {100 * flops / a / peak:6.0f}% {b * 1e3:11.1f} "
                  f"{100 * flops / b / peak:6.0f}% {a / b:12.2f}")


if __name__ == "__main__":
    main()
