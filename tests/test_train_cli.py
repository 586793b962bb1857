"""`python -m alphagrpo_jax.train` as a user runs it (a tiny run of the toy recipe on the tiny golden model): the
output is quiet and readable (no TPU probing noise although libtpu is installed, the config as plain YAML, log lines on
lines of their own beside the progress bar) and TensorBoard gets the sample grids, think texts, config and hparams
in `<workdir>/tensorboard/`. Slow (a subprocess compiles the trainer); tests/test_metrics.py covers the parts fast."""
import os
import re
import subprocess
import sys

import pytest

from alphagrpo_jax import tensorboard_events
from tests.models.bagel.parity_utils import GOLDENS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config.total_steps=1", "--config.rollout.prompts_per_round=2", "--config.rollout.group_size=2",
        "--config.rollout.rounds_per_step=1", "--config.rollout.cache_size=448",
        "--config.rollout.text.max_new_tokens=6", "--config.rollout.image.num_timesteps=4",
        "--config.rollout.image.sde_window=1", "--config.rollout.image.sde_window_range=(0,3)",
        "--config.eval.every=1", "--config.eval.num_prompts=2", "--config.eval.batch_size=2",
        "--config.eval.num_timesteps=4", "--config.toy.eval_per_category=1", "--config.toy.train_per_category=1",
        "--config.log.grid_size=2", "--config.log.tensorboard=True"]


@pytest.mark.slow
def test_tiny_train_run_output_and_tensorboard(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("JAX_PLATFORMS", None)  # as a user's shell: the programs must be quiet without it
    r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.train", f"--config={REPO}/configs/toy_rt2i.py",
                        f"--config.workdir={workdir}", f"--config.model.release={GOLDENS}", *TINY],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "!!python" not in out and "_locked" not in out
    assert re.search(r"^reward:\n", r.stdout, re.M) and "  weights:\n" in r.stdout  # the config print, plain YAML
    noisy = [line for line in out.splitlines() if "libtpu" in line or "TPU" in line]  # libtpu is installed (test extra)
    assert not noisy, noisy[:3]
    evals = [m.start() for m in re.finditer(r"\d{4}-\d\d-\d\d [\d:,]+ INFO alphagrpo_jax.train: eval step", r.stderr)]
    assert len(evals) == 2  # steps 0 and 1
    for at in evals:
        # Each starts a (terminal) line: after a newline, or after the carriage return of a cleared bar.
        start = r.stderr.rfind("\n", 0, at)
        assert r.stderr[start + 1:at].rsplit("\r", 1)[-1] == "", repr(r.stderr[max(0, at - 120):at])
    names = os.listdir(workdir / "tensorboard")
    tags = {}
    for name in names:
        for e in tensorboard_events.events(str(workdir / "tensorboard" / name)):
            for v in e.summary.value:
                tags.setdefault(v.tag, []).append((e.step, v))
    assert [s for s, _ in tags["eval/samples"]] == [0, 1] and tags["eval/samples"][0][1].image.height > 0
    think = tags["eval/think/text_summary"][0][1].tensor.string_val[0].decode()
    assert think.startswith("| prompt | think | reward (toy_dvreward + 0.2*think_format) |")
    assert "  weights:" in tags["config/text_summary"][0][1].tensor.string_val[0].decode()
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "eval/reward", "reward/mean"} <= set(tags)
