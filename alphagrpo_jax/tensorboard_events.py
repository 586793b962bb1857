"""TensorBoard event files (TFRecord-framed `Event` protos, tensorboardX's event_pb2): write, read, truncate.

A record is `len (uint64 LE) | masked crc32c(len) (uint32) | data | masked crc32c(data) (uint32)`. A killed
writer can leave a partial last record; `read` stops at the first record that is short or fails its CRC.
`EventFile` writes synchronously (tensorboardX's SummaryWriter queues events in a thread and flushes the file
every 2 minutes: a killed run would lose them); on an object store (gs://) the file is rewritten whole at each
flush, as object stores have no append.
"""
from __future__ import annotations

import logging
import socket
import struct
import time

from alphagrpo_jax import paths

log = logging.getLogger("alphagrpo_jax.tensorboard_events")
PREFIX = "events.out.tfevents."


def _crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (google_crc32c's C code, installed with gcsfs; else tensorboardX's, in Python)."""
    try:
        from google_crc32c import value as crc32c
    except ImportError:
        from tensorboardX.crc32c import crc32c
    x = crc32c(data) & 0xFFFFFFFF
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class EventFile:
    """A new event file in `logdir` (local or remote), named so that files sort in creation order (TensorBoard
    reads a folder's files in name order). `add` buffers, `flush` writes; one writer per file."""

    def __init__(self, logdir: str):
        from tensorboardX.proto.event_pb2 import Event

        now = time.time_ns()
        self.path = paths.join(logdir, f"{PREFIX}{now // 10**9:010d}.{socket.gethostname()}.{now}")
        paths.makedirs(logdir)
        self._written = b""  # remote only: the file's content so far (rewritten whole at each flush)
        self._pending = [frame(Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())]
        self.flush()

    def add(self, step: int, summary) -> None:
        """Buffers `summary` (a tensorboardX Summary proto) at `step`."""
        from tensorboardX.proto.event_pb2 import Event

        self._pending.append(frame(Event(wall_time=time.time(), step=int(step), summary=summary)
                                   .SerializeToString()))

    def flush(self) -> None:
        data, self._pending = b"".join(self._pending), []
        if paths.is_remote(self.path):
            self._written += data
            paths.write_bytes(self.path, self._written)
        else:
            with paths.open(self.path, "ab") as f:
                f.write(data)

    def close(self) -> None:
        self.flush()


def frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _crc(header)) + data + struct.pack("<I", _crc(data))


def read(path: str, data: bytes) -> tuple[list[bytes], bool]:
    """(serialized events, torn): torn = bytes after the last intact record (dropped, with a warning)."""
    records, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        if len(header) < 8 or struct.unpack("<I", data[pos + 8:pos + 12].ljust(4, b"\0"))[0] != _crc(header):
            break
        (n,) = struct.unpack("<Q", header)
        body, crc = data[pos + 12:pos + 12 + n], data[pos + 12 + n:pos + 16 + n]
        if len(body) < n or len(crc) < 4 or struct.unpack("<I", crc)[0] != _crc(body):
            break
        records.append(body)
        pos += 16 + n
    if pos < len(data):
        log.warning("%s: %d bytes after record %d are not an intact record (writer killed mid-write?); dropped",
                    path, len(data) - pos, len(records))
    return records, pos < len(data)


def events(path: str) -> list:
    """The `Event` protos of one event file (tensorboardX's event_pb2)."""
    from tensorboardX.proto.event_pb2 import Event

    return [Event.FromString(r) for r in read(path, paths.read_bytes(path))[0]]


def truncate(logdir: str, step: int) -> int:
    """Rewrites the event files in `logdir` without events of a step > `step` and without a torn tail;
    returns the number of events dropped (torn bytes not counted)."""
    from tensorboardX.proto.event_pb2 import Event

    dropped = 0
    for name in paths.listdir(logdir):
        if not name.startswith(PREFIX):
            continue
        path = paths.join(logdir, name)
        records, torn = read(path, paths.read_bytes(path))
        keep = [r for r in records if Event.FromString(r).step <= step]
        if torn or len(keep) < len(records):
            paths.write_bytes(path, b"".join(frame(r) for r in keep))
            dropped += len(records) - len(keep)
    if dropped:
        log.warning("%s: dropped %d TensorBoard events logged after step %d", logdir, dropped, step)
    return dropped
