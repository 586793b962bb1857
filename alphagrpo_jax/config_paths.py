"""Relative paths in a config file mean the same folder from wherever the program runs.

    config_paths.resolve(config, "configs/toy_rt2i.py", overridden={"workdir"})

A relative path a config FILE writes (`workdir = "workdir/toy_rt2i"`, `model.release = "assets/toy_base"`) is
relative to the config's root: the folder holding the config file, or for a config inside a Python package (this
repository's `configs/`) the folder holding that package (the repository root). So
`python -m alphagrpo_jax.train --config ~/alphagrpo_jax/configs/toy_rt2i.py` run from /tmp reads the shipped
model and resumes the same run. A path given on the command line (`--config.workdir=runs/x`) is relative to the
current folder, as shell users expect. An input the root does not hold (e.g. a Hugging Face Hub id in
`model.release`) is left as written; gs:// and absolute paths are never changed.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from alphagrpo_jax import paths

# Dotted config keys that hold folders the program writes (resolved always) or files/folders it reads (resolved
# when the root holds them). A key a config does not have, or whose value is not a string, is skipped.
OUTPUTS = ("workdir", "export_dir", "out")
INPUTS = ("model.release", "release", "data.train_prompts", "data.eval_prompts", "data", "records", "scores_from")


def root(config_file: str) -> str:
    """The folder the config file's relative paths start from (see the module docstring)."""
    folder = os.path.dirname(os.path.abspath(config_file))
    while os.path.exists(os.path.join(folder, "__init__.py")) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return None
        node = node[part]
    return node


def _set(config, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


def resolve(config, config_file: str, overridden: Iterable[str] = ()) -> None:
    """Rewrites, in place, the relative path keys the config file set (not those in `overridden`, the dotted keys
    given on the command line) as absolute paths under the config's root."""
    base, overridden = root(config_file), set(overridden)
    for key in OUTPUTS + INPUTS:
        value = _get(config, key)
        if key in overridden or not isinstance(value, str) or not value or paths.is_remote(value) \
                or os.path.isabs(value):
            continue
        full = os.path.normpath(os.path.join(base, value))
        if key in OUTPUTS or os.path.exists(full):
            _set(config, key, full)
