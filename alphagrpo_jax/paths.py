"""One path layer for every file the programs read or write: local paths and `gs://` alike (fsspec + gcsfs).

    paths.write_text(paths.join(workdir, "config.yaml"), text)     # atomic: a reader sees old or new, never half
    with paths.open(paths.join(workdir, "metrics.jsonl")) as f: ...
    paths.exists("gs://bucket/run/checkpoints")

Local paths keep their usual meaning (relative to the working directory). A `gs://` path goes through gcsfs,
which honours `STORAGE_EMULATOR_HOST` (a local GCS server in tests; docs/storage.md). Object stores have no
folders and no append: `makedirs` is a no-op there, and `append_text` rewrites the object (fine for the small
JSONL files the programs append to). Listings and existence checks of a remote path always ask the server
(gcsfs's listing cache is dropped first), so objects another process or Orbax/tensorstore wrote are seen.
"""
from __future__ import annotations

import builtins
import os
import posixpath
import shutil
import tempfile
from typing import IO

import fsspec


def is_remote(path) -> bool:
    """True for a URL with a scheme other than file:// (gs://, memory://, ...)."""
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


def _fs(path):
    """(filesystem, path inside it)."""
    return fsspec.core.url_to_fs(os.fspath(path))


def _fresh_fs(path):
    """(filesystem, path) with the listing cache of a remote path dropped (others may have written since)."""
    fs, p = _fs(path)
    if is_remote(path):
        fs.invalidate_cache(p)
    return fs, p


def join(base, *parts: str) -> str:
    base = os.fspath(base)
    if is_remote(base):
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def dirname(path) -> str:
    s = os.fspath(path)
    if is_remote(s):
        scheme, rest = s.split("://", 1)
        return f"{scheme}://" + posixpath.dirname(rest.rstrip("/"))
    return os.path.dirname(s)


def basename(path) -> str:
    return posixpath.basename(os.fspath(path).rstrip("/"))


def exists(path) -> bool:
    fs, p = _fresh_fs(path)
    return fs.exists(p)


def size(path) -> int:
    """Size of a file in bytes."""
    if not is_remote(path):
        return os.path.getsize(os.fspath(path))
    fs, p = _fresh_fs(path)
    return int(fs.size(p))


def isdir(path) -> bool:
    fs, p = _fresh_fs(path)
    return fs.isdir(p)


def makedirs(path) -> None:
    """Creates a local folder (and parents); nothing to do on an object store."""
    if not is_remote(path):
        os.makedirs(os.fspath(path), exist_ok=True)


def listdir(path) -> list[str]:
    """Names (not paths) of the entries directly under `path`, sorted; [] if it does not exist."""
    fs, p = _fresh_fs(path)
    if not fs.exists(p):
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def open(path, mode: str = "r", **kwargs) -> IO:  # noqa: A001  (the builtin's name, on purpose)
    """A file object for `path` (text modes take `encoding`, default utf-8)."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    if not is_remote(path):
        return builtins.open(os.fspath(path), mode, **kwargs)
    return fsspec.open(os.fspath(path), mode, **kwargs).open()


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    with open(path, "r") as f:
        return f.read()


def write_bytes(path, data: bytes) -> None:
    """Writes `data` atomically: locally through a temporary file in the same folder (fsynced) and os.replace;
    an object store upload is atomic by itself. Parent folders are created."""
    if is_remote(path):
        fs, p = _fs(path)
        fs.pipe_file(p, data)
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def append_text(path, text: str) -> None:
    """Appends `text` (locally a real append; on an object store the object is rewritten)."""
    if is_remote(path):
        old = read_bytes(path) if exists(path) else b""
        write_bytes(path, old + text.encode("utf-8"))
        return
    with open(path, "a") as f:
        f.write(text)


def remove(path) -> None:
    """Removes a file, or a folder with everything in it; nothing if it does not exist."""
    fs, p = _fresh_fs(path)
    if fs.exists(p):
        fs.rm(p, recursive=fs.isdir(p))


def copy(src, dst) -> None:
    """Copies one file (any mix of local and remote), streamed and atomic: `dst` is whole or absent."""
    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(dst):
        fs, p = _fs(dst)
        fs.put_file(local_copy(src), p)  # one upload: the object appears only once complete
        return
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-" + os.path.basename(dst))
    os.close(fd)
    try:
        if is_remote(src):
            fs, p = _fs(src)
            fs.get_file(p, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def move(src, dst) -> None:
    """Moves a file or a folder within one filesystem (an object store copies, then deletes)."""
    if not is_remote(src):
        os.replace(os.fspath(src), os.fspath(dst))
        return
    fs, p = _fs(src)
    fs.mv(p, _fs(dst)[1], recursive=True)


def save_image(path, image) -> None:
    """Writes a PIL image in the format its extension names (.png, .jpg, ...), atomically."""
    import io

    from PIL import Image

    ext = os.path.splitext(os.fspath(path))[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"{os.fspath(path)}: unknown image extension {ext!r}; expected .png, .jpg, ...")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    write_bytes(path, buf.getvalue())


def local_copy(path, skip_suffixes: tuple[str, ...] = ()) -> str:
    """A local file or folder with `path`'s content, for libraries that need real files (the path itself when
    local). A folder copies the files directly inside it, except names ending in one of `skip_suffixes` (e.g.
    a release's tokenizer files without its `.safetensors`). Remote copies go to a fresh temporary location."""
    if not is_remote(path):
        return os.fspath(path)
    path = os.fspath(path)
    fs, p = _fresh_fs(path)
    if fs.isdir(p):
        out = tempfile.mkdtemp(prefix="alphagrpo-")
        for name in listdir(path):
            if not name.endswith(tuple(skip_suffixes)) and not fs.isdir(posixpath.join(p, name)):
                fs.get_file(posixpath.join(p, name), os.path.join(out, name))
        return out
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
    os.close(fd)
    fs.get_file(p, tmp)
    return tmp
