"""XLA:CPU collectives on simulated devices: the client's thread pool both admits executions (blocking once a device
has 32 queued) and runs a collective's partitions, and it has max(cores, devices) threads. On a 2-core machine a
host that runs ~40 programs ahead deadlocks (this hung the SRR dress rehearsal in about half its runs). Program
start-up (`parallel/distributed.setup`) sizes the pool; the first test shows the deadlock it prevents."""
import os
import pathlib
import subprocess
import sys

from alphagrpo_jax.parallel import distributed

REPO = pathlib.Path(__file__).resolve().parents[2]


def _chain(n: int, *flags: str, **env) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8", **env)
    r = subprocess.run([sys.executable, "-m", "tests.parallel.collective_chain", str(n), *flags], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_a_pool_of_one_thread_per_device_deadlocks_on_a_chain_of_collectives():
    """The upstream behaviour the start-up works around, with the pool a 2-core machine gets (8 threads). If this
    starts to pass, jaxlib fixed the admission deadlock and `size_cpu_pool` can go."""
    assert _chain(200, PJRT_NPROC="8") == "deadlock"


def test_program_start_up_sizes_the_pool_and_the_chain_finishes():
    assert _chain(200, "--setup") == f"done pool={max(os.cpu_count(), 32)}"


def test_size_cpu_pool_only_for_simulated_devices_and_never_over_a_users_choice():
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8"}
    assert distributed.simulated_cpu_devices(env) == 8
    threads = max(os.cpu_count(), 4 * 8)
    assert distributed.size_cpu_pool(env) == threads and env["PJRT_NPROC"] == str(threads)
    assert distributed.size_cpu_pool({"XLA_FLAGS": ""}) is None  # one device: no collective to deadlock
    user = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "PJRT_NPROC": "6"}
    assert distributed.size_cpu_pool(user) is None and user["PJRT_NPROC"] == "6"
