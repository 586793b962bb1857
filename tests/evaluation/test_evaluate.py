"""`python -m alphagrpo_jax.evaluate` end to end on the tiny release (shapes read from it): the toy benchmark's
layout, manifest, scores and report; per-row seeds (a batch draws what one-by-one draws); SRR; resume after a
kill; bad input as a one-line error (exit 2) before any model loads."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax import evaluate
from alphagrpo_jax.models.bagel import config as config_lib
from configs import eval_base

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(goldens_dir, out, **kw):
    c = eval_base.get_config("toy")
    side = config_lib.from_release_dir(str(goldens_dir)).latent_downsample * 2
    c.release, c.out, c.limit, c.cache_size = str(goldens_dir), str(out), 3, 512
    c.generation.update(dict(height=side, width=side, num_timesteps=3, batch_size=2, think_tokens=8))
    for key, value in kw.items():
        node, _, leaf = key.rpartition(".")
        (c[node] if node else c)[leaf] = value
    return c


def _images(out):
    rows = [json.loads(x) for x in open(os.path.join(out, "manifest.jsonl"))]
    return {r["key"]: np.asarray(Image.open(r["files"][0])) for r in rows}, rows


def test_toy_end_to_end_seeds_and_two_processes(goldens_dir, tmp_path, monkeypatch):
    evaluate.main(_config(goldens_dir, tmp_path / "b2"))   # 3 prompts: a batch of 2 and a padded batch of 1
    images, rows = _images(tmp_path / "b2")
    side = config_lib.from_release_dir(str(goldens_dir)).latent_downsample * 2
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3
    for r in rows:
        assert r["files"] == [os.path.join(str(tmp_path / "b2"), r["dimension"], f"{r['index']:04d}.png")]
        assert images[r["key"]].shape == (side, side, 3) and 0.0 <= r["score"][0] <= 1.0
    scores = json.load(open(tmp_path / "b2" / "scores.json"))
    assert scores["scores"]["score"]["all"] == pytest.approx(np.mean([r["score"][0] for r in rows]))
    assert not scores["comparable_to_published"] and "first 3 prompts" in scores["caveats"][0]
    assert "| all |" in (tmp_path / "b2" / "report.md").read_text()
    # The same prompts one at a time, split over 2 processes (process 1 first: process 0 reports once all are
    # drawn). Each image depends on (seed, prompt index, sample index) only, so the run is the 1-process run.
    out = tmp_path / "two"
    for index in (1, 0):
        monkeypatch.setattr(evaluate, "process", lambda index=index: (index, 2))
        evaluate.main(_config(goldens_dir, out, **{"generation.batch_size": 1}))
        assert (out / "scores.json").exists() == (index == 0)
    by_process = [[json.loads(x) for x in open(out / f"manifest.process{p}.jsonl")] for p in (0, 1)]
    assert [[r["index"] for r in rows] for rows in by_process] == [[0, 2], [1]]
    for rows in by_process:
        for r in rows:
            image = np.asarray(Image.open(r["files"][0]))
            assert np.abs(image.astype(int) - images[r["key"]].astype(int)).max() <= 2, r["key"]
    two = json.load(open(out / "scores.json"))["scores"]["score"]
    assert two == pytest.approx(scores["scores"]["score"], abs=0.02)


def test_refine_reports_first_draw_vs_refined(goldens_dir, tmp_path):
    evaluate.main(_config(goldens_dir, tmp_path, limit=1, **{"refine.rounds": 1, "refine.threshold": 1.1,
                                                            "refine.gate": "dvreward"}))
    (row,) = [json.loads(x) for x in open(tmp_path / "manifest.jsonl")]
    assert row["rounds"] == [1] and len(row["gate_scores"][0]) == 2  # threshold > 1: never satisfied, 1 redraw
    # the dvreward gate is the toy verifier here: its scores are the recorded scores of the two images
    assert [row["first_score"][0], row["score"][0]] == pytest.approx(row["gate_scores"][0], abs=1e-5)
    assert "first draw vs refined" in (tmp_path / "report.md").read_text()


def test_gedit_editing_and_judge_end_to_end(goldens_dir, tmp_path):
    """Editing from the dataset's source images, batched by input size, then judged through the toy server."""
    from alphagrpo_jax.toy import serve
    from tests.evaluation import fixtures

    with serve.make_server(model="toy-judge") as server:
        c = _config(goldens_dir, tmp_path / "out", benchmark="gedit", data=str(fixtures.gedit(tmp_path)),
                    transform="toy", limit=0, **{"judge.endpoint": server.url, "judge.model": "toy-judge",
                                                  "judge.api_key_env": ""})
        evaluate.main(c)
    rows = [json.loads(x) for x in open(tmp_path / "out" / "manifest.jsonl")]
    assert [r["key"] for r in rows] == ["color_alter/en/k0", "subject-add/en/k1", "color_alter/cn/k2"]
    for r in rows:
        edit, src = r["files"]
        assert src == edit[:-len(".png")] + "_SRCIMG.png" and os.path.exists(edit)
    scores = json.load(open(tmp_path / "out" / "scores.json"))
    assert set(scores["scores"]["judge"]) >= {"en/overall", "cn/overall", "color_alter/en/semantics"}
    assert scores["provenance"]["judge"]["model"] == "toy-judge"
    assert any("this project's wording" in c for c in scores["caveats"])


def _cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "alphagrpo_jax.evaluate", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_resume_after_kill(goldens_dir, tmp_path):
    out = tmp_path / "out"
    side = config_lib.from_release_dir(str(goldens_dir)).latent_downsample * 2
    args = ["--release", str(goldens_dir), "--out", str(out), "--config.limit=5", "--config.cache_size=512",
            f"--config.generation.height={side}", f"--config.generation.width={side}",
            "--config.generation.num_timesteps=3", "--config.generation.batch_size=1"]
    proc = _cli(*args)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    before = [json.loads(x) for x in manifest.read_text().splitlines() if x.endswith("}")]
    assert 2 <= len(before) < 5, "the run finished before it could be killed"
    with open(manifest, "a") as f:  # and a torn last row, as a kill in the middle of an append leaves
        f.write('{"key": "torn')
    mtimes = {r["key"]: os.stat(r["files"][0]).st_mtime_ns for r in before}
    evaluate.main(_config(goldens_dir, out, limit=5, **{"generation.batch_size": 1}))
    after = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert [r["key"] for r in after[:len(before)]] == [r["key"] for r in before]
    assert len(after) == 5 and len({r["key"] for r in after}) == 5
    for key, mtime in mtimes.items():  # finished prompts were not redrawn
        assert os.stat(next(r for r in after if r["key"] == key)["files"][0]).st_mtime_ns == mtime


def test_bad_input_is_one_line_exit_2(goldens_dir, tmp_path):
    proc = _cli("--benchmark", "geneval", "--release", str(goldens_dir), "--data", str(tmp_path / "none.jsonl"),
                "--out", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "none.jsonl: no such file" in line
    proc = _cli("--benchmark", "toy", "--release", str(tmp_path / "norelease"), "--out", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "norelease: no such folder" in err
