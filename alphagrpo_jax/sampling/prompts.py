"""The texts that steer the model: think-mode system prompts and the SRR reflection request (docs/prompts.md).

Every default here is this project's own wording. A checkpoint behaves best with the exact strings it was trained
with, so each is settable: `prompts.think_system` / `prompts.reflection` in a training config, and
`--think-system-prompt` / `--reflection-prompt` of `generate`. A setting is the text itself or `file:PATH` (the
file's text, one trailing newline dropped; local or gs://). `<think>` is plain text, not a special token.
"""
from __future__ import annotations

from alphagrpo_jax import paths

GEN_THINK_SYSTEM_PROMPT = (
    "Before drawing, plan the picture: write the plan between <think> and </think>, then make the image that "
    "follows it.")

VLM_THINK_SYSTEM_PROMPT = (
    "Before answering, work the question out: write that reasoning between <think> and </think>, then give the "
    "answer.")

# `{prompt}` is replaced by the user's request.
REFLECTION_PROMPT = (
    "You were asked to draw: {prompt}. Your image above does not match this request. Reflect on what went wrong, "
    "then write an instruction to edit the image so that it matches.")

FILE_PREFIX = "file:"
# Config keys that hold prompt texts (text or file:PATH; "" = the default).
CONFIG_KEYS = ("prompts.think_system", "prompts.reflection", "reward.verifier_system_prompt")


class PromptError(ValueError):
    pass


def prompt_text(value: str | None, where: str) -> str | None:
    """The text of a prompt setting: None for unset ("" or None), the file's text for `file:PATH`, else `value`.
    `where` names the setting in errors (e.g. "prompts.reflection")."""
    if not value:
        return None
    if not value.startswith(FILE_PREFIX):
        return value
    path = value[len(FILE_PREFIX):]
    if not paths.exists(path):
        raise PromptError(f"{where}: prompt file {path!r} not found (expected text or file:PATH)")
    text = paths.read_text(path)
    text = text[:-1] if text.endswith("\n") else text
    if not text.strip():
        raise PromptError(f"{where}: prompt file {path!r} is empty")
    return text


def check_reflection_template(template: str, where: str = "prompts.reflection") -> str:
    if "{prompt}" not in template:
        raise PromptError(f"{where}: the reflection prompt must contain {{prompt}} (where the request goes), "
                          f"got {template[:80]!r}")
    return template


def think_system_prompt(cfg) -> str:
    """The think-mode system prompt of a model (BagelConfig): its `think_system_prompt` (a setting, or what the
    release records in `bagel_config.json`, e.g. the toy base's), else this project's default."""
    return GEN_THINK_SYSTEM_PROMPT if cfg.think_system_prompt is None else cfg.think_system_prompt


def reflection_prompt(prompt: str, template: str = REFLECTION_PROMPT) -> str:
    """Self-Reflective Refinement's request: it follows the model's own image in the context, tells it the image
    did not satisfy the request, and asks for a reflection and an editing instruction before the redraw."""
    return check_reflection_template(template).replace("{prompt}", prompt)


def resolve_config_prompts(config) -> None:
    """Replaces every `file:PATH` prompt setting of a training config (CONFIG_KEYS present in it) by the file's
    text, so the run's config snapshot records the strings used; checks the reflection template."""
    for key in CONFIG_KEYS:
        section, name = key.split(".")
        if section in config and name in config[section]:
            text = prompt_text(config[section][name], key)
            if text is not None:
                config[section][name] = text
    if "prompts" in config and config.prompts.get("reflection"):
        check_reflection_template(config.prompts.reflection)
