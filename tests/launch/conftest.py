"""Fixtures for the launch-script tests: a throw-away copy of the repo's launch/ with stub configs, a fake
`gcloud` on PATH (tests/launch/fake_gcloud.py), and a runner that returns each script's output."""
from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator

import pytest

from tests.launch.launch_utils import REPO, Launch

CONFIGS = ("configs/bagel_7b_rt2i.py", "configs/toy_rt2i.py")


def _kill_runs(root: pathlib.Path) -> None:
    """Ends the process groups of fake training runs a failed test left behind (their pid files)."""
    for pid_file in root.glob("*/w*/*/logs/train.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture
def launch(tmp_path) -> Iterator[Launch]:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "launch", root / "launch")
    for cfg in CONFIGS:
        (root / cfg).parent.mkdir(parents=True, exist_ok=True)
        (root / cfg).write_text("import ml_collections\n\n\ndef get_config():\n"
                                "    return ml_collections.ConfigDict({'workdir': ''})\n")
    (root / "constraints.txt").write_text("jax==0.10.2\n")
    (root / "tmp").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(pathlib.Path(__file__).with_name('fake_gcloud.py')))} \"$@\"\n")
    gcloud.chmod(0o755)
    cloud = tmp_path / "cloud"
    yield Launch(root, bin_dir, cloud)
    _kill_runs(cloud)
