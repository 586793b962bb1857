"""launch/gpu_single_host.sh: the XLA flags (each one known to the installed jaxlib), the environment and the
train command it prints, what the trainer process really receives, install steps, and flag errors."""
import json
import os
import subprocess
import sys

import pytest

from tests.launch.launch_utils import commands

TRAIN = ("--config", "configs/toy_rt2i.py", "--workdir", "/tmp/runs/toy")
EXPECTED_XLA = ("--xla_gpu_enable_latency_hiding_scheduler=true", "--xla_gpu_enable_highest_priority_async_stream=true",
                "--xla_gpu_enable_triton_gemm=false", "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
                "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
                "--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864",
                "--xla_gpu_enable_while_loop_double_buffering=true")


def _exports(stdout):
    return {c[1].split("=", 1)[0]: c[1].split("=", 1)[1] for c in commands(stdout) if c[0] == "export"}


def test_dry_run_prints_flags_env_and_train_command(launch):
    r = launch.run("gpu_single_host.sh", "--dry-run", "--no-install", *TRAIN, "--gpus", "0,1,2,3",
                   "--xla-flag=--xla_gpu_enable_command_buffer=", "--", "--config.total_steps=5")
    assert r.returncode == 0, r.stderr
    env = _exports(r.stdout)
    flags = env["XLA_FLAGS"].split()
    assert set(EXPECTED_XLA) <= set(flags) and flags[-1] == "--xla_gpu_enable_command_buffer="
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9" and env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert not any(k.startswith("JAX_") for k in env)
    train = commands(r.stdout)[-1]
    assert train[0].endswith(".venv/bin/python") and train[1:] == [
        "-m", "alphagrpo_jax.train", "--config", "configs/toy_rt2i.py", "--config.workdir=/tmp/runs/toy",
        "--config.total_steps=5"]
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in launch.run("gpu_single_host.sh", "--help").stdout


def test_multi_node_environment(launch):
    r = launch.run("gpu_single_host.sh", "--dry-run", "--no-install", *TRAIN, "--coordinator", "10.0.0.1:8476",
                   "--num-processes", "4", "--process-id", "3", "--local-device-ids", "0,1,2,3,4,5,6,7")
    assert r.returncode == 0, r.stderr
    env = _exports(r.stdout)
    assert (env["JAX_COORDINATOR_ADDRESS"], env["JAX_NUM_PROCESSES"], env["JAX_PROCESS_ID"]) == (
        "10.0.0.1:8476", "4", "3")
    assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"


def test_installs_into_a_new_venv(launch, tmp_path):
    venv = tmp_path / "gpu-venv"
    r = launch.run("gpu_single_host.sh", "--dry-run", *TRAIN, "--venv", str(venv))
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert cmds[0] == ["python3", "-m", "venv", str(venv)]
    assert cmds[2] == [f"{venv}/bin/python", "-m", "pip", "install", "-q", "-e", ".[cuda12]", "-c", "constraints.txt"]


