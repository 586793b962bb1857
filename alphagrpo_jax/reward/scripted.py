"""Programmatic stand-ins for the LLMs, as handlers for `openai_server.OpenAIServer`.

- `decomposer_chat(decompose)`: answers the decomposition conversation (decompose_prompts.py) from a function
  `decompose(prompt) -> QuestionSet`, so `python -m alphagrpo_jax.reward.decompose` reproduces its records.
- `records_decomposer(records)`: such a function backed by existing question sets (looked up by prompt).
- `constant_verifier(p)`: `answer(question, image) -> p` for every question.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

from PIL import Image

from alphagrpo_jax.reward import decompose_prompts as dp
from alphagrpo_jax.reward.records import QuestionSet


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            try:
                dp.parse_user_message(m["content"])
            except ValueError:
                continue  # a re-ask message; the request it refers to comes earlier
            return m["content"]
    raise ValueError("no decomposition request among the user messages")


def decomposer_chat(decompose: Callable[[str], QuestionSet]) -> Callable[[list[dict[str, Any]]], str]:
    """A text handler that answers each decomposition stage from `decompose(prompt)` (memoised per prompt)."""
    cached = functools.lru_cache(maxsize=4096)(decompose)

    def chat(messages: list[dict[str, Any]]) -> str:
        stage, fields = dp.parse_user_message(_last_user_text(messages))
        rec = cached(fields["prompt"])
        by_text = {q.question: q for q in rec.semantic}
        if stage == dp.QUESTIONS:
            return json.dumps({"questions": [q.question for q in rec.semantic]})
        if stage in (dp.VALIDATE, dp.TAG):
            q = by_text.get(fields["question"])
            if stage == dp.VALIDATE:
                return json.dumps({"reason": "scripted", "is_valid": bool(q is not None and q.is_valid)})
            return json.dumps({"reason": "scripted", "tag": q.tag if q is not None and q.tag else "Existence"})
        return json.dumps({"quality_questions": [{"question": q.question, "tag": q.tag} for q in rec.quality]})

    return chat


def records_decomposer(records: Iterable[QuestionSet]) -> Callable[[str], QuestionSet]:
    table = {r.prompt: r for r in records}

    def decompose(prompt: str) -> QuestionSet:
        if prompt not in table:
            raise KeyError(f"no question set for prompt {prompt[:60]!r}")
        return table[prompt]

    return decompose


def constant_verifier(p_yes: float) -> Callable[[str, Image.Image], float]:
    if not 0.0 <= p_yes <= 1.0:
        raise ValueError(f"p_yes must be in [0, 1], got {p_yes}")
    return lambda question, image: p_yes
