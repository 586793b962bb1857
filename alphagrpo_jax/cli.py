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
    """Prints the config as the readable YAML that train records in `<workdir>/config.yaml` (process 0)."""
    import jax  # deferred: keeps `import alphagrpo_jax.cli` light

    from alphagrpo_jax import run_config

    if jax.process_index() == 0:
        print("=" * 30 + " config " + "=" * 30, flush=True)
        print(run_config.to_yaml(config).rstrip("\n"), flush=True)
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


def run_on_workdir(main: Callable) -> None:
    """Like `run`, for programs that work on a training run's checkpoints (export, component_eval): `--workdir RUN`
    reads the run's recorded config (run_config.py), so its overrides need not be retyped; with `--config` as
    well, that config is used after checking it against the run's (a mismatch exits with code 2)."""
    from alphagrpo_jax import run_config

    workdir = flags.DEFINE_string("workdir", None, "a training run's workdir: its config.yaml is the config")

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        setup_logging()
        config = run_config.resolve(workdir.value, _CONFIG.value)
        print_config(config)
        main(config)

    app.run(_main)
