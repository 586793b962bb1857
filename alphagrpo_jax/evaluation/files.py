"""Reading the official prompt files (every error names file, line, what was found and what is expected) and
writing images (atomically, through paths.py: local or gs://)."""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError


def need_file(path: str, what: str) -> str:
    if not paths.exists(path) or paths.isdir(path):
        raise UsageError(f"config.data: {path}: no such file; expected {what}")
    return path


def need_folder(path: str, what: str) -> str:
    if not path or not paths.isdir(path):
        raise UsageError(f"config.data: {path or '(empty)'}: no such folder; expected {what}")
    return path


def read_jsonl(path: str, required: dict[str, type]) -> list[dict[str, Any]]:
    """The JSON objects of a .jsonl file (blank lines skipped); each must hold `required` {field: type}."""
    rows = []
    with paths.open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); expected one JSON "
                                 "object per line") from None
            check_fields(row, required, f"{path}:{n}")
            rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no records (the file is empty); expected one JSON object per line")
    return rows


def read_json_list(path: str, required: dict[str, type]) -> list[dict[str, Any]]:
    """A .json file holding a list of objects, each with `required` {field: type}."""
    try:
        data = json.loads(paths.read_text(path))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected a JSON list of "
                         "objects") from None
    if not isinstance(data, list) or not data:
        raise UsageError(f"{path}: found {type(data).__name__ if data else 'an empty list'}; expected a non-empty "
                         "JSON list of objects")
    for i, row in enumerate(data):
        check_fields(row, required, f"{path}[{i}]")
    return data


def check_fields(row: Any, required: dict[str, type], where: str) -> None:
    if not isinstance(row, dict):
        raise UsageError(f"{where}: found {type(row).__name__}; expected a JSON object")
    for field, kind in required.items():
        if field not in row:
            raise UsageError(f"{where}: no field {field!r}; expected fields {sorted(required)}")
        if not isinstance(row[field], kind) or (kind is int and isinstance(row[field], bool)):
            raise UsageError(f"{where}: field {field!r} is {type(row[field]).__name__} {row[field]!r}; expected "
                             f"{kind.__name__}")


def sha256_of(*texts: str | bytes) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") if isinstance(t, str) else t)
    return h.hexdigest()


def save_png(path: str, image: np.ndarray) -> None:
    from PIL import Image

    paths.save_image(path, Image.fromarray(np.asarray(image, np.uint8)))


def grid(images: Sequence[np.ndarray], cols: int, gap: int = 0) -> np.ndarray:
    """Images [H, W, 3] of one size tiled row-major, `cols` per row (missing cells black), `gap` grey pixels
    between cells."""
    h, w, c = images[0].shape
    rows = -(-len(images) // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), 128 if gap else 0, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, k * (w + gap):k * (w + gap) + w] = im
    return out


def open_image(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
