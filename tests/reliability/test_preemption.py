"""Preemption as a job controller delivers it: SIGTERM to a running trainer. The run saves the step it is at, says
so, skips the final held-out summary and exits 75 (checkpointing.PREEMPTED_EXIT_CODE, EX_TEMPFAIL), so the
controller requeues it; 0 is kept for a finished run."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from alphagrpo_jax import checkpointing
from tests.test_train import tiny_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module, config, workdir, flags):
    """`python -m alphagrpo_jax.<module>` (flags: "--config.k=v" strings), logging to files in `workdir`."""
    cmd = [sys.executable, "-m", f"alphagrpo_jax.{module}", "--config", os.path.join(ROOT, "configs", config), *flags]
    # The session's environment (tests/conftest.py): 8 devices, its fast XLA flags and its compilation cache, so
    # the tiny family's programs load from the cache.
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    out, err = (open(os.path.join(workdir, n), "a") for n in ("stdout.txt", "stderr.txt"))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)


def _grpo(workdir, steps):
    """The GRPO CLI on tests/test_train.py's tiny family (one round per step), a checkpoint every step, an eval only
    at step 0."""
    return _run("train", "toy_rt2i.py", workdir, tiny_flags(workdir, steps, {
        "rollout.rounds_per_step": 1, "advantage.population": 2, "eval.every": 1000}))


def _rows(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [r for r in map(json.loads, open(path).read().splitlines()) if "reward/mean" in r or "loss" in r]


def _sigterm_after(proc, workdir, rows: int) -> int:
    """Sends SIGTERM once `workdir` logged `rows` step rows; returns the exit status."""
    try:
        deadline = time.time() + 600
        while len(_rows(workdir)) < rows and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, open(os.path.join(workdir, "stderr.txt")).read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()


def _read(workdir, name):
    return open(os.path.join(workdir, name)).read()


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("grpo"))
    return wd, _sigterm_after(_grpo(wd, 50), wd, rows=2)


def test_sigterm_saves_and_exits_75_without_the_final_summary(preempted):
    wd, rc = preempted
    assert rc == checkpointing.PREEMPTED_EXIT_CODE == 75, _read(wd, "stderr.txt")[-3000:]
    n = _rows(wd)[-1]["step"]
    assert f"preempted at step {n}; checkpoint saved; rerun the same command to resume" in _read(wd, "stdout.txt")
    assert "held-out reward" not in _read(wd, "stdout.txt")  # the summary of a finished run is not printed
    assert [r["step"] for r in _rows(wd)] == list(range(1, n + 1)) and 2 <= n < 50
    assert str(n) in os.listdir(os.path.join(wd, "checkpoints"))


def test_rerun_falls_back_from_a_damaged_latest_checkpoint(preempted):
    """The requeued run finds its newest checkpoint damaged (its data files cut short): it says so, resumes from the
    step before, saves the damaged step's number again and finishes (exit 0)."""
    wd, _ = preempted
    n = max(int(d) for d in os.listdir(os.path.join(wd, "checkpoints")))
    # Every OCDBT data file (in `d/` folders): on 8 devices the step holds per-process and merged copies.
    data = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(wd, "checkpoints", str(n), "state"))
            for f in fs if os.path.basename(d) == "d"]
    assert data
    for f in data:
        os.truncate(f, os.path.getsize(f) // 2)
    proc = _grpo(wd, n)
    assert proc.wait(timeout=900) == 0, _read(wd, "stderr.txt")[-3000:]
    err = _read(wd, "stderr.txt")
    assert re.search(rf"checkpoint step {n} \(.*checkpoints/{n}\) is damaged: Orbax cannot read it "
                     rf"\(.*OUT_OF_RANGE.*\); falling back to step {n - 1} \(moved to .*checkpoints.damaged/{n}-", err)
    assert f"resumed from step {n - 1}" in err
    assert str(n) in os.listdir(os.path.join(wd, "checkpoints"))  # step n saved again, not refused as existing
    assert len(os.listdir(os.path.join(wd, "checkpoints.damaged"))) == 1


def test_sft_sigterm_exits_75(tmp_path):
    wd = str(tmp_path)
    flags = [f"--config.workdir={wd}", "--config.total_steps=1000", "--config.optim.decay_steps=1000"]
    rc = _sigterm_after(_run("sft", "toy_sft.py:tiny", wd, flags), wd, rows=1)
    assert rc == 75, _read(wd, "stderr.txt")[-3000:]
    n = max(r["step"] for r in _rows(wd))
    assert f"preempted at step {n}; checkpoint saved; rerun the same command to resume" in _read(wd, "stdout.txt")
    assert str(n) in os.listdir(os.path.join(wd, "checkpoints"))
