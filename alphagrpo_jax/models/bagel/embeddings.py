"""BAGEL's timestep embedder and frozen 2-D sin-cos position tables (spec §4), with their weight maps.

- `timestep_frequencies(t)`: DiT features cat(cos(t f), sin(t f)) [..., 256], t in [0, 1] as given (BAGEL does
  NOT scale t by 1000).
- `TimestepEmbedder`: Linear(256 -> hidden) -> SiLU -> Linear(hidden -> hidden) (release `time_embedder.mlp.{0,2}`).
- `sincos_2d_table` / `PositionTable`: the MAE/DiT table [S*S, dim], flat index row*S + col; dims [0, dim/2)
  encode the column (sin then cos), dims [dim/2, dim) the row. Release checkpoints store both tables
  (`latent_pos_embed.pos_embed` 64x64, `vit_pos_embed.pos_embed` 70x70) bf16-rounded, and official inference
  uses those stored values, so the tables are loaded by the weight map rather than recomputed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import weight_map as wm

FREQUENCY_DIM = 256
MAX_PERIOD = 10_000.0


def timestep_frequencies(t: jax.Array, dim: int = FREQUENCY_DIM) -> jax.Array:
    """t [...] (float, flow time in [0, 1]) -> [..., dim] float32: cat(cos(t f_k), sin(t f_k)).

    f_k = exp(-ln(1e4) k / (dim/2)), k = 0..dim/2-1; computed in fp32 like upstream.
    """
    if dim % 2:
        raise ValueError(f"embeddings.timestep_frequencies: dim must be even, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(MAX_PERIOD) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
    """t [...] -> [..., hidden] in `dtype`. `fc_in` = release mlp.0, `fc_out` = release mlp.2."""

    def __init__(self, hidden: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, dtype=jnp.float32):
        self.dtype = jnp.dtype(dtype)
        self.fc_in = layers.Dense(FREQUENCY_DIM, hidden, ("freq", "mlp"), rngs=rngs, param_dtype=param_dtype)
        self.fc_out = layers.Dense(hidden, hidden, ("mlp", "embed"), rngs=rngs, param_dtype=param_dtype)

    def __call__(self, t: jax.Array) -> jax.Array:
        h = self.fc_in(timestep_frequencies(t), dtype=jnp.float32)
        return self.fc_out(jax.nn.silu(h).astype(self.dtype), dtype=self.dtype)


def sincos_2d_table(dim: int, grid_size: int) -> np.ndarray:
    """[grid_size**2, dim] float32 (computed in float64). Row k = r*S + c holds cat(E(c), E(r)), where
    E(p) = cat(sin(p w), cos(p w)), w_i = 1e4^(-i / (dim/4)), i = 0..dim/4-1."""
    if dim % 4:
        raise ValueError(f"embeddings.sincos_2d_table: dim must be a multiple of 4, got {dim}")
    if grid_size < 1:
        raise ValueError(f"embeddings.sincos_2d_table: grid_size must be >= 1, got {grid_size}")
    quarter = dim // 4
    omega = 1.0 / MAX_PERIOD ** (np.arange(quarter, dtype=np.float64) / quarter)
    pos = np.arange(grid_size, dtype=np.float64)
    rows, cols = np.meshgrid(pos, pos, indexing="ij")

    def one_axis(p):
        out = p.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_axis(cols), one_axis(rows)], axis=1).astype(np.float32)


class PositionTable(nnx.Module):
    """Frozen table `pos_embed` [S*S, dim] (axes ("table", "embed")); `__call__(pos_ids [...]) -> [..., dim]`.

    Initialised with `sincos_2d_table`; a checkpoint load overwrites it with the release's stored values.
    Ids outside [0, S*S) give NaN rows (jnp.take's fill mode): a grid larger than the table fails loudly
    instead of being clamped onto wrong positions.
    """

    def __init__(self, num_per_side: int, dim: int, *, param_dtype=jnp.float32, dtype=None):
        self.num_per_side = num_per_side
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        self.pos_embed = layers.Frozen(jnp.asarray(sincos_2d_table(dim, num_per_side), param_dtype),
                                       axes=("table", "embed"))

    def __call__(self, pos_ids: jax.Array) -> jax.Array:
        rows = jnp.take(self.pos_embed[...], pos_ids, axis=0, mode="fill", fill_value=jnp.nan)
        return rows if self.dtype is None else rows.astype(self.dtype)


# ------------------------------------------------------------------------------------------------ weight maps

def shape_checked(name: str, torch_shape: tuple[int, ...], pair: tuple[wm.Transform, wm.Transform]):
    """Wraps a (to_ours, to_torch) pair so that a release tensor of the wrong shape is a clear error.

    (Shared with vit.py; a candidate for weight_map.py.)
    """
    to_ours, to_torch = pair

    def check(t):
        if tuple(t.shape) != tuple(torch_shape):
            raise wm.WeightMapError(f"{name}: release tensor has shape {tuple(t.shape)}, expected {torch_shape}")
        return to_ours(t)

    return check, to_torch


def time_embedder_weight_map(hidden: int, prefix: Sequence[str], release_prefix: str = "time_embedder."
                             ) -> list[wm.TensorMap]:
    """`time_embedder.mlp.0` [hidden, 256] / `mlp.2` [hidden, hidden] (+ biases) -> our TimestepEmbedder."""
    p = tuple(prefix)
    out = []
    for ours, theirs, n_in in (("fc_in", "mlp.0", FREQUENCY_DIM), ("fc_out", "mlp.2", hidden)):
        key = f"{release_prefix}{theirs}"
        out.append(wm.TensorMap.single(p + (ours, "kernel"), key + ".weight",
                                       *shape_checked(key + ".weight", (hidden, n_in), wm.linear())))
        out.append(wm.TensorMap.single(p + (ours, "bias"), key + ".bias",
                                       *shape_checked(key + ".bias", (hidden,), wm.identity())))
    return out


def position_table_weight_map(key: str, num_per_side: int, dim: int, prefix: Sequence[str]
                              ) -> list[wm.TensorMap]:
    """A stored sin-cos table `key` [S*S, dim] -> our PositionTable at `prefix`."""
    return [wm.TensorMap.single(tuple(prefix) + ("pos_embed",), key,
                                *shape_checked(key, (num_per_side ** 2, dim), wm.identity()))]


def weight_map(hidden: int, *, max_latent_size: int, vit_max_per_side: int, prefix_time: Sequence[str],
               prefix_latent_pos: Sequence[str], prefix_vit_pos: Sequence[str]) -> list[wm.TensorMap]:
    """All three bridges of this file: time_embedder, latent_pos_embed, vit_pos_embed (NNX prefixes given)."""
    return (time_embedder_weight_map(hidden, prefix_time)
            + position_table_weight_map("latent_pos_embed.pos_embed", max_latent_size, hidden, prefix_latent_pos)
            + position_table_weight_map("vit_pos_embed.pos_embed", vit_max_per_side, hidden, prefix_vit_pos))
