"""launch/tpu_pod.sh: the printed plan (--dry-run), flag errors, and the remote steps run for real on two fake
workers through tests/launch/fake_gcloud.py (start, refuse a second start, status, logs, collect, stop)."""
import json
import os
import shlex
import signal
import sys
import time

import pytest

from tests.launch.launch_utils import commands, remote

SLICE = ("--name", "grpo", "--zone", "us-east5-a")
TRAIN = ("--config", "configs/bagel_7b_rt2i.py", "--workdir", "gs://bucket/runs/r1")
ENDPOINTS = "--config.reward.endpoints=('http://10.0.0.5:30000/v1',)"


def test_up_dry_run_prints_every_step_in_order(launch):
    r = launch.run("tpu_pod.sh", "up", "--dry-run", *SLICE, "--accelerator-type", "v5p-64", *TRAIN,
                   "--", "--config.total_steps=100")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert [c[:4] for c in cmds if c[0] == "gcloud"] == [["gcloud", "compute", "tpus", "tpu-vm"]] * 5
    describe, create, pack, copy, setup, train = cmds
    assert describe[4:6] == ["describe", "grpo"] and "--zone=us-east5-a" in describe
    assert create[4:6] == ["create", "grpo"]
    assert "--accelerator-type=v5p-64" in create and "--version=v2-alpha-tpuv5" in create
    assert pack[0] == "bash" and "git ls-files" in pack[2] and pack[-1].endswith("alphagrpo_jax-src.tgz")
    assert copy[4] == "scp" and copy[6] == "grpo:alphagrpo_jax-src.tgz"
    for c in (copy, setup, train):
        assert "--worker=all" in c
    assert "tar -xzf alphagrpo_jax-src.tgz -C alphagrpo_jax" in remote(setup)
    assert "pip install -q -e '.[tpu]' -c constraints.txt" in remote(setup)
    t = remote(train)
    assert "ALPHAGRPO_DISTRIBUTED=1 setsid bash -c " in t
    assert (" .venv/bin/python -m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py "
            "--config.workdir=gs://bucket/runs/r1 --config.total_steps=100 >>") in t
    assert "logs/train-$(hostname).log" in t and "echo $$ >logs/train.pid; exec nohup" in t


def test_git_mode_clones_the_ref_instead_of_copying(launch):
    r = launch.run("tpu_pod.sh", "setup", "--dry-run", *SLICE, "--git-url", "https://example.com/a.git",
                   "--ref", "v1.2")
    assert r.returncode == 0, r.stderr
    (setup,) = commands(r.stdout)
    s = remote(setup)
    assert "git clone -q https://example.com/a.git alphagrpo_jax" in s
    assert "fetch -q origin v1.2" in s and "checkout -q --detach FETCH_HEAD" in s


@pytest.mark.parametrize("accel, version", [("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-64", "v2-alpha-tpuv5-lite"),
                                            ("v6e-256", "v2-alpha-tpuv6e")])
def test_runtime_version_follows_the_accelerator(launch, accel, version):
    r = launch.run("tpu_pod.sh", "create", "--dry-run", *SLICE, "--accelerator-type", accel, "--spot")
    assert r.returncode == 0, r.stderr
    create = commands(r.stdout)[1]
    assert f"--version={version}" in create and "--spot" in create


