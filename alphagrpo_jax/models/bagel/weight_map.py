"""How release tensors (PyTorch names/layouts) map onto our NNX state, in both directions.

Each module file exports `weight_map(cfg, prefix) -> list[TensorMap]`; `checkpoint.py` streams tensors
through these maps. A TensorMap fills ONE array of our state from one or more release tensors:
`keys` is an object array whose shape is the leading (stacked) dims of our array, e.g. (2, L) for
(expert, layer)-stacked weights, or () for a plain tensor; `to_ours` turns one release tensor into the
matching slice of ours, `to_torch` is its exact inverse (export must round-trip bit for bit).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class TensorMap:
    path: tuple[str, ...]
    keys: np.ndarray
    to_ours: Transform
    to_torch: Transform

    @staticmethod
    def single(path, key: str, to_ours: Transform, to_torch: Transform) -> "TensorMap":
        return TensorMap(tuple(path), np.array(key, dtype=object), to_ours, to_torch)

    def all_keys(self) -> list[str]:
        return [str(k) for k in self.keys.reshape(-1)]


def identity() -> tuple[Transform, Transform]:
    return (lambda t: t), (lambda t: t)


def linear(in_shape: tuple[int, ...] | None = None, out_shape: tuple[int, ...] | None = None
           ) -> tuple[Transform, Transform]:
    """torch Linear weight [out, in] <-> our kernel [*in_shape, *out_shape] (default [in, out])."""

    def to_ours(w):
        k = w.T
        if in_shape is not None or out_shape is not None:
            k = k.reshape(tuple(in_shape or (w.shape[1],)) + tuple(out_shape or (w.shape[0],)))
        return k

    def to_torch(k):
        n_in = len(in_shape) if in_shape is not None else 1
        in_size = int(np.prod(k.shape[:n_in]))
        return k.reshape(in_size, -1).T

    return to_ours, to_torch


def reshape(ours_shape: tuple[int, ...], torch_shape: tuple[int, ...]) -> tuple[Transform, Transform]:
    """Pure reshape, e.g. a bias [heads*head_dim] <-> [heads, head_dim]."""
    return (lambda t: t.reshape(ours_shape)), (lambda t: t.reshape(torch_shape))


def conv2d() -> tuple[Transform, Transform]:
    """torch Conv2d weight OIHW <-> our HWIO."""
    return (lambda w: w.transpose(2, 3, 1, 0)), (lambda k: k.transpose(3, 2, 0, 1))


def stacked_keys(fmt: str, *dims: int) -> np.ndarray:
    """Object array of key names: `stacked_keys("layers.{i}.w", L)` -> shape (L,), i = 0..L-1.

    Several dims use {i}, {j}, {k} in order: `stacked_keys("{i}.{j}", 2, 3)` has shape (2, 3).
    """
    names = "ijk"
    out = np.empty(dims, dtype=object)
    for idx in np.ndindex(*dims):
        out[idx] = fmt.format(**{names[d]: v for d, v in enumerate(idx)})
    return out


class WeightMapError(ValueError):
    pass


def gather(m: TensorMap, read: Callable[[str], np.ndarray], shape: tuple[int, ...], dtype) -> np.ndarray:
    """Builds our array for `m` (host numpy, `dtype`) by reading its release tensors one at a time."""
    out = np.empty(shape, dtype=dtype)
    lead = m.keys.shape
    if tuple(shape[: len(lead)]) != tuple(lead):
        raise WeightMapError(f"{'/'.join(m.path)}: stacked dims {lead} do not match our shape {shape}")
    for idx in np.ndindex(*lead) if lead else [()]:
        key = str(m.keys[idx]) if lead else str(m.keys[()])
        t = m.to_ours(read(key))
        if tuple(t.shape) != tuple(shape[len(lead):]):
            raise WeightMapError(
                f"{key}: converted shape {tuple(t.shape)} does not match {'/'.join(m.path)} slice "
                f"{tuple(shape[len(lead):])}")
        out[idx] = t.astype(dtype)
    return out


def fill_state(state, maps: list[TensorMap], read: Callable[[str], np.ndarray]):
    """Host-side, unsharded fill of an nnx State from release tensors (tests and small models).

    `checkpoint.py` does the same per tensor straight into sharded device arrays for real models.
    """
    import jax.numpy as jnp
    from flax import nnx

    flat = dict(nnx.to_flat_state(state))
    covered = set()
    for m in maps:
        if m.path not in flat:
            raise WeightMapError(f"weight map names {'/'.join(m.path)}, which the model does not have")
        var = flat[m.path]
        v = var.get_value()
        var.set_value(jnp.asarray(gather(m, read, tuple(v.shape), np.dtype(v.dtype))))
        covered.add(m.path)
    missing = [("/".join(map(str, p))) for p in flat if p not in covered]
    if missing:
        raise WeightMapError(f"model arrays without a weight map entry: {missing}")
    return state
