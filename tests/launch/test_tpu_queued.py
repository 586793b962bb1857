"""launch/tpu_queued.sh: one-slice and multi-slice requests, the wait for ACTIVE (through fake_gcloud.py),
every slice set up and trained with the DCN mesh flag, and flag errors."""
import json

import pytest

from tests.launch.launch_utils import commands, remote

WHERE = ("--qr-id", "grpo-ms", "--zone", "us-east5-a")
TRAIN = ("--config", "configs/bagel_7b_rt2i.py", "--workdir", "gs://bucket/runs/ms")


def test_multislice_up_dry_run(launch):
    r = launch.run("tpu_queued.sh", "up", "--dry-run", *WHERE, "--accelerator-type", "v5p-128", "--node-count", "2",
                   "--best-effort", *TRAIN, "--", "--config.total_steps=10")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    create = cmds[0]
    assert create[:6] == ["gcloud", "alpha", "compute", "tpus", "queued-resources", "create"] and create[6] == "grpo-ms"
    for part in ("--accelerator-type=v5p-128", "--runtime-version=v2-alpha-tpuv5", "--node-count=2",
                 "--node-prefix=grpo-ms", "--best-effort", "--zone=us-east5-a"):
        assert part in create
    assert cmds[1][5] == "describe" and "--format=value(state.state)" in cmds[1]
    ssh = [c for c in cmds if c[4:5] == ["ssh"]]
    assert [(c[5], "setup" if "pip install" in remote(c) else "train") for c in ssh] == [
        ("grpo-ms-0", "setup"), ("grpo-ms-1", "setup"), ("grpo-ms-0", "train"), ("grpo-ms-1", "train")]
    assert all("--worker=all" in c for c in ssh)
    for c in ssh[2:]:
        assert ("-m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py --config.workdir=gs://bucket/runs/ms "
                "--config.total_steps=10 --config.mesh_dcn.data=2") in remote(c)


def test_one_slice_uses_node_id_and_no_dcn_flag(launch):
    r = launch.run("tpu_queued.sh", "up", "--dry-run", *WHERE, "--accelerator-type", "v6e-64", "--spot", *TRAIN)
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    assert "--node-id=grpo-ms" in cmds[0] and "--spot" in cmds[0] and not any("node-count" in w for w in cmds[0])
    train = [c for c in cmds if c[4:5] == ["ssh"]][-1]
    assert train[5] == "grpo-ms" and "mesh_dcn" not in remote(train)


def test_no_dcn_flag_leaves_the_mesh_to_the_config(launch):
    r = launch.run("tpu_queued.sh", "train", "--dry-run", *WHERE, "--node-count", "3", "--no-dcn-flag", *TRAIN)
    assert r.returncode == 0, r.stderr
    ssh = commands(r.stdout)
    assert [c[5] for c in ssh] == ["grpo-ms-0", "grpo-ms-1", "grpo-ms-2"]
    assert not any("mesh_dcn" in remote(c) for c in ssh)


def test_create_waits_until_active(launch):
    r = launch.run("tpu_queued.sh", "create", *WHERE, "--accelerator-type", "v5p-128", "--node-count", "2",
                   "--poll-seconds", "0")
    assert r.returncode == 0, r.stderr
    assert "WAITING_FOR_RESOURCES" in r.stdout and "PROVISIONING" in r.stdout
    assert "# grpo-ms is ACTIVE: grpo-ms-0 grpo-ms-1" in r.stdout
    verbs = [json.loads(x)[4] for x in (launch.cloud / "calls.jsonl").read_text().splitlines()]
    assert verbs == ["create", "describe", "describe", "describe"]


@pytest.mark.parametrize("state", ["FAILED", "SUSPENDED"])
def test_wait_fails_on_a_dead_request(launch, state):
    (launch.cloud / "qr").mkdir(parents=True)
    (launch.cloud / "qr" / "grpo-ms").write_text(f"PROVISIONING\n{state}\n")
    r = launch.run("tpu_queued.sh", "wait", *WHERE, "--poll-seconds", "0")
    assert r.returncode == 2 and f"queued resource grpo-ms is {state}" in r.stderr


def test_wait_gives_up_after_the_timeout(launch):
    (launch.cloud / "qr").mkdir(parents=True)
    (launch.cloud / "qr" / "grpo-ms").write_text("WAITING_FOR_RESOURCES\n")
    r = launch.run("tpu_queued.sh", "wait", *WHERE, "--poll-seconds", "0", "--wait-timeout", "0")
    assert r.returncode == 2 and "still WAITING_FOR_RESOURCES after 0s" in r.stderr


def test_logs_and_delete(launch):
    r = launch.run("tpu_queued.sh", "logs", "--dry-run", *WHERE, "--node-count", "2", "--node", "1", "--worker", "3")
    assert r.returncode == 0, r.stderr
    (logs,) = commands(r.stdout)
    assert logs[5] == "grpo-ms-1" and "--worker=3" in logs and remote(logs).startswith("tail -n 100 -F ")
    r = launch.run("tpu_queued.sh", "delete", "--dry-run", *WHERE)
    assert commands(r.stdout) == [["gcloud", "alpha", "compute", "tpus", "queued-resources", "delete", "grpo-ms",
                                   "--zone=us-east5-a", "--force", "--quiet"]]


@pytest.mark.parametrize("args, message", [
    (("create", "--zone", "z"), "missing --qr-id (or env ALPHAGRPO_QR_ID)"),
    (("create", *WHERE), "missing --accelerator-type"),
    (("train", *WHERE, "--node-count", "0", *TRAIN), "--node-count must be at least 1"),
    (("logs", *WHERE, "--node-count", "2", "--node", "2"), "--node 2: there are only 2 slices"),
    (("train", *WHERE, "--workdir", "gs://b/w"), "missing --config"),
    (("wait", *WHERE, "--poll-seconds", "soon"), "--poll-seconds must be a non-negative integer"),
])
def test_bad_input_is_named(launch, args, message):
    r = launch.run("tpu_queued.sh", *args, "--dry-run")
    assert r.returncode == 2 and message in r.stderr, r.stderr
