"""Multi-process data parallelism on CPU: 2 processes x 4 devices (jax.distributed over localhost, gloo
collectives) run the same GRPO learner step as 1 process x 8 devices (tests/parallel/multiprocess_worker.py), and
must agree to float rounding, while each process read only its own host shard of the round's samples."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "ALPHAGRPO_DISTRIBUTED",
                   "TPU_WORKER_HOSTNAMES")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(prefix: pathlib.Path, devices: int, **env) -> subprocess.Popen:
    e = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    # Unoptimised CPU code generation: the three processes compile the learner in half the time.
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
             "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true", **env)
    return subprocess.Popen([sys.executable, "-m", "tests.parallel.multiprocess_worker", str(prefix)], cwd=REPO,
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs) -> None:
    logs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        logs.append((p.returncode, out))
    bad = [f"exit {rc}:\n{out[-3000:]}" for rc, out in logs if rc != 0]
    assert not bad, "\n".join(bad)


def _read(path: pathlib.Path) -> dict:
    with open(path) as f:
        return json.load(f)


def test_two_processes_match_one_process(tmp_path):
    addr = f"127.0.0.1:{_free_port()}"
    multi = [_start(tmp_path / "multi", 4, JAX_COORDINATOR_ADDRESS=addr, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
             for i in range(2)]
    single = _start(tmp_path / "single", 8)
    _finish(multi + [single])
    m0, m1, s = _read(tmp_path / "multi.0.json"), _read(tmp_path / "multi.1.json"), _read(tmp_path / "single.0.json")

    assert (m0["processes"], m0["devices"], m0["local_devices"]) == (2, 8, 4)
    assert (s["processes"], s["devices"], s["local_devices"]) == (1, 8, 8)
    # Host sharding: each process read only its strided shard; together, every sample once.
    assert m0["sample_ids"] == [0, 2, 4, 6] and m1["sample_ids"] == [1, 3, 5, 7]
    assert s["sample_ids"] == list(range(8))
    keys = ("loss1", "loss2", "image_loss", "text_loss", "grad_norm", "checksum")
    # Both processes hold the same (replicated) results of one global program.
    assert [m0[k] for k in keys] == [m1[k] for k in keys]
    # The update moved the policy (loss2 != loss1) by the same amount in both layouts: the rows are in another
    # order across processes, so only the summation order differs.
    assert abs(s["loss2"] - s["loss1"]) > 1e-3 and s["grad_norm"] > 0
    np.testing.assert_allclose([m0[k] for k in keys], [s[k] for k in keys], rtol=1e-5, atol=1e-6)
