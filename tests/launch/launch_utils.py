"""Helpers for the launch-script tests: run a script from a throw-away repo copy, read back what it printed."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shlex
import subprocess

REPO = pathlib.Path(__file__).parents[2]


@dataclasses.dataclass
class Launch:
    root: pathlib.Path  # the repo copy: launch/, configs/, constraints.txt
    bin: pathlib.Path  # first on PATH: the fake gcloud
    cloud: pathlib.Path  # FAKE_GCLOUD_ROOT: the fake TPU workers' homes and resource states

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAGRPO_", "JAX_", "CLOUDSDK_"))
               and k not in ("XLA_FLAGS", "OUT", "PYTHONPATH")}
        env.update(PATH=f"{self.bin}:{os.environ['PATH']}", FAKE_GCLOUD_ROOT=str(self.cloud),
                   TMPDIR=str(self.root / "tmp"))
        env.update(extra)
        return env

    def run(self, script: str, *args: str, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.root / "launch" / script), *args], cwd=cwd or self.root,
                              env=env or self.env(), capture_output=True, text=True, timeout=timeout)


def commands(stdout: str) -> list[list[str]]:
    """The commands a script printed (`+ ...` lines), each split back into its words."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def remote(cmd: list[str]) -> str:
    """The --command=... script of a printed `gcloud ... ssh` command."""
    return next(w.split("=", 1)[1] for w in cmd if w.startswith("--command="))