def test_a_cpu_only_venv_gets_the_cuda_extra(launch, tmp_path):
    """An existing venv without jax's CUDA plugin (e.g. made for the CPU tests) is not trained in as it is."""
    venv = tmp_path / "cpu-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = [f"{venv}/bin/python", "-m", "pip", "install", "-q", "-e", ".[cuda12]", "-c", "constraints.txt"]
    r = launch.run("gpu_single_host.sh", "--dry-run", *TRAIN, "--venv", str(venv))
    assert r.returncode == 0, r.stderr
    assert f"# {venv} has no jax CUDA plugin (a CPU-only venv): installing the [cuda12] extra into it" in r.stdout
    assert install in commands(r.stdout) and ["python3", "-m", "venv", str(venv)] not in commands(r.stdout)
    refused = launch.run("gpu_single_host.sh", "--dry-run", "--no-install", *TRAIN, "--venv", str(venv))
    assert refused.returncode == 2 and refused.stdout == "" and refused.stderr == (
        f"gpu_single_host.sh: error: --no-install: {venv} has no jax CUDA plugin (a CPU-only venv); drop "
        f"--no-install, or run: {venv}/bin/python -m pip install -e '.[cuda12]' -c constraints.txt\n")
    purelib = subprocess.run([f"{venv}/bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    dist = os.path.join(purelib, "jax_cuda12_plugin-0.10.2.dist-info")  # what `pip install jax[cuda12]` leaves
    os.makedirs(dist)
    with open(os.path.join(dist, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: jax-cuda12-plugin\nVersion: 0.10.2\n")
    for flags in ((), ("--no-install",)):
        r = launch.run("gpu_single_host.sh", "--dry-run", *flags, *TRAIN, "--venv", str(venv))
        assert r.returncode == 0 and not any("pip" in c for c in commands(r.stdout)), r.stdout + r.stderr
        assert commands(r.stdout)[-1][0] == f"{venv}/bin/python"


def test_every_default_xla_flag_is_known_to_the_installed_jaxlib(launch):
    """XLA aborts on an unknown name in XLA_FLAGS; the GPU flags are registered in every jaxlib, CPU ones too."""
    flags = launch.run("gpu_single_host.sh", "--print-xla-flags").stdout.strip()
    assert set(EXPECTED_XLA) <= set(flags.split())
    probe = "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"

    def run(xla_flags):
        env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
        return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)

    ok = run(flags)
    assert ok.returncode == 0 and ok.stdout.strip() == "3.0", ok.stderr[-2000:]
    bad = run(flags + " --xla_gpu_no_such_flag=true")  # the check can fail
    assert bad.returncode != 0 and "xla_gpu_no_such_flag" in bad.stderr


def test_the_trainer_receives_the_environment_and_arguments(launch, tmp_path):
    fake = tmp_path / "python"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(os.environ['DUMP'], 'w'))\n")
    fake.chmod(0o755)
    dump, log = tmp_path / "run.json", tmp_path / "train.log"
    r = launch.run("gpu_single_host.sh", "--python", str(fake), *TRAIN, "--mem-fraction", "0.8", "--log", str(log),
                   "--", "--config.reward.endpoints=('http://127.0.0.1:30000/v1',)",
                   env=launch.env(DUMP=str(dump), XLA_FLAGS="--xla_dump_to=/tmp/dump"))
    assert r.returncode == 0, r.stderr
    run = json.loads(dump.read_text())
    assert run["argv"] == ["-m", "alphagrpo_jax.train", "--config", "configs/toy_rt2i.py",
                           "--config.workdir=/tmp/runs/toy", "--config.reward.endpoints=('http://127.0.0.1:30000/v1',)"]
    assert run["env"]["XLA_FLAGS"].endswith(" --xla_dump_to=/tmp/dump")  # the caller's flags come last and win
    assert run["env"]["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.8"
    assert run["env"]["PYTHONPATH"].split(":")[0] == str(launch.root)
    assert log.exists()


def test_relative_paths_are_the_callers(launch):
    """From another folder: the workdir stays relative to it; the config is found in the repo."""
    elsewhere = launch.root / "tmp"
    r = launch.run("gpu_single_host.sh", "--dry-run", "--no-install", "--config", "configs/toy_rt2i.py",
                   "--workdir", "runs/a", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout)[-1][4:6] == ["configs/toy_rt2i.py", f"--config.workdir={elsewhere}/runs/a"]


@pytest.mark.parametrize("args, message", [
    (("--workdir", "/tmp/w"), "missing --config (or env ALPHAGRPO_CONFIG)"),
    (("--config", "configs/toy_rt2i.py"), "missing --workdir (or env ALPHAGRPO_WORKDIR)"),
    (("--config", "configs/missing.py", "--workdir", "/w"), "--config configs/missing.py: no such file"),
    ((*TRAIN, "--coordinator", "h:1"), "needs all of --coordinator, --num-processes and --process-id"),
    ((*TRAIN, "--coordinator", "h", "--num-processes", "2", "--process-id", "0"), "--coordinator expects HOST:PORT"),
    ((*TRAIN, "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"), "must be below --num-processes 2"),
    ((*TRAIN, "--mem-fraction", "90"), "--mem-fraction must be in (0, 1]"),
    ((*TRAIN, "--gpus", "0;1"), "--gpus expects a list like 0,1,2,3"),
    ((*TRAIN, "--workers", "2"), "unknown flag '--workers'"),
])
def test_bad_input_is_named(launch, args, message):
    r = launch.run("gpu_single_host.sh", "--dry-run", "--no-install", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
