"""The toy world's RL prompt files: each split's prompt set (prompts.prompt_set) decomposed into exact DVReward
records, written as JSONL (data/prompts.py)."""
from __future__ import annotations

import os

from alphagrpo_jax import paths
from alphagrpo_jax.data.prompts import write_prompt_file
from alphagrpo_jax.toy import prompts
from alphagrpo_jax.toy.decompose import decompose


def write_prompt_files(out_dir: str | os.PathLike, train_per_category: int | None, eval_per_category: int | None,
                       seed: int) -> dict[str, str]:
    """DIR/prompts/{train,eval}.jsonl (None per category = every prompt of the split); `original_index` numbers
    the records of each file from 0."""
    files = {}
    for split, per in (("train", train_per_category), ("eval", eval_per_category)):
        specs = prompts.prompt_set(split, per, seed)
        files[split] = paths.join(out_dir, "prompts", f"{split}.jsonl")
        write_prompt_file(files[split], (decompose(s, i) for i, s in enumerate(specs)))
    return files
