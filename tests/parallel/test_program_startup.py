"""Program start-up order (alphagrpo_jax/cli.py + parallel/distributed.setup): the distributed runtime starts before
anything starts a JAX backend (on a pod `jax.distributed.initialize` refuses to run after that, and printing the
config asks for the process index)."""
import json
import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "ALPHAGRPO_DISTRIBUTED",
                   "TPU_WORKER_HOSTNAMES")


def _start(devices: int, **env) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **env)
    cmd = [sys.executable, "-m", "tests.parallel.cli_worker", "--config", str(REPO / "configs" / "toy_rt2i.py")]
    return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _startup(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
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
