"""Shared command-line plumbing for every entry point.

    python -m alphagrpo_jax.<entry> --config configs/x.py[:arg] --config.a.b=value

The config file's `get_config(arg)` returns an `ml_collections.ConfigDict`; it is locked (a typo in an
override is an error, not a new key) and printed at start.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Python config file with get_config(); `path.py:arg` passes arg.", lock_config=True)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr, force=True)
    # absl routes its own logs through Python logging once this handler exists.
    logging.getLogger("absl").setLevel(logging.WARNING)


def print_config(config) -> None:
    import jax  # deferred: keeps `import alphagrpo_jax.cli` light

    if jax.process_index() == 0:
        print("=" * 30 + " config " + "=" * 30, flush=True)
        print(config.to_yaml() if hasattr(config, "to_yaml") else config, flush=True)
        print("=" * 68, flush=True)


def run(main: Callable) -> None:
    """Parses flags and calls `main(config)` (config already locked and printed)."""

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if _CONFIG.value is None:
            raise app.UsageError("--config is required, e.g. --config configs/toy_rt2i.py")
        setup_logging()
        print_config(_CONFIG.value)
        main(_CONFIG.value)

    app.run(_main)
