"""Host <-> global-array plumbing for multi-process (multi-controller) runs.

In a multi-host job every process runs the same jitted programs on global `jax.Array`s, but a process can only
read the shards on its own devices. The rollout/reward loop therefore needs three things:

- `to_host(x)`: the full value of a (small) global array on every process (an all-gather when some shards live
  on other hosts; a plain device-to-host copy on one host).
- `local_rows(x)`: this process's rows of a batch-sharded array (e.g. the decoded images it scores), without
  moving anything between hosts.
- `allgather_rows` / `allgather_items`: assemble per-process results (rewards, texts, per-sample info) on every
  process.

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


def row_ids(x: jax.Array) -> np.ndarray:
    """Sorted indices along axis 0 of the rows of `x` stored on this process's devices."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.arange(x.shape[0])
    rows = set()
    for shard in x.addressable_shards:
        rows.update(range(x.shape[0])[shard.index[0]] if shard.index else range(x.shape[0]))
    return np.array(sorted(rows), np.int64)


def local_rows(x) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, values [len(ids), ...]) of this process's rows of `x` (no communication)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        v = np.asarray(x)
        return np.arange(v.shape[0]), v
    ids = row_ids(x)
    out = np.empty((len(ids),) + x.shape[1:], x.dtype)
    pos = {r: i for i, r in enumerate(ids)}
    for shard in x.addressable_shards:
        rows = range(x.shape[0])[shard.index[0]] if shard.index else range(x.shape[0])
        data = np.asarray(shard.data)
        for j, r in enumerate(rows):
            out[pos[r]] = data[j]
    return ids, out


def allgather_rows(ids: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Every process's rows assembled into [n, ...] on every process. Each row must come from exactly one
    process (a clear error otherwise: the batch layout put one sample on two hosts, or on none)."""
    values = np.asarray(values)
    if jax.process_count() == 1:
        got = np.asarray(ids)
        if sorted(got.tolist()) != list(range(n)):
            raise HostLayoutError(f"rows {got.tolist()} do not cover 0..{n - 1} exactly once")
        out = np.empty((n,) + values.shape[1:], values.dtype)
        out[got] = values
        return out
    all_ids = np.asarray(multihost_utils.process_allgather(np.asarray(ids, np.int64)))   # [H, k]
    all_vals = np.asarray(multihost_utils.process_allgather(values))                      # [H, k, ...]
    flat_ids = all_ids.reshape(-1)
    if sorted(flat_ids.tolist()) != list(range(n)):
        raise HostLayoutError(f"process rows {all_ids.tolist()} do not cover 0..{n - 1} exactly once")
    out = np.empty((n,) + values.shape[1:], values.dtype)
    out[flat_ids] = all_vals.reshape((-1,) + values.shape[1:])
    return out


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


def take_rows(x, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` of `x` as numpy: read from this process's devices when they hold them (the usual layout,
    where process h's devices hold batch block h), else all-gathered first."""
    ids, values = local_rows(x)
    pos = {int(r): i for i, r in enumerate(ids)}
    if all(int(r) in pos for r in rows):
        return values[[pos[int(r)] for r in rows]]
    return to_host(x)[rows]


def zeros(shape: tuple[int, ...], dtype, sharding) -> jax.Array:
    """A global array of zeros created shard by shard (never whole on one host)."""
    return jax.make_array_from_callback(
        shape, sharding, lambda idx: np.zeros([len(range(s)[i]) for s, i in zip(shape, idx)], dtype))


def allgather_items(rows: np.ndarray, items: Sequence, n: int) -> list:
    """Like allgather_rows, for per-row JSON-able Python values (texts, info dicts)."""
    if jax.process_count() == 1:
        out: list = [None] * n
        for r, v in zip(np.asarray(rows).tolist(), items):
            out[r] = v
        return out
    packed = json.dumps({"rows": np.asarray(rows).tolist(), "items": list(items)})
    out = [None] * n
    seen = 0
    for proc in allgather_strings([packed]):
        d = json.loads(proc[0])
        for r, v in zip(d["rows"], d["items"]):
            out[r] = v
            seen += 1
    if seen != n:
        raise HostLayoutError(f"processes returned {seen} rows for a batch of {n}")
    return out
