"""Prompt sources: where a GRPO run's train and held-out prompt files come from (`config.data.prompt_source`).

    train_path, eval_path = sources.prompt_files(config)

"files" (built in): `config.data.train_prompts` / `config.data.eval_prompts`, JSONL question sets. A plug-in
registers its own source (the toy world's "toy" writes its prompt files into the workdir), a function
config -> (train path, eval path or "") that every process may call (it must be deterministic and atomic).
"""
from __future__ import annotations

from collections.abc import Callable

from alphagrpo_jax.errors import UsageError

PromptSource = Callable[[object], tuple[str, str]]
PROMPT_SOURCES: dict[str, PromptSource] = {}


def register_prompt_source(name: str):
    """Decorator: registers `fn(config) -> (train_path, eval_path)` as prompt source `name`."""
    def deco(fn: PromptSource) -> PromptSource:
        PROMPT_SOURCES[name] = fn
        return fn
    return deco


@register_prompt_source("files")
def _files(config) -> tuple[str, str]:
    if not config.data.train_prompts:
        raise UsageError("config.data.train_prompts: expected a JSONL prompt file, got ''")
    return config.data.train_prompts, config.data.eval_prompts


def prompt_files(config) -> tuple[str, str]:
    """(train, eval) JSONL prompt files of the config's prompt source (eval "" = no held-out set)."""
    name = config.data.prompt_source
    if name not in PROMPT_SOURCES:
        raise UsageError(f"config.data.prompt_source: expected one of {sorted(PROMPT_SOURCES)}, got {name!r} "
                         "(a plug-in's source needs its module in config.plugins)")
    return PROMPT_SOURCES[name](config)
