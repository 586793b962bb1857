"""Input checks the programs run before any model loads; each failure is one `UsageError` line naming the
key/file, what was found and what is expected.

    checks.int_at_least(config.total_steps, 1, "config.total_steps")
    checks.one_of(config.reward.aggregation, AGGREGATIONS, "config.reward.aggregation")
    checks.release_folder(config.model.release, "config.model.release")
    checks.creatable_folder(config.workdir, "config.workdir")
    checks.output_file("out/x.png", "--out")
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Collection

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax import hub

# What a release folder must hold (models/bagel/release.py, models/bagel/tokenizer.py).
RELEASE_FILES = ("llm_config.json", "vit_config.json", "ema.safetensors")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))  # either set


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(value, low: int, key: str) -> int:
    if not _is_int(value) or value < low:
        raise UsageError(f"{key}: expected an integer >= {low}, got {value!r}")
    return value


def number_in(value, low: float, high: float, key: str, *, low_open: bool = False) -> float:
    """A real number in [low, high] ((low, high] with low_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = "(" if low_open else "["
        raise UsageError(f"{key}: expected a number in {lo}{low:g}, {high:g}], got {value!r}")
    return float(value)


def one_of(value, known: Collection, key: str) -> None:
    if value not in known:
        raise UsageError(f"{key}: expected one of {sorted(known)}, got {value!r}")


def int_pair(value, key: str) -> tuple[int, int]:
    """Two integers (lo, hi) with 0 <= lo < hi."""
    items = tuple(value) if isinstance(value, (tuple, list)) else None
    if items is None or len(items) != 2 or not all(_is_int(v) for v in items) or not 0 <= items[0] < items[1]:
        raise UsageError(f"{key}: expected two integers (lo, hi) with 0 <= lo < hi, got {value!r}")
    return items


def existing_file(path, key: str) -> str:
    if not isinstance(path, str) or not path:
        raise UsageError(f"{key}: expected a file path, got {path!r}")
    if not paths.exists(path) or paths.isdir(path):
        raise UsageError(f"{key}: {path}: no such file")
    return path


def release_folder(path, key: str) -> str:
    """A BAGEL release folder with its config, weights and tokenizer files."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{key}: expected a BAGEL release folder, got {path!r}")
    path = hub.resolve(path, key)  # a Hugging Face Hub id -> its downloaded snapshot
    if not paths.isdir(path):
        raise UsageError(f"{key}: {path}: no such folder; expected a BAGEL release folder")
    present = set(paths.listdir(path))
    missing = [f for f in RELEASE_FILES if f not in present]
    if not any(set(fs) <= present for fs in TOKENIZER_FILES):
        missing += [f for f in TOKENIZER_FILES[1] if f not in present]
    if missing:
        raise UsageError(f"{key}: release folder {path} lacks {', '.join(missing)}; expected "
                         f"{', '.join(RELEASE_FILES)} and tokenizer.json or vocab.json + merges.txt")
    return path


def writable_folder(path, key: str) -> str:
    """Creates `path` if missing and proves it writable with a temp file (local paths; gs:// is created by
    the first write)."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{key}: expected a folder path, got {path!r}")
    if paths.is_remote(path):
        return path
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_check."):
            pass
    except OSError as e:
        raise UsageError(f"{key}: {path}: cannot write there ({e.strerror or e}); expected a writable folder") \
            from None
    return path


def creatable_folder(path, key: str) -> str:
    """A folder the program will create (or reuse) when it starts writing: an existing folder must be writable,
    a missing one must be creatable (its nearest existing parent a writable folder). Creates nothing, so a run
    that fails validation leaves nothing behind (local paths; gs:// is created by the first write)."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{key}: expected a folder path, got {path!r}")
    if paths.is_remote(path):
        return path
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    why = ("Not a directory" if not os.path.isdir(probe) else
           "Permission denied" if not os.access(probe, os.W_OK | os.X_OK) else None)
    if why:
        raise UsageError(f"{key}: {path}: cannot write there ({why}); expected a writable folder")
    return path


def output_file(path, key: str) -> str:
    """A file the program will write: its folder must exist and be writable (nothing is created)."""
    if not isinstance(path, str) or not path:
        raise UsageError(f"{key}: expected a file path, got {path!r}")
    if paths.is_remote(path):
        return path
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{key} {path}: folder {os.path.dirname(path) or '.'} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{key} {path}: folder {os.path.dirname(path) or '.'} is not writable")
    if os.path.isdir(path):
        raise UsageError(f"{key} {path}: is a folder; expected a file path")
    return path
