"""Named decomposers: prompt text -> its DVReward question set (`QuestionSet`), for programs that need a
prompt's questions without a records file (`generate --refine --questions NAME`). Plug-ins register theirs
(the toy world: "toy", the exact toy decomposer)."""
from __future__ import annotations

from collections.abc import Callable

from alphagrpo_jax.reward.records import QuestionSet

Decomposer = Callable[[str], QuestionSet]
DECOMPOSERS: dict[str, Decomposer] = {}


def register_decomposer(name: str):
    """Decorator: registers `fn(prompt) -> QuestionSet` as decomposer `name`."""
    def deco(fn: Decomposer) -> Decomposer:
        DECOMPOSERS[name] = fn
        return fn
    return deco
