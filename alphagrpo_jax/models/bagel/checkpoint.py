"""Release checkpoints (`ema.safetensors`, `ae.safetensors`) <-> sharded NNX state, and Orbax caches.

Loading streams tensor by tensor: each of our arrays is assembled on the host from the release tensors its
devices need (memory-mapped, so only touched pages are read) and placed with `jax.make_array_from_callback`
straight into its `NamedSharding`; peak extra host memory is one (stacked) array, never a second model copy.
On multi-host each process reads only the (layer, expert) slices that its addressable devices hold.
Every expected name must be present with a matching shape, and every tensor in the file must be used;
all problems are reported together. A file with a `<file>.sha256` beside it (every file this project writes has
one) is checked against it first (one sequential read of the file), and every loaded floating-point array must be
finite (the error names the first release tensor holding a NaN or an infinity).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from alphagrpo_jax.models.bagel import safetensors_io
from alphagrpo_jax.models.bagel.weight_map import TensorMap
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.parallel import state as state_lib


class CheckpointError(ValueError):
    pass


def _path_str(path) -> str:
    return "/".join(str(p) for p in path)


def check_maps(maps: Sequence[TensorMap], abstract_state, f: safetensors_io.SafetensorsFile) -> None:
    """Raises CheckpointError listing missing/unexpected tensors and shape mismatches (no data is read)."""
    flat = dict(nnx.to_flat_state(abstract_state))
    problems, used = [], set()
    covered = set()
    for m in maps:
        if m.path not in flat:
            problems.append(f"weight map names {_path_str(m.path)}, which the model does not have")
            continue
        covered.add(m.path)
        shape = tuple(flat[m.path].get_value().shape)
        lead = m.keys.shape
        if shape[: len(lead)] != lead:
            problems.append(f"{_path_str(m.path)}: stacked dims {lead} vs model shape {shape}")
            continue
        for key in m.all_keys():
            used.add(key)
            if key not in f:
                problems.append(f"missing tensor {key!r}")
                continue
            probe = np.broadcast_to(np.zeros((), np.uint8), f.shape(key))
            got = tuple(m.to_ours(probe).shape)
            if got != shape[len(lead):]:
                problems.append(f"{key!r}: shape {f.shape(key)} converts to {got}, model expects "
                                f"{shape[len(lead):]} for {_path_str(m.path)}")
    for path in flat:
        if path not in covered and getattr(flat[path].get_value(), "ndim", 0) > 0:
            problems.append(f"model array {_path_str(path)} has no release tensor")
    unexpected = sorted(set(f.keys()) - used)
    if unexpected:
        problems.append(f"unexpected tensors in the file: {unexpected}")
    if problems:
        raise CheckpointError(f"{f.path}: checkpoint does not match the model:\n  " + "\n  ".join(problems))


def _assemble(m: TensorMap, f: safetensors_io.SafetensorsFile, shape, dtype,
              sharding: NamedSharding) -> tuple[jax.Array, list[tuple[int, ...]]]:
    """One of our arrays, reading only the stacked (layer, expert) slices this process's devices hold; and the
    indices of those slices (into `m.keys`)."""
    lead = m.keys.shape
    needed: set[tuple[int, ...]] = set()
    for idx in sharding.addressable_devices_indices_map(shape).values():
        needed.update(itertools.product(*(range(*s.indices(n)) for s, n in zip(idx[: len(lead)], lead))))
    buf = np.empty(shape, dtype)  # untouched pages cost nothing: only the needed slices are filled
    for k in sorted(needed):
        buf[k] = m.to_ours(f[str(m.keys[k])]).astype(dtype)
    return jax.make_array_from_callback(shape, sharding, lambda idx: buf[idx]), sorted(needed)


@jax.jit
def _finite(arrays) -> jax.Array:
    """[len(arrays)] bool: each array holds only finite values (one program for a whole release)."""
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays])


def _check_finite(f: safetensors_io.SafetensorsFile, loaded) -> None:
    """`loaded`: [(TensorMap, array, slice indices)] of the floating-point arrays; raises on the first map whose
    array holds a NaN or an infinity, naming its first such release tensor."""
    if not loaded:
        return
    for ok, (m, _, needed) in zip(np.asarray(_finite([arr for _, arr, _ in loaded])), loaded):
        if not ok:
            bad = next((str(m.keys[k]) for k in needed
                        if not np.isfinite(np.asarray(f[str(m.keys[k])], np.float32)).all()), _path_str(m.path))
            raise CheckpointError(f"{f.path}: tensor {bad!r} holds non-finite values (NaN or inf); expected finite "
                                  "weights (a damaged or diverged release)")


def load_state(make_module: Callable[[], nnx.Module], maps: Sequence[TensorMap], path: str, mesh: Mesh,
               rules=rules_lib.DEFAULT_RULES, progress: Callable | None = None, key=None):
    """Builds (graphdef, state) of `make_module()` with every array read from the safetensors file `path`.
    `key`: the module's structure key (parallel.state.abstract_state)."""
    f = safetensors_io.SafetensorsFile(path)
    safetensors_io.verify_checksum(path)
    graphdef, abstract = state_lib.abstract_state(make_module, key)
    check_maps(maps, abstract, f)
    shardings = rules_lib.state_shardings(abstract, mesh, rules)
    flat_abs = dict(nnx.to_flat_state(abstract))
    flat_sh = dict(jax.tree_util.tree_flatten_with_path(
        shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0])
    sh_by_path = {tuple(getattr(p, "key", p) for p in k): v for k, v in flat_sh.items()}
    inexact = []
    for i, m in enumerate(maps):
        var = flat_abs[m.path]
        v = var.get_value()
        arr, needed = _assemble(m, f, tuple(v.shape), np.dtype(v.dtype), sh_by_path[m.path])
        var.set_value(arr)
        if jnp.issubdtype(arr.dtype, jnp.inexact):
            inexact.append((m, arr, needed))
        if progress:
            progress(i + 1, len(maps), _path_str(m.path))
    _check_finite(f, inexact)
    return graphdef, abstract


