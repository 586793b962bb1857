"""Kill-anywhere: a toy GRPO run SIGKILLed at chosen points (after a step's metrics row, in the middle of one,
while an async Orbax save is in flight) and resumed each time ends with the SAME params, optimizer state,
metrics rows (no duplicates, no torn line) and TensorBoard scalars as an uninterrupted run.

Runs are real processes (tests/reliability/kill_worker.py: the trainer's command line, killing itself at the
point in $KILL_AT) on the tiny config family; they share the session's JAX compilation cache, so at most the first
compiles."""
import json
import os
import pathlib
import signal
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alphagrpo_jax import metrics, paths, tensorboard_events
from tests.test_train import tiny_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "reliability" / "kill_worker.py"
STEPS = 3
# tests/test_train.py's tiny family, one round per step: the runs load the trainer's programs from the session's
# compilation cache (tests/conftest.py).
OVERRIDES = {"rollout.rounds_per_step": 1, "advantage.population": 2, "checkpoint.keep": 10, "log.tensorboard": True}


@pytest.fixture(scope="module")
def compile_cache():
    return os.environ["JAX_COMPILATION_CACHE_DIR"]  # the session's (tests/conftest.py), which subprocesses inherit


def _run(workdir, compile_cache, kill_at=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=compile_cache)
    env.pop("KILL_AT", None)
    if kill_at:
        env["KILL_AT"] = kill_at
    cmd = [sys.executable, str(WORKER), "--config", str(ROOT / "configs" / "toy_rt2i.py"),
           *tiny_flags(workdir, STEPS, OVERRIDES)]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    expected = -signal.SIGKILL if kill_at else 0
    assert p.returncode == expected, f"KILL_AT={kill_at}: exit {p.returncode}\n{p.stderr[-3000:]}"
    return p


def _rows(workdir):
    """Metrics rows in file order, without wall-clock values (time, time/*)."""
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith("time/")}
            for r in metrics.read_metrics(os.path.join(workdir, "metrics.jsonl"))]


def _scalars(workdir):
    """Sorted (tag, step, value) of every TensorBoard scalar; timings keep (tag, step) only."""
    logdir = os.path.join(workdir, "tensorboard")
    out = []
    for name in paths.listdir(logdir):
        for e in tensorboard_events.events(os.path.join(logdir, name)):
            out += [(v.tag, e.step, None if v.tag.startswith("time/") else v.simple_value) for v in e.summary.value]
    return sorted(out, key=repr)


def _final_checkpoint(workdir):
    folder = os.path.join(workdir, "checkpoints", str(STEPS))
    state = jax.tree.map(np.asarray, ocp.StandardCheckpointer().restore(os.path.join(folder, "state")))
    with open(os.path.join(folder, "extras", "metadata")) as f:
        return state, json.load(f)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, compile_cache):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    _run(workdir, compile_cache)
    return workdir


def _check_killed(workdir, kill_at):
    """The kill happened where it was meant to."""
    what, step = kill_at.split(":")
    text = (workdir / "metrics.jsonl").read_text()
    if what == "torn_row":
        assert not text.endswith("\n")
    elif what == "row":
        assert json.loads(text.splitlines()[-1])["step"] == int(step)
    else:  # the step's row was logged; its save's files were being written, the step was never committed
        assert int(step) in [json.loads(line)["step"] for line in text.splitlines()]
        assert (workdir / "checkpoints" / f"{step}.orbax-checkpoint-tmp").is_dir()
        assert not (workdir / "checkpoints" / step).exists()


@pytest.mark.parametrize("kills", [
    ("save:2",),  # rows 2 (and maybe 3) logged again after the resume from step 1
    # Before any checkpoint, after a row, mid-row (torn line; test_metrics covers it without processes), and
    # during the last step's save.
    pytest.param(("row:1", "save:2", "row:2", "torn_row:3", "save:3"), marks=pytest.mark.slow),
])
def test_killed_and_resumed_run_equals_uninterrupted(reference, compile_cache, tmp_path, kills):
    for kill_at in kills:
        _run(tmp_path, compile_cache, kill_at)
        _check_killed(tmp_path, kill_at)
    _run(tmp_path, compile_cache)
    assert [r["step"] for r in _rows(tmp_path)] == list(range(1, STEPS + 1))
    assert _rows(tmp_path) == _rows(reference)
    assert _scalars(tmp_path) == _scalars(reference)
    (state_a, extras_a), (state_b, extras_b) = _final_checkpoint(reference), _final_checkpoint(tmp_path)
    assert extras_a == extras_b
    assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
