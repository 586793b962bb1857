"""Shared grain plumbing: a random-access source -> host shard -> seeded shuffle -> epochs -> map -> batch.

    ds = build_dataset(source, batch_size=8, seed=0)      # grain.IterDataset
    it = iter(ds); batch = next(it)
    state = it.get_state()                               # small dict: save it with the model checkpoint
    it2 = iter(ds); it2.set_state(state)                 # continues with exactly the batches `it` would give

Sharding is by index, before shuffling: host i of n reads elements i, i+n, i+2n, ... (disjoint, and together
all of them), then shuffles its own shard with the shared seed. With `equal_shards` (default) the source is
first cut to a multiple of n so every host has the same number of elements and multi-host steps stay in
lock-step (at most n-1 elements unused). Each epoch is reshuffled (grain folds the epoch into the seed).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grain


def host_shard(shard_index: int | None = None, shard_count: int | None = None) -> tuple[int, int]:
    """(index, count) of this host's shard; missing values come from jax.process_index()/process_count()."""
    if shard_index is None or shard_count is None:
        import jax  # deferred: only needed for the defaults, keeps the data package light

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not (isinstance(shard_count, int) and shard_count >= 1 and isinstance(shard_index, int)
            and 0 <= shard_index < shard_count):
        raise ValueError(f"data/pipeline.py host shard: expected 0 <= shard_index < shard_count, got "
                         f"shard_index={shard_index!r}, shard_count={shard_count!r}")
    return shard_index, shard_count


def shard_dataset(source: Sequence[Any], shard_index: int | None = None, shard_count: int | None = None,
                  equal_shards: bool = True) -> grain.MapDataset:
    """This host's elements of `source` (anything with __len__ and __getitem__) as a MapDataset."""
    index, count = host_shard(shard_index, shard_count)
    ds = grain.MapDataset.source(source)
    n = len(ds) - len(ds) % count if equal_shards else len(ds)
    if n < count:
        raise ValueError(f"data/pipeline.py: {len(ds)} elements cannot feed {count} shards")
    return ds[index:n:count]


def build_dataset(source: Sequence[Any], *, batch_size: int, seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, transform: Callable[[Any], Any] | None = None,
                  batch_fn: Callable[[Sequence[Any]], Any] | None = None, drop_remainder: bool = True,
                  shard_index: int | None = None, shard_count: int | None = None, equal_shards: bool = True,
                  read_threads: int = 4) -> grain.IterDataset:
    """A checkpointable grain.IterDataset of batches.

    num_epochs: None = repeat forever. transform: applied to each element (in grain's reader threads).
    batch_fn: list of elements -> batch; None stacks pytrees of arrays/strings along a new first axis.
    drop_remainder: drop a last partial batch (only reachable with finite num_epochs).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"data/pipeline.py batch_size: expected an int >= 1, got {batch_size!r}")
    if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
        raise ValueError(f"data/pipeline.py num_epochs: expected None or an int >= 1, got {num_epochs!r}")
    ds = shard_dataset(source, shard_index, shard_count, equal_shards)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.map(transform)
    read = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=max(2 * batch_size, 8))
    return ds.to_iter_dataset(read).batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn)
