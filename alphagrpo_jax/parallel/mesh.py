"""Device mesh from config: axes (data, fsdp, tensor), one axis may be -1 (fill), DCN-aware for multi-slice.

Axis types are passed explicitly and are `Auto`: the model code stays free of per-op `out_sharding`
arguments and XLA's SPMD partitioner propagates shardings from the annotated params and the
`with_sharding_constraint`s on key activations (see `rules.constrain`). Explicit (sharding-in-types)
mode would force every einsum in the model to name its output sharding; we chose not to pay that.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")


class MeshError(ValueError):
    """The requested mesh does not fit the devices."""


def resolve_axis_sizes(sizes: Mapping[str, int], total: int, what: str = "mesh") -> tuple[int, ...]:
    """Resolves one `-1` axis so that the product equals `total`. Returns sizes in `AXES` order."""
    unknown = set(sizes) - set(AXES)
    if unknown:
        raise MeshError(f"{what}: unknown axis name(s) {sorted(unknown)}; the axes are {AXES}")
    shape = [int(sizes.get(a, 1)) for a in AXES]
    fills = [i for i, s in enumerate(shape) if s == -1]
    if len(fills) > 1:
        raise MeshError(f"{what}: at most one axis may be -1, got {dict(zip(AXES, shape))}")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshError(f"{what}: axis sizes must be positive or -1, got {dict(zip(AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if fills:
        if total % known:
            raise MeshError(
                f"{what}: {total} devices are not divisible by the fixed axes "
                f"{ {a: s for a, s in zip(AXES, shape) if s != -1} } (product {known})")
        shape[fills[0]] = total // known
    if math.prod(shape) != total:
        raise MeshError(
            f"{what}: axis sizes {dict(zip(AXES, shape))} multiply to {math.prod(shape)}, "
            f"but there are {total} devices")
    return tuple(shape)


def _num_slices(devices: Sequence[jax.Device]) -> int:
    return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(ici: Mapping[str, int], dcn: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh.

    Args:
      ici: axis sizes inside one slice (or on the only host/slice), e.g. {"data": 1, "fsdp": -1, "tensor": 1}.
      dcn: axis sizes across slices (multi-slice TPU); the product must equal the number of slices.
      devices: defaults to `jax.devices()`.
    """
    devices = list(jax.devices() if devices is None else devices)
    n_slices = _num_slices(devices)
    dcn = dict(dcn or {})
    dcn_shape = resolve_axis_sizes(dcn, n_slices, "mesh_dcn") if (dcn or n_slices > 1) else (1,) * len(AXES)
    per_slice = len(devices) // n_slices
    ici_shape = resolve_axis_sizes(ici, per_slice, "mesh")
    if n_slices > 1:
        arr = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    else:
        try:
            arr = mesh_utils.create_device_mesh(ici_shape, devices)
        except (AssertionError, ValueError, NotImplementedError):
            # Physical-topology-aware placement is not defined for every shape (e.g. CPU or odd splits).
            arr = np.asarray(devices).reshape(ici_shape)
    return Mesh(arr, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def mesh_from_config(config) -> Mesh:
    """`config.mesh` (ICI sizes) and optional `config.mesh_dcn` (across slices)."""
    dcn = config.get("mesh_dcn", None) if hasattr(config, "get") else None
    return make_mesh(dict(config.mesh), dict(dcn) if dcn else None)


def describe(mesh: Mesh) -> str:
    return " x ".join(f"{n}={s}" for n, s in mesh.shape.items()) + f" ({mesh.size} devices)"
