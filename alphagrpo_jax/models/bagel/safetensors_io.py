"""Minimal safetensors reader/writer on numpy memmaps (bf16 via ml_dtypes).

Why not `safetensors.numpy`: it cannot represent bf16, and `safetensors.flax` places every tensor on a
device. Reading here is lazy and zero-copy (a view into a memory map); writing streams tensor by tensor.
A `gs://` file (alphagrpo_jax/paths.py) is read tensor by tensor with ranged reads (no local copy) and written
through a local temporary file uploaded in one piece.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterable

import ml_dtypes
import numpy as np

from alphagrpo_jax import paths

_DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16), "F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "I16": np.dtype(np.int16),
    "I32": np.dtype(np.int32), "I64": np.dtype(np.int64), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """Lazy reader: `f[name]` is a read-only numpy view; `f.shape(name)`, `f.dtype(name)`, `f.keys()`."""

    def __init__(self, path: str):
        self.path = path
        if not paths.exists(path):
            raise SafetensorsError(f"{path}: file not found")
        with paths.open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{path}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", raw)
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from e
        self.metadata = header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + n
        self._mm = None  # local: a memory map of the whole file; remote: None (ranged reads in __getitem__)
        if not paths.is_remote(path) and os.path.getsize(path) > self._data_start:
            self._mm = np.memmap(path, dtype=np.uint8, mode="r")
        for name, h in header.items():
            if h.get("dtype") not in _DTYPES:
                raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {h.get('dtype')!r}")

    def keys(self) -> list[str]:
        return list(self._header)

    def __contains__(self, name: str) -> bool:
        return name in self._header

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)["shape"])

    def dtype(self, name: str) -> np.dtype:
        return _DTYPES[self._entry(name)["dtype"]]

    def _entry(self, name: str) -> dict:
        if name not in self._header:
            raise SafetensorsError(f"{self.path}: no tensor named {name!r}")
        return self._header[name]

    def __getitem__(self, name: str) -> np.ndarray:
        h = self._entry(name)
        begin, end = h["data_offsets"]
        dt = _DTYPES[h["dtype"]]
        count = int(np.prod(h["shape"], dtype=np.int64))
        if end - begin != count * dt.itemsize:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has {end - begin} bytes, expected "
                                   f"{count * dt.itemsize} for shape {h['shape']} {h['dtype']}")
        if count == 0:
            return np.zeros(h["shape"], dt)
        if self._mm is None:
            with paths.open(self.path, "rb") as fh:
                fh.seek(self._data_start + begin)
                buf = np.frombuffer(fh.read(end - begin), np.uint8)
            if buf.size != end - begin:
                raise SafetensorsError(f"{self.path}: tensor {name!r} lies past the end of the file")
        else:
            buf = self._mm[self._data_start + begin: self._data_start + end]
        return buf.view(dt).reshape(h["shape"])


def write(path: str, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype]],
          produce: Callable[[str], np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Streams tensors to `path`: `tensors` lists (name, shape, dtype); `produce(name)` returns each array
    when it is written, so only one tensor needs to be in memory at a time. Order: dtype size desc, then name
    (the order the reference writer uses). Written to a temporary file, then renamed (no partial files); a
    remote `path` gets the temporary file uploaded in one piece."""
    entries = sorted(((n, tuple(s), np.dtype(d)) for n, s, d in tensors), key=lambda e: (-e[2].itemsize, e[0]))
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, shape, dt in entries:
        if dt not in _NAMES:
            raise SafetensorsError(f"{name}: dtype {dt} cannot be written")
        size = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        header[name] = {"dtype": _NAMES[dt], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    remote = paths.is_remote(path)
    if remote:
        fd, tmp = tempfile.mkstemp(suffix=".safetensors")
        os.close(fd)
    else:
        tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name, shape, dt in entries:
            arr = np.ascontiguousarray(produce(name))
            if arr.shape != shape or arr.dtype != dt:
                raise SafetensorsError(f"{name}: produced {arr.shape} {arr.dtype}, declared {shape} {dt}")
            fh.write(arr.tobytes())
    if remote:
        try:
            paths.copy(tmp, path)
        finally:
            os.remove(tmp)
    else:
        os.replace(tmp, path)
