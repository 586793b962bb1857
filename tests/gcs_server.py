"""A real local GCS server for tests: `gcp-storage-emulator` in a child process on 127.0.0.1 (a free port).

    with GcsServer() as gcs:                  # or the session fixture `gcs` (tests/conftest.py)
        root = gcs.new_bucket()               # "gs://test-1" (empty)
        paths.write_text(root + "/a.txt", "x")

While it runs, the environment points every client of this process (and of children it starts) at it:
`STORAGE_EMULATOR_HOST` (gcsfs, so `alphagrpo_jax.paths` and Orbax's directory operations through etils) and
`TENSORSTORE_GCS_HTTP_URL` (tensorstore's GCS driver, which writes Orbax's arrays). gcsfs's bucket-type probe
(a Storage Control call the emulator does not serve) is switched off with `GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`
(read when gcsfs is imported). Objects live in the server's memory and vanish when it stops.
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


# The child asks the kernel for SIGTERM when its parent dies (Linux prctl PR_SET_PDEATHSIG), so a killed test
# process leaves no server behind; done in the child itself (a preexec_fn would run Python between fork and exec).
_CHILD = ("import ctypes, signal, sys\n"
          "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGTERM)\nexcept (OSError, AttributeError):\n    pass\n"
          "from gcp_storage_emulator.__main__ import main\nmain(sys.argv[1:])\n")


class GcsServer:
    def __init__(self, start_timeout_s: float = 30.0):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}
        self._names = itertools.count(1)

    def start(self) -> "GcsServer":
        cmd = [sys.executable, "-c", _CHILD, "start", "--host", "127.0.0.1", "--port",
               str(self.port), "--in-memory", "--quiet"]
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
