"""Preemption as a job controller delivers it: SIGTERM to a running trainer. The run saves the step it is at, says
so, skips the final held-out summary and exits 75 (checkpointing.PREEMPTED_EXIT_CODE, EX_TEMPFAIL), so the
controller requeues it; 0 is kept for a finished run."""
import json
import os
import signal
import subprocess
import sys
import time

from alphagrpo_jax import checkpointing
from tests.models.bagel.parity_utils import GOLDENS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _trainer(workdir, steps):
    """The GRPO CLI on the tiny golden release (one device: the fastest compile), logging to files."""
    flags = dict(workdir=workdir, total_steps=steps, **{
        "model.release": GOLDENS, "rollout.prompts_per_round": 2, "rollout.group_size": 2,
        "rollout.rounds_per_step": 1, "rollout.cache_size": 448, "rollout.text.max_new_tokens": 6,
        "rollout.image.num_timesteps": 4, "rollout.image.sde_window": 1, "rollout.image.sde_window_range": "(0,3)",
        "eval.every": 1000, "eval.num_prompts": 2, "eval.batch_size": 2, "eval.num_timesteps": 4,
        "checkpoint.every": 1000, "log.tensorboard": False})
    cmd = [sys.executable, "-m", "alphagrpo_jax.train", "--config", os.path.join(ROOT, "configs", "toy_rt2i.py")]
    cmd += [f"--config.{k}={v}" for k, v in flags.items()]
    env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    out, err = (open(os.path.join(workdir, n), "w") for n in ("stdout.txt", "stderr.txt"))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)


def _steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [r["step"] for r in map(json.loads, open(path).read().splitlines()) if "reward/mean" in r]


def test_sigterm_saves_and_exits_75_without_the_final_summary(tmp_path):
    wd = str(tmp_path)
    proc = _trainer(wd, 50)
    try:
        deadline = time.time() + 500
        while not _steps(wd) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, open(os.path.join(wd, "stderr.txt")).read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = open(os.path.join(wd, "stdout.txt")).read()
    assert rc == checkpointing.PREEMPTED_EXIT_CODE == 75, open(os.path.join(wd, "stderr.txt")).read()[-3000:]
    n = _steps(wd)[-1]
    assert f"preempted at step {n}; checkpoint saved; rerun the same command to resume" in stdout
    assert "held-out reward" not in stdout  # the summary of a finished run is not printed
    assert _steps(wd) == list(range(1, n + 1)) and n < 50
    assert str(n) in os.listdir(os.path.join(wd, "checkpoints"))  # saved although checkpoint.every is 1000
