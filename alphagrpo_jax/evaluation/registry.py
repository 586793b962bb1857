"""The benchmark registry and what a benchmark is.

    @register("geneval")
    class GenEval(Benchmark): ...
    bench = get("geneval")            # an instance; UsageError naming the known ones for an unknown name

A benchmark reads the user's copy of its official prompt files into `Item`s (`read`), names the files one
item's images go to in the official layout (`outputs`) and writes them (`write`); benchmarks with a VLM judge
also score (`judge`) and aggregate with the official formulas (`aggregate`).
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from alphagrpo_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Item:
    """One prompt of a benchmark. `index`: its position in the whole prompt set (seeds derive from it);
    `key`: its id in the benchmark's own terms (unique; names its manifest row); `dimension`: the row of the
    per-dimension tables; `source`: the input image of an editing item (encoded PNG/JPEG bytes)."""
    index: int
    key: str
    prompt: str
    dimension: str
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: bytes | None = None


class Benchmark(abc.ABC):
    """Base class: subclasses set `name`, `images_per_prompt`, `variants` (first = default) and implement
    `read`, `outputs`, `write`; judge benchmarks also `judge` and `aggregate`."""
    name = ""
    images_per_prompt = 1
    max_images_per_prompt: int | None = 1  # what the layout can hold (None: any number)
    needs_data = True       # reads the user's copy of the official prompt files (config.data)
    variants: tuple[str, ...] = ("",)
    editing = False
    judged = False          # scores through a VLM judge endpoint
    transform = "bagel"     # input-image resize rules of the pipeline ("toy": the toy world's)

    def check_variant(self, variant: str) -> str:
        variant = variant or self.variants[0]
        if variant not in self.variants:
            raise UsageError(f"config.variant: {self.name} has variants {list(self.variants)}, got {variant!r}")
        return variant

    @abc.abstractmethod
    def read(self, data: str, variant: str) -> list[Item]:
        ...

    @abc.abstractmethod
    def outputs(self, out: str, item: Item, variant: str, model_name: str) -> list[str]:
        """Every file `write` makes for `item` (all present = the item is done)."""
        ...

    @abc.abstractmethod
    def write(self, out: str, item: Item, images: Sequence[np.ndarray], variant: str, model_name: str) -> None:
        ...

    def template_names(self, variant: str) -> tuple[str, ...]:
        """The judge templates (evaluation/templates.py) this benchmark's judge uses."""
        return ()

    def judge(self, out: str, items: Sequence[Item], rows: Sequence[dict], variant: str, model_name: str,
              ask: Callable, templates: dict[str, str]) -> list[dict]:
        """Per-item score rows (each with `key`, `dimension` and the scores), in `items` order."""
        raise UsageError(f"config.judge: {self.name} has no judge protocol here (see docs/evaluation.md)")

    def write_scores(self, out: str, scores: Sequence[dict], variant: str, model_name: str) -> None:
        """Writes the official scorer's score file(s) from every judged item's row (if it has a whole-set file)."""

    def aggregate(self, scores: Sequence[dict], variant: str) -> dict[str, float]:
        raise UsageError(f"config.judge: {self.name} has no judge protocol here, so nothing to aggregate "
                         "(see docs/evaluation.md)")


_REGISTRY: dict[str, type[Benchmark]] = {}


def register(name: str):
    def wrap(cls: type[Benchmark]) -> type[Benchmark]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"benchmark {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Benchmark:
    if name not in _REGISTRY:
        raise UsageError(f"config.benchmark: unknown benchmark {name!r}; known: {sorted(_REGISTRY)} (the toy "
                         "benchmark needs config.plugins to name 'alphagrpo_jax.toy.plugin')")
    return _REGISTRY[name]()