def test_settings_come_from_the_environment_too(launch):
    env = launch.env(ALPHAGRPO_TPU_NAME="envname", ALPHAGRPO_TPU_ZONE="europe-west4-a", ALPHAGRPO_TPU_PROJECT="proj",
                     ALPHAGRPO_CONFIG="configs/toy_rt2i.py", ALPHAGRPO_WORKDIR="gs://b/w",
                     ALPHAGRPO_TRAIN_FLAGS="--config.total_steps=7")
    r = launch.run("tpu_pod.sh", "train", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    (train,) = commands(r.stdout)
    assert train[5] == "envname" and "--zone=europe-west4-a" in train and "--project=proj" in train
    assert "--config configs/toy_rt2i.py --config.workdir=gs://b/w --config.total_steps=7" in remote(train)


@pytest.mark.parametrize("args, message", [
    (("train", "--zone", "z", *TRAIN), "missing --name (or env ALPHAGRPO_TPU_NAME)"),
    (("train", "--name", "n", *TRAIN), "missing --zone (or env ALPHAGRPO_TPU_ZONE)"),
    (("train", *SLICE, "--workdir", "gs://b/w"), "missing --config (or env ALPHAGRPO_CONFIG)"),
    (("train", *SLICE, "--config", "configs/toy_rt2i.py"), "missing --workdir (or env ALPHAGRPO_WORKDIR)"),
    (("train", *SLICE, "--config", "configs/toy_rt2i.py", "--workdir", "/tmp/w"), "must be a gs:// path"),
    (("train", *SLICE, "--config", "configs/nope.py", "--workdir", "gs://b/w"), "--config configs/nope.py: no such"),
    (("train", *SLICE, *TRAIN, "--env-file", "/nonexistent"), "--env-file /nonexistent: no such file"),
    (("train", *SLICE, *TRAIN, "--env", "no-equals"), "--env expects NAME=VALUE"),
    (("create", *SLICE), "missing --accelerator-type"),
    (("create", *SLICE, "--accelerator-type", "v9x-8"), "no default runtime --version for accelerator type 'v9x-8'"),
    (("setup", *SLICE, "--git-url", "https://x/a.git"), "--git-url needs --ref"),
    (("logs", *SLICE, "--worker", "first"), "--worker must be a non-negative integer"),
    (("train", *SLICE, "--zone"), "flag --zone needs a value"),
    (("train", *SLICE, "--bogus"), "unknown flag '--bogus'"),
    (("launch", *SLICE), "unknown command 'launch'"),
])
def test_bad_input_is_named(launch, args, message):
    r = launch.run("tpu_pod.sh", *args, "--dry-run")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert r.stdout == ""


def test_help(launch):
    r = launch.run("tpu_pod.sh", "--help")
    assert r.returncode == 0 and "Usage: launch/tpu_pod.sh COMMAND" in r.stdout and "--accelerator-type" in r.stdout


def _fake_venv(launch, node="grpo", workers=2):
    """A `.venv/bin/python` on each fake worker that records its argv and environment, then sleeps."""
    for w in range(workers):
        py = launch.cloud / node / f"w{w}" / "alphagrpo_jax" / ".venv" / "bin" / "python"
        py.parent.mkdir(parents=True)
        py.write_text(f"#!/bin/bash\n{shlex.quote(sys.executable)} -c 'import json, os, sys; json.dump("
                      "{\"argv\": sys.argv[1:], \"env\": dict(os.environ)}, open(\"run.json\", \"w\"))' \"$@\"\n"
                      "exec sleep 120\n")
        py.chmod(0o755)


def _wait_for(path, timeout=10.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.1)  # the writer closes the file
    return path


def test_train_status_logs_collect_stop_on_fake_workers(launch, tmp_path):
    _fake_venv(launch)
    env_file = tmp_path / "reward.env"
    env_file.write_text("OPENAI_API_KEY=sk-test-123\n")
    args = (*SLICE, *TRAIN, "--env-file", str(env_file), "--env", "GREETING=hello world")
    r = launch.run("tpu_pod.sh", "train", *args, "--", "--config.total_steps=3", ENDPOINTS)
    assert r.returncode == 0, r.stderr
    assert "grpo-w0: started pid" in r.stdout and "grpo-w1: started pid" in r.stdout
    pids = []
    for w in (0, 1):
        home = launch.cloud / "grpo" / f"w{w}" / "alphagrpo_jax"
        run = json.loads(_wait_for(home / "run.json").read_text())
        # Every word arrives exactly as typed here, through two shells (ssh --command and the remote bash).
        assert run["argv"] == ["-m", "alphagrpo_jax.train", "--config", "configs/bagel_7b_rt2i.py",
                               "--config.workdir=gs://bucket/runs/r1", "--config.total_steps=3", ENDPOINTS]
        assert run["env"]["ALPHAGRPO_DISTRIBUTED"] == "1" and run["env"]["GREETING"] == "hello world"
        assert run["env"]["OPENAI_API_KEY"] == "sk-test-123"
        assert oct((home / ".train.env").stat().st_mode & 0o777) == "0o600"
        assert "start" in (home / "logs" / f"train-grpo-w{w}.log").read_text()
        pids.append(int((home / "logs" / "train.pid").read_text()))
        assert os.getpgid(pids[-1]) == pids[-1]  # its own process group, so `stop` ends all it started
    assert "sk-test-123" not in r.stdout + r.stderr

    again = launch.run("tpu_pod.sh", "train", *args)
    assert again.returncode != 0 and "a run is going" in again.stderr

    status = launch.run("tpu_pod.sh", "status", *SLICE)
    assert status.returncode == 0 and "grpo-w0: running" in status.stdout and "grpo-w1: running" in status.stdout

    logs = launch.run("tpu_pod.sh", "logs", *SLICE, "--worker", "1", "--no-follow", "--lines", "5")
    assert logs.returncode == 0 and "start" in logs.stdout
    assert "--worker=1" in commands(logs.stdout)[0]

    out = tmp_path / "collected"
    collect = launch.run("tpu_pod.sh", "collect", *SLICE, "--logs-dir", str(out))
    assert collect.returncode == 0, collect.stderr
    assert sorted(p.name for p in (out / "grpo").iterdir()) == ["train-grpo-w0.log", "train-grpo-w1.log"]

    stop = launch.run("tpu_pod.sh", "stop", *SLICE)
    assert stop.returncode == 0, stop.stderr
    stopped = {line.split(":")[0] for line in stop.stdout.splitlines() if ": stopped " in line and line[0] != "+"}
    assert stopped == {"grpo-w0", "grpo-w1"}, stop.stdout
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    status = launch.run("tpu_pod.sh", "status", *SLICE)
    assert "grpo-w0: not running" in status.stdout and "grpo-w1: not running" in status.stdout


@pytest.mark.parametrize("state, created, rc", [(None, True, 0), ("READY", False, 0), ("PREEMPTED", False, 2)])
def test_create_reuses_a_ready_slice(launch, state, created, rc):
    if state:
        (launch.cloud / "state").mkdir(parents=True)
        (launch.cloud / "state" / "grpo").write_text(state)
    r = launch.run("tpu_pod.sh", "create", *SLICE, "--accelerator-type", "v5p-64")
    assert r.returncode == rc, r.stderr
    calls = [json.loads(x) for x in (launch.cloud / "calls.jsonl").read_text().splitlines()]
    assert [c[3] for c in calls] == (["describe", "create"] if created else ["describe"])
    if rc:
        assert "exists in state 'PREEMPTED'" in r.stderr
