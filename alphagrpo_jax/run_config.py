"""How a run was made: the resolved config as readable YAML in `<workdir>/config.yaml`, read back and compared.

    run_config.record(config)                 # train, at start: check against a resumed run's, then write
    config = run_config.read(workdir)         # export / component_eval --workdir RUN: no retyped overrides
    run_config.check(run, given, where)       # ConfigMismatch (exit code 2): one line naming the differing keys

The YAML holds plain dicts, lists and scalars (sorted keys), nothing Python-specific. Keys that decide a
checkpoint's structure (STRUCTURE_KEYS) must match between a run and a config used on its checkpoints;
any other difference (e.g. total_steps on resume) is logged.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import ml_collections
import yaml

from alphagrpo_jax import paths
from alphagrpo_jax.models.bagel.config import from_release_dir
from alphagrpo_jax.reward.verifier import VERIFIER_SYSTEM_PROMPT
from alphagrpo_jax.sampling.prompts import (REFLECTION_PROMPT, PromptError, resolve_config_prompts,
                                            think_system_prompt)

log = logging.getLogger("alphagrpo_jax.run_config")

FILENAME = "config.yaml"

# Dotted key -> the value compared (None: the value itself). Keys of the trained state's shapes and semantics;
# the LoRA keys only when the run trains LoRA (see `structure`).
STRUCTURE_KEYS = {
    "model.release": lambda v: os.path.realpath(v) if v and not paths.is_remote(v) else v,
    "train.params": None,
    "optim.clip_norm": lambda v: float(v) > 0,  # clipping on/off changes the optimizer state's structure
}
LORA_PREFIX = "train.lora_"


class RunConfigError(SystemExit):
    """A usage error about a run's config: exit code 2, the message in str() (logged as one line where raised;
    SystemExit itself prints nothing)."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigMismatch(RunConfigError):
    """A config that cannot be used with a run's checkpoints."""


def _fail(err: RunConfigError):
    log.error("%s", err)
    raise err


def plain(value: Any) -> Any:
    """A ConfigDict (or nested dicts/sequences) as plain dicts, lists and scalars."""
    if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return value.item()
    return value


def to_yaml(config) -> str:
    return yaml.safe_dump(plain(config), sort_keys=True, default_flow_style=False, allow_unicode=True, width=100)


def _tuples(value):
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def from_yaml(text: str, where: str = FILENAME) -> ml_collections.ConfigDict:
    """The ConfigDict of `to_yaml`'s text (lists become tuples, as the config files write them)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    return ml_collections.ConfigDict(_tuples(data))


def path_in(workdir: str) -> str:
    return paths.join(workdir, FILENAME)


def write(config, workdir: str) -> str:
    """Writes `<workdir>/config.yaml` atomically (local or gs://); returns its path."""
    path = path_in(workdir)
    paths.write_text(path, to_yaml(config))
    return path


def read(workdir: str) -> ml_collections.ConfigDict:
    """The config `<workdir>/config.yaml` records (RunConfigError when there is none)."""
    path = path_in(workdir)
    if not paths.exists(path):
        _fail(RunConfigError(f"{path}: not found; --workdir must be a training run's workdir (train writes its "
                             f"config there at start)"))
    return from_yaml(paths.read_text(path), path)


def flatten(config) -> dict[str, Any]:
    """{dotted key: plain value} of every leaf."""
    out: dict[str, Any] = {}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", plain(config))
    return out


def structure(flat: dict[str, Any]) -> dict[str, Any]:
    """{key: compared value} of a flattened config's structure keys."""
    out = {k: (f(flat[k]) if f else flat[k]) for k, f in STRUCTURE_KEYS.items() if k in flat}
    if flat.get("train.params") == "lora":
        out.update({k: v for k, v in flat.items() if k.startswith(LORA_PREFIX)})
    return out


def differences(run, given) -> tuple[list[str], list[str]]:
    """(structure differences, other differences) as "key: run has X, given Y" strings, sorted by key."""
    a, b = flatten(run), flatten(given)
    sa, sb = structure(a), structure(b)
    missing = "(absent)"
    hard, soft = [], []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if (k in sa or k in sb) and sa.get(k, missing) != sb.get(k, missing):
            hard.append(f"{k}: run has {va!r}, given {vb!r}")
        elif va != vb:
            soft.append(f"{k}: run has {va!r}, given {vb!r}")
    return hard, soft


def check(run, given, where: str) -> list[str]:
    """Raises ConfigMismatch (logged as one line naming every differing structure key) unless `given` may be
    used with the checkpoints of the run whose config is `run`; logs and returns the other differences."""
    hard, soft = differences(run, given)
    if hard:
        _fail(ConfigMismatch(f"config mismatch with {where}: {'; '.join(hard)}"))
    if soft:
        log.info("config differs from %s (allowed): %s", where, "; ".join(soft))
    return soft


def has_checkpoints(workdir: str) -> bool:
    folder = paths.join(workdir, "checkpoints")
    return paths.isdir(folder) and bool(paths.listdir(folder))


def record(config, process_index: int = 0) -> None:
    """At the start of training: resolves prompt files into their text (the record holds the strings used),
    checks the config against the recorded one when `config.workdir` already has checkpoints (a resume), then
    (process 0) writes it."""
    try:
        resolve_config_prompts(config)
    except PromptError as e:
        _fail(RunConfigError(str(e)))
    _fill_default_prompts(config)
    workdir = config.workdir
    path = path_in(workdir)
    if paths.exists(path) and has_checkpoints(workdir):
        check(read(workdir), config, path)
    elif has_checkpoints(workdir):
        log.warning("%s has checkpoints but no %s: the config cannot be checked against them", workdir, FILENAME)
    if process_index == 0:
        write(config, workdir)


def _fill_default_prompts(config) -> None:
    """Empty prompt settings become the text the run will use (the release's recorded think prompt, else this
    project's defaults), so the record names every string even if a later version changes a default."""
    if "prompts" in config:
        if not config.prompts.get("think_system"):
            config.prompts.think_system = think_system_prompt(from_release_dir(config.model.release))
        if not config.prompts.get("reflection"):
            config.prompts.reflection = REFLECTION_PROMPT
    if "reward" in config and "verifier_system_prompt" in config.reward and not config.reward.verifier_system_prompt:
        config.reward.verifier_system_prompt = VERIFIER_SYSTEM_PROMPT


def resolve(workdir: str | None, given) -> ml_collections.ConfigDict:
    """The config of a program that works on a run's checkpoints (export, component_eval): the run's recorded
    config (`workdir`), or `given` (--config) checked against it when both are given, or `given` alone."""
    if workdir is None:
        if given is None:
            _fail(RunConfigError("give --workdir RUN (the run's recorded config) or --config FILE"))
        return given
    run = read(workdir)
    if given is None:
        run.workdir = workdir
        run.lock()
        return run
    check(run, given, path_in(workdir))
    given.workdir = workdir
    return given
