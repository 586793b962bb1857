"""Plug-ins: modules a config names in `config.plugins`, imported when a program starts.

    c.plugins = ("alphagrpo_jax.toy.plugin",)   # in a config file
    plugins.load(config)                         # cli.run does this; the trainer and the config check too

A plug-in imports the library and registers names into its registries (reward components, prompt sources, image
transforms, SFT data sources); the config then selects those names like any built-in one. The library itself
never imports a plug-in. Loading is idempotent (Python imports a module once).
"""
from __future__ import annotations

import importlib

from alphagrpo_jax.errors import UsageError


def names(config) -> tuple[str, ...]:
    """The config's plug-in module names (none when it has no `plugins` key)."""
    value = config.get("plugins", ()) if hasattr(config, "get") else ()
    if isinstance(value, str):
        raise UsageError(f"config.plugins: expected a list of module names, got the string {value!r}")
    return tuple(value or ())


def load(config) -> tuple[str, ...]:
    """Imports every module of `config.plugins` (UsageError naming one that cannot be found)."""
    loaded = names(config)
    for name in loaded:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):  # a missing dependency inside the plug-in
                raise
            raise UsageError(f"config.plugins: no module {name!r}; expected importable module names such as "
                             f"'alphagrpo_jax.toy.plugin'") from None
    return loaded
