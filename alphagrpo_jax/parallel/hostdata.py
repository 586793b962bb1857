"""Host <-> global-array plumbing for multi-process (multi-controller) runs.

In a multi-host job every process runs the same jitted programs on global `jax.Array`s, but a process can only
read the shards on its own devices. The rollout/reward loop therefore needs three things:

- `to_host(x)`: the full value of a (small) global array on every process (an all-gather when some shards live
  on other hosts; a plain device-to-host copy on one host).
- `read_block(x)`: this process's block of rows of a batch-sharded array (e.g. the decoded images it scores),
  without moving anything between hosts in the usual layout.
- `allgather_rows` / `allgather_items`: assemble per-process results (rewards, texts, per-sample info) on every
  process.
- `cpu_barrier(tree)`: waits for `tree` on XLA:CPU with several devices (nothing elsewhere), to bound how far the
  host runs ahead of a multi-device CPU run (see its docstring).

Single-process runs take the same code paths, which reduce to copies.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


class HostLayoutError(ValueError):
    pass


def to_host(x) -> np.ndarray:
    """The full value of `x` (a global jax.Array, or anything np.asarray takes) on every process."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def allgather_rows(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Every process's rows assembled into [n, ...] on every process. Each row must come from exactly one
    process (a clear error otherwise: the batch layout put one sample on two hosts, or on none)."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        all_ids, all_vals = np.asarray(ids, np.int64)[None], values[None]
    else:
        all_ids = np.asarray(multihost_utils.process_allgather(np.asarray(ids, np.int64)))   # [H, k]
        all_vals = np.asarray(multihost_utils.process_allgather(values))                      # [H, k, ...]
    flat_ids = all_ids.reshape(-1)
    _check_cover(flat_ids.tolist(), n, all_ids.tolist())
    out = np.empty((n,) + values.shape[1:], values.dtype)
    out[flat_ids] = all_vals.reshape((-1,) + values.shape[1:])
    return out


def _check_cover(rows: list[int], n: int, per_process) -> None:
    if sorted(rows) != list(range(n)):
        raise HostLayoutError(f"process rows {per_process} do not cover 0..{n - 1} exactly once")


def allgather_strings(items: Sequence[str]) -> list[list[str]]:
    """Each process's list of strings, in process order, on every process (lists may differ in length)."""
    if jax.process_count() == 1:
        return [list(items)]
    data = np.frombuffer(json.dumps(list(items)).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(gathered[h, : sizes[h]]).decode()) for h in range(len(sizes))]


def process_block(n: int) -> np.ndarray:
    """The rows [h*n/H, (h+1)*n/H) of a batch of n samples this process owns: it reads their images and scores
    them; per-row results are then all-gathered. With the usual device order (process h's devices hold batch
    block h) the reads stay on the host."""
    h, count = jax.process_index(), jax.process_count()
    if n % count:
        raise HostLayoutError(f"a batch of {n} samples cannot be split evenly over {count} processes; make "
                              f"prompts_per_round x group_size (and eval.batch_size) a multiple of {count}")
    k = n // count
    return np.arange(h * k, (h + 1) * k)


def read_block(x) -> np.ndarray:
    """This process's block of `x` (rows process_block(x.shape[0])) as numpy. Read from its own devices when
    every process's block lies on that process's devices (the usual layout); else all-gathered first. The
    choice comes from the sharding, which every process sees whole, so all processes take the same branch (the
    all-gather is a collective)."""
    rows = process_block(x.shape[0])
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)[rows]
    n, count = x.shape[0], jax.process_count()
    held: dict[int, set[int]] = {}
    for device, index in x.sharding.devices_indices_map(x.shape).items():
        held.setdefault(device.process_index, set()).update(range(n)[index[0]])
    if not all(set(range(p * n // count, (p + 1) * n // count)) <= held.get(p, set()) for p in range(count)):
        return to_host(x)[rows]
    out = np.empty((len(rows),) + x.shape[1:], x.dtype)
    for shard in x.addressable_shards:
        data = np.asarray(shard.data)
        for j, r in enumerate(range(n)[shard.index[0]]):
            if rows[0] <= r <= rows[-1]:
                out[r - rows[0]] = data[j]
    return out


def cpu_barrier(tree):
    """Blocks until `tree` is computed when this process runs XLA:CPU with more than one device; returns `tree`.

    XLA:CPU runs every partition of a multi-device program on one pool of max(cores, devices) threads, and the
    same threads wait to admit new executions once a device has 32 queued. A host that runs tens of programs ahead
    (eager ops after a long prefill) can leave a collective's partitions without a thread: the run deadlocks
    (seen with 8 simulated devices on 2 cores; docs/scaling.md). Code that dispatches chains of programs calls
    this at its phase ends. TPUs and GPUs keep running ahead."""
    if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
        jax.block_until_ready(tree)
    return tree


def zeros(shape: tuple[int, ...], dtype, sharding) -> jax.Array:
    """A global array of zeros created shard by shard (never whole on one host)."""
    return jax.make_array_from_callback(
        shape, sharding, lambda idx: np.zeros([len(range(s)[i]) for s, i in zip(shape, idx)], dtype))


def allgather_items(rows: np.ndarray, items: Sequence, n: int) -> list:
    """Like allgather_rows, for per-row JSON-able Python values (texts, info dicts)."""
    parts = [(np.asarray(rows).tolist(), list(items))]
    if jax.process_count() > 1:
        packed = json.dumps({"rows": parts[0][0], "items": parts[0][1]})
        parts = [(d["rows"], d["items"]) for d in (json.loads(p[0]) for p in allgather_strings([packed]))]
    out: list = [None] * n
    for proc_rows, proc_items in parts:
        for r, v in zip(proc_rows, proc_items):
            out[r] = v
    _check_cover([r for proc_rows, _ in parts for r in proc_rows], n, [r for r, _ in parts])
    return out