def export_state(state, maps: Sequence[TensorMap], path: str, dtype: str | None = "bfloat16",
                 metadata: dict[str, str] | None = None) -> None:
    """Writes `state` back to a release-layout safetensors file (one tensor in memory at a time).

    `dtype` casts every tensor (the release is bf16; None keeps each array's dtype).
    """
    flat = dict(nnx.to_flat_state(state))
    sources: dict[str, tuple[TensorMap, tuple]] = {}
    entries = []
    for m in maps:
        var = flat[m.path]
        arr = var.get_value()
        lead = m.keys.shape
        for k in (np.ndindex(*lead) if lead else [()]):
            key = str(m.keys[k])
            probe = np.broadcast_to(np.zeros((), np.uint8), tuple(arr.shape[len(lead):]))
            out_dt = np.dtype(dtype) if dtype else np.dtype(arr.dtype)
            entries.append((key, tuple(m.to_torch(probe).shape), out_dt))
            sources[key] = (m, k)

    cache: dict[tuple, np.ndarray] = {}

    def produce(key: str) -> np.ndarray:
        m, k = sources[key]
        if m.path not in cache:
            cache.clear()  # keep one of our arrays on the host at a time
            cache[m.path] = np.asarray(jax.device_get(flat[m.path].get_value()))
        out = m.to_torch(cache[m.path][k])
        return out.astype(np.dtype(dtype)) if dtype else out

    # Group by our array so each is fetched once, whatever the file order.
    order = {key: i for i, (key, _, _) in enumerate(entries)}
    safetensors_io.write(path, sorted(entries, key=lambda e: order[e[0]]), produce, metadata)


def save_orbax(path: str, state) -> None:
    """Saves a converted state (local path or gs://) for fast reloads."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path) if "://" not in path else path
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, nnx.to_pure_dict(state))


def restore_orbax(path: str, make_module: Callable[[], nnx.Module], mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """Restores (graphdef, state) saved by `save_orbax` straight into the current mesh's shardings."""
    import orbax.checkpoint as ocp

    path = os.path.abspath(path) if "://" not in path else path
    graphdef, abstract = nnx.split(nnx.eval_shape(make_module))
    shardings = rules_lib.state_shardings(abstract, mesh, rules)
    target = jax.tree.map(
        lambda v, s: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s),
        nnx.to_pure_dict(abstract), nnx.to_pure_dict(shardings))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(path, target)
    nnx.replace_by_pure_dict(abstract, restored)
    return graphdef, abstract
