"""Program start-up order (alphagrpo_jax/cli.py + parallel/distributed.setup): the distributed runtime starts before
anything starts a JAX backend (on a pod `jax.distributed.initialize` refuses to run after that, and printing the
config asks for the process index)."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import pytest

from alphagrpo_jax.parallel import distributed

REPO = pathlib.Path(__file__).resolve().parents[2]
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "ALPHAGRPO_DISTRIBUTED",
                   "TPU_WORKER_HOSTNAMES")


def _start(devices: int, **env) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    e.update({"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **env})
    e = {k: v for k, v in e.items() if v is not None}  # None: unset
    cmd = [sys.executable, "-m", "tests.parallel.cli_worker", "--config", str(REPO / "configs" / "toy_rt2i.py")]
    return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _startup(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return _startup_line(out)


def _startup_line(out: str) -> dict:
    lines = [x for x in out.splitlines() if x.startswith("startup:")]
    assert len(lines) == 1, out[-3000:]
    return json.loads(lines[0][len("startup:"):])


def test_two_processes_start_the_distributed_runtime_through_the_cli():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [_start(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
             for i in range(2)]
    try:
        got = [_startup(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [g["process_index"] for g in got] == [0, 1]
    assert all(g["process_count"] == 2 and g["devices"] == 2 for g in got)


def test_a_host_without_tpu_starts_quietly_with_libtpu_installed():
    """As a user's shell runs the quick start (JAX_PLATFORMS unset): the host has no TPU chip, so start-up keeps JAX
    from starting libtpu, whose probe prints errors on every CPU machine where the test/tpu extra installed it."""
    if not distributed.cpu_only_host(None):
        pytest.skip("this host has an accelerator: JAX's own platform search is kept")
    proc = _start(1, JAX_PLATFORMS=None)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    noise = [x for x in out.splitlines() if re.search(r"libtpu|TPU|jellyfish|worker hostname|InitGoogle", x)]
    assert not noise, noise[:5]
    assert _startup_line(out)["platform"] == "cpu"


def test_cpu_only_host_without_chips_gpus_or_a_user_choice(tmp_path):
    sysfs = tmp_path / "devices"
    (sysfs / "0000:00:04.0").mkdir(parents=True)
    (sysfs / "0000:00:04.0" / "vendor").write_text("0x8086\n")  # an Intel device: no TPU
    gpu = tmp_path / "nvidia0"
    assert distributed.tpu_chips(str(sysfs)) == 0
    assert distributed.cpu_only_host(None, str(sysfs), gpu_files=(str(gpu),))
    assert distributed.cpu_only_host("", str(sysfs), gpu_files=(str(gpu),))
    assert not distributed.cpu_only_host("cuda", str(sysfs), gpu_files=(str(gpu),))  # the user's choice stands
    gpu.write_text("")
    assert not distributed.cpu_only_host(None, str(sysfs), gpu_files=(str(gpu),))
    (sysfs / "0000:00:05.0").mkdir()
    (sysfs / "0000:00:05.0" / "vendor").write_text("0x1ae0\n")  # a TPU chip
    assert distributed.tpu_chips(str(sysfs)) == 1
    assert not distributed.cpu_only_host(None, str(sysfs), gpu_files=())
