"""The persistent JAX compilation cache every program uses (one setting, one function).

    setting (first that is set)                   cache folder
    --compilation-cache DIR | off                 DIR, or no persistent cache
    $ALPHAGRPO_JAX_COMPILATION_CACHE=DIR | off    DIR, or none
    $JAX_COMPILATION_CACHE_DIR=DIR                DIR (JAX's own setting; the test suite shares one per run)
    (none of these)                               $XDG_CACHE_HOME/alphagrpo_jax/jax (default ~/.cache/alphagrpo_jax/jax)

A second run of a program with the same shapes loads its compiled programs from the folder instead of
compiling them (docs/results/2026-12-06-generate-start.md). DIR may be gs:// (JAX reads it through its own
file layer). Programs call `setup(flag_value)` once, before the first compilation.
"""
from __future__ import annotations

import logging
import os

ENV = "ALPHAGRPO_JAX_COMPILATION_CACHE"
OFF = ("off", "none", "0", "false", "")

log = logging.getLogger("alphagrpo_jax.compile_cache")


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "alphagrpo_jax", "jax")


def folder(value: str | None = None) -> str | None:
    """The cache folder for a flag value (None = unset: the environment, then the default); None = off."""
    value = value if value is not None else os.environ.get(ENV)
    if value is None:
        return os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
    return None if value.strip().lower() in OFF else value


def setup(value: str | None = None) -> str | None:
    """Points JAX's persistent compilation cache at `folder(value)` (or turns it off); returns the folder.
    Every compiled program is cached (no minimum compile time): the small programs of a generate call add up."""
    import jax  # deferred: keeps importing this module light

    path = folder(value)
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    if "://" not in path:
        os.makedirs(path, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    log.debug("JAX compilation cache: %s", path)
    return path
