"""SFT data sources: what `python -m alphagrpo_jax.sft` trains on, named by `config.data_source` and registered
by a plug-in (the toy world: "toy", toy/sft_source.py).

A source gives the SFT program everything that depends on the data: its settings (from `config.data`), the text
corpus its tokenizer is trained on, the tokenizer builder, the packed-batch dataset and the held-out eval. The
program itself (sft.py) knows only the model, the objective, checkpoints and the export.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from alphagrpo_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class SFTSource:
    """kinds: example kinds counted per batch (`kind_counts`, logged as examples/<kind>).
    settings(config.data) -> the source's settings; they have `rows`, `max_vae_per_row`, `max_vit_per_row`
        (per-host batch layout) and `system_prompt` (recorded in the exported release).
    corpus(seed, num_examples, settings) -> texts the tokenizer is trained on.
    build_tokenizer(folder, texts, vocab_size) writes a tokenizer folder (deterministic in the texts).
    dataset(model_cfg, settings, encode, seed) -> checkpointable iterable of host batches
        {batch, image_id, kind_counts, tokens} (data/pipeline.py).
    evaluate(release, config.eval, seed) -> (metrics, sample grid uint8 [H, W, 3]).
    generation(config.eval) -> the exported release's generation_config.json settings (a dict of
        sampling/generation_config.py's keys: the sizes, steps, CFG and transform its eval samples with)."""
    kinds: tuple[str, ...]
    settings: Callable[[dict], Any]
    corpus: Callable[[int, int, Any], Sequence[str]]
    build_tokenizer: Callable[[str, Sequence[str], int], Any]
    dataset: Callable[..., Any]
    evaluate: Callable[[Any, Any, int], tuple[dict, Any]]
    generation: Callable[[Any], dict] | None = None


SFT_SOURCES: dict[str, SFTSource] = {}


def register_sft_source(name: str, source: SFTSource) -> None:
    SFT_SOURCES[name] = source


def get(name: str) -> SFTSource:
    if name not in SFT_SOURCES:
        raise UsageError(f"config.data_source: expected one of {sorted(SFT_SOURCES)}, got {name!r} (a plug-in's "
                         "source needs its module in config.plugins)")
    return SFT_SOURCES[name]
