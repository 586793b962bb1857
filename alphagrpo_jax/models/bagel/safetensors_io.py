"""Minimal safetensors reader/writer on numpy memmaps (bf16 via ml_dtypes).

Why not `safetensors.numpy`: it cannot represent bf16, and `safetensors.flax` places every tensor on a
device. Reading here is lazy and zero-copy (a view into a memory map); writing streams tensor by tensor.

Opening checks the whole layout before any tensor is read (header length, JSON header, every entry's dtype,
shape and byte range, the file size), so a truncated or foreign file is a one-line `SafetensorsError` naming the
file, what was found and what was expected. `write` also writes `<file>.sha256` (`sha256sum -c` format);
`verify_checksum` checks a file against it when present.

A `gs://` file (alphagrpo_jax/paths.py) is read tensor by tensor with ranged reads (no local copy) and written
through a local temporary file uploaded in one piece.
"""
from __future__ import annotations

import hashlib
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
_MAX_HEADER = 100 << 20  # bytes (the safetensors format's own limit)
CHECKSUM_SUFFIX = ".sha256"


class SafetensorsError(ValueError):
    pass


class SafetensorsFile:
    """Lazy reader: `f[name]` is a read-only numpy view; `f.shape(name)`, `f.dtype(name)`, `f.keys()`."""

    def __init__(self, path: str):
        self.path = path
        if not paths.exists(path):
            raise SafetensorsError(f"{path}: file not found")
        size = paths.size(path)
        with paths.open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise SafetensorsError(f"{path}: {size} bytes, too short to be a safetensors file (expected an 8-byte "
                                       "header length, a JSON header, then the tensor data)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER):
                raise SafetensorsError(f"{path}: not a safetensors file or truncated: its first 8 bytes give a header "
                                       f"of {n} bytes, the file has {size} (expected at most "
                                       f"{min(size - 8, _MAX_HEADER)})")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SafetensorsError(f"{path}: header is not valid JSON: {e}") from e
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, expected an object")
        self.metadata = header.pop("__metadata__", None)
        self._header = header
        self._data_start = 8 + n
        end = max([_check_entry(path, name, h) for name, h in header.items()], default=0)
        if self._data_start + end > size:
            raise SafetensorsError(f"{path}: truncated: {size} bytes, the header declares {end} bytes of tensor data "
                                   f"(expected a file of {self._data_start + end} bytes)")
        self._mm = None  # local: a memory map of the whole file; remote: None (ranged reads in __getitem__)
        if not paths.is_remote(path) and size > self._data_start:
            self._mm = np.memmap(path, dtype=np.uint8, mode="r")

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


def _check_entry(path: str, name: str, h) -> int:
    """Validates one header entry; returns the end of its byte range."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(h, dict) or h.get("dtype") not in _DTYPES:
        found = h.get("dtype") if isinstance(h, dict) else h
        raise SafetensorsError(f"{where} has dtype {found!r}, expected one of {sorted(_DTYPES)}")
    shape, offsets = h.get("shape"), h.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise SafetensorsError(f"{where} has shape {shape!r}, expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{where} has data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end")
    need = int(np.prod(shape, dtype=np.int64)) * _DTYPES[h["dtype"]].itemsize
    if offsets[1] - offsets[0] != need:
        raise SafetensorsError(f"{where} has {offsets[1] - offsets[0]} bytes, expected {need} for shape {shape} "
                               f"{h['dtype']}")
    return offsets[1]


def checksum_path(path: str) -> str:
    return path + CHECKSUM_SUFFIX


def sha256_file(path: str, chunk: int = 16 << 20) -> str:
    h = hashlib.sha256()
    with paths.open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str) -> bool:
    """Checks `path` against its `<path>.sha256` (written by `write`): True if it matches, False if there is no
    such file (e.g. a downloaded upstream release), SafetensorsError if it does not match."""
    side = checksum_path(path)
    if not paths.exists(side):
        return False
    want = paths.read_text(side).split()
    if not want or len(want[0]) != 64:
        raise SafetensorsError(f"{side}: expected '<64 hex digits>  {os.path.basename(path)}', found {want[:2]!r}")
    got = sha256_file(path)
    if got != want[0].lower():
        raise SafetensorsError(f"{path}: sha256 {got} does not match {side} ({want[0]}): the file is damaged or was "
                               "replaced")
    return True


def write(path: str, tensors: Iterable[tuple[str, tuple[int, ...], np.dtype]],
          produce: Callable[[str], np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Streams tensors to `path`: `tensors` lists (name, shape, dtype); `produce(name)` returns each array
    when it is written, so only one tensor needs to be in memory at a time. Order: dtype size desc, then name
    (the order the reference writer uses). Written to a temporary file, then renamed (no partial files)."""
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
    remote, digest = paths.is_remote(path), hashlib.sha256()
    if remote:
        fd, tmp = tempfile.mkstemp(suffix=".safetensors")
        os.close(fd)
    else:
        tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        for chunk in (struct.pack("<Q", len(blob)), blob):
            fh.write(chunk)
            digest.update(chunk)
        for name, shape, dt in entries:
            arr = np.ascontiguousarray(produce(name))
            if arr.shape != shape or arr.dtype != dt:
                raise SafetensorsError(f"{name}: produced {arr.shape} {arr.dtype}, declared {shape} {dt}")
            data = arr.tobytes()
            fh.write(data)
            digest.update(data)
    side = checksum_path(path)
    paths.remove(side)  # never a stale checksum beside the new file
    if remote:
        try:
            paths.copy(tmp, path)
        finally:
            os.remove(tmp)
    else:
        os.replace(tmp, path)
    paths.write_text(side, f"{digest.hexdigest()}  {paths.basename(path)}\n")
