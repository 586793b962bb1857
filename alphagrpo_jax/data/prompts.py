"""Prompt sets for RL: JSONL files of DVReward records (reward/records.py format), read with grain.

    ds = prompt_dataset("prompts/train.jsonl", batch_size=8, seed=0)
    batch = next(iter(ds))            # list of 8 QuestionSet (prompt text + its questions + extra fields)
    ds = round_dataset("prompts/train.jsonl", prompts_per_round=8, seed=0)   # the GRPO trainer's rounds

A file is read once into memory (prompt files are small: ~1 kB per record) and validated as a whole, so a
bad line fails at start with `path:line` in the message rather than mid-training.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import grain

from alphagrpo_jax.data.pipeline import build_dataset
from alphagrpo_jax.reward.records import QuestionSet, read_records, write_records


class PromptRecords(Sequence):
    """Random-access view of a JSONL prompt file's records (a grain source)."""

    def __init__(self, path: str | os.PathLike, strict_tags: bool = False):
        self.path = os.fspath(path)
        self.records: list[QuestionSet] = read_records(self.path, strict_tags=strict_tags)
        if not self.records:
            raise ValueError(f"{self.path}: no prompt records (the file is empty)")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> QuestionSet:
        return self.records[index]

    def __repr__(self) -> str:
        return f"PromptRecords({self.path!r}, n={len(self)})"


def write_prompt_file(path: str | os.PathLike, records: Iterable[QuestionSet]) -> int:
    """Writes records as JSONL (atomically; parent folders created; local or gs://); returns how many."""
    records = list(records)
    write_records(path, records)
    return len(records)


def prompt_dataset(path_or_records: str | os.PathLike | Sequence[QuestionSet], *, batch_size: int, seed: int = 0,
                   shuffle: bool = True, num_epochs: int | None = None, drop_remainder: bool = True,
                   shard_index: int | None = None, shard_count: int | None = None,
                   equal_shards: bool = True) -> grain.IterDataset:
    """Batches (lists) of QuestionSet from a JSONL file (or an in-memory sequence of records); host-sharded,
    seeded and checkpointable as in data/pipeline.py."""
    source = (PromptRecords(path_or_records) if isinstance(path_or_records, (str, os.PathLike))
              else path_or_records)
    return build_dataset(source, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                         batch_fn=list, drop_remainder=drop_remainder, shard_index=shard_index,
                         shard_count=shard_count, equal_shards=equal_shards, read_threads=1)


def round_dataset(path_or_records: str | os.PathLike | Sequence[QuestionSet], *, prompts_per_round: int,
                  seed: int = 0) -> grain.IterDataset:
    """The GRPO trainer's rounds: one seeded shuffle of the whole prompt set (reshuffled each epoch) cut into
    lists of `prompts_per_round` records.

    Every process iterates the same rounds (a prompt file is small, and a round's samples are split over the
    processes by row, `parallel/hostdata.process_block`, so one prompt's group may span hosts). The sequence
    does not depend on the number of processes: a run on 2 hosts sees the same prompts as on 1 (tested), and a
    checkpoint resumes onto another host count with the same data order. Checkpointable."""
    if not isinstance(prompts_per_round, int) or prompts_per_round < 1:
        raise ValueError(f"data/prompts.py round_dataset: prompts_per_round must be an int >= 1, got "
                         f"{prompts_per_round!r}")
    source = (PromptRecords(path_or_records) if isinstance(path_or_records, (str, os.PathLike))
              else path_or_records)
    if len(source) < prompts_per_round:
        raise ValueError(f"data/prompts.py round_dataset: {len(source)} prompts cannot fill a round of "
                         f"{prompts_per_round}")
    ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat()
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1)).batch(prompts_per_round, drop_remainder=True)
    return ds.map(lambda idx: [source[int(i)] for i in idx])
