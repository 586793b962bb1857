"""A real local GCS server for tests: `gcp-storage-emulator` in a child process on 127.0.0.1 (a free port).

    with GcsServer() as gcs:                  # or the session fixture `gcs` (tests/conftest.py)
        root = gcs.new_bucket()               # "gs://test-1" (empty)
        paths.write_text(root + "/a.txt", "x")

While it runs, the environment points every client of this process (and of children it starts) at it:
`STORAGE_EMULATOR_HOST` (gcsfs, so `alphagrpo_jax.paths` and Orbax's directory operations through etils) and
`TENSORSTORE_GCS_HTTP_URL` (tensorstore's GCS driver, which writes Orbax's arrays). gcsfs's bucket-type probe
(a Storage Control call the emulator does not serve) is switched off with `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`
(read when gcsfs is imported). Objects live in the server's memory and vanish when it stops.

The emulator ignores object generations, which tensorstore's OCDBT (Orbax's array format) relies on: it reads
an object's generation from the `x-goog-generation` header of a download and writes manifests with
`ifGenerationMatch` (optimistic concurrency). `_add_generations` adds both to the emulator, as GCS does them:
downloads carry the header, and reads, uploads and deletes honour `ifGenerationMatch` (412 when it does not hold;
0 = "must not exist") and reads `ifGenerationNotMatch` (304). Without it a checkpoint save fails at random with
"Malformed StorageGeneration" (a generation of 0 read back).
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ENV = ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsServer:
    def __init__(self, start_timeout_s: float = 30.0):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._names = itertools.count(1)

    def start(self) -> "GcsServer":
        cmd = [sys.executable, os.path.abspath(__file__), str(self.port)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).read()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"gcp-storage-emulator did not start on {self.url} (cmd: {' '.join(cmd)})")
                time.sleep(0.1)
        values = dict(STORAGE_EMULATOR_HOST=self.url, TENSORSTORE_GCS_HTTP_URL=self.url,
                      GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
        for k in ENV:
            self._saved_env[k] = os.environ.get(k)
            os.environ[k] = values[k]
        return self

    def stop(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "GcsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def new_bucket(self, prefix: str = "test") -> str:
        """Creates a fresh empty bucket; returns its root, "gs://<name>"."""
        name = f"{prefix}-{next(self._names)}"
        req = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=10).read()
        return f"gs://{name}"


# ------------------------------------------------------------------------------------------------ the child

def _add_generations() -> None:
    """Wraps the emulator's object handlers with GCS's generation semantics (see the module docstring)."""
    from http import HTTPStatus

    from gcp_storage_emulator import server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    def current(request, storage, object_id=None):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], object_id or request.params["object_id"])
            return int(obj["generation"])
        except NotFound:
            return 0

    def blocked(request, response, generation) -> bool:
        """Sets 412/304 and returns True when a precondition of the request does not hold."""
        match = request.query.get("ifGenerationMatch")
        if match and int(match[0]) != generation:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "conditionNotMet"}})
            return True
        not_match = request.query.get("ifGenerationNotMatch")
        if not_match and generation and int(not_match[0]) == generation:
            response.status = HTTPStatus.NOT_MODIFIED
            return True
        return False

    def read(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            generation = current(request, storage)
            if generation and blocked(request, response, generation):
                return None
            if generation:
                response["x-goog-generation"] = str(generation)
                response["x-goog-metageneration"] = "1"
            return handler(request, response, storage, *args, **kwargs)
        return wrapped

    def upload(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            name = request.query.get("name")
            if name and blocked(request, response, current(request, storage, name[0])):
                return None
            return handler(request, response, storage, *args, **kwargs)
        return wrapped

    def delete(handler):
        def wrapped(request, response, storage, *args, **kwargs):
            if blocked(request, response, current(request, storage)):
                return None
            return handler(request, response, storage, *args, **kwargs)
        return wrapped

    wrappers = {objects.get: read, objects.download: read, objects.insert: upload, objects.delete: delete}
    for _, methods in server.HANDLERS:
        for method, fn in list(methods.items()):
            if fn in wrappers:
                methods[method] = wrappers[fn](fn)


def _serve(port: int) -> None:
    """The child: dies with its parent (Linux prctl PR_SET_PDEATHSIG), so a killed test process leaves no server
    behind; then the patched emulator on 127.0.0.1:port, in memory."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    from gcp_storage_emulator.server import create_server

    _add_generations()
    create_server("127.0.0.1", port, in_memory=True).run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
