import json
import logging
import math
import os
import time

import numpy as np
import pytest

from alphagrpo_jax import metrics, paths, tensorboard_events


def _scalars(logdir):
    """Sorted (tag, step, value) of every scalar in the event files under `logdir` (local or remote)."""
    out = []
    for name in paths.listdir(logdir):
        for e in tensorboard_events.events(paths.join(logdir, name)):
            out += [(v.tag, e.step, v.simple_value) for v in e.summary.value]
    return sorted(out)


def test_jsonl_and_tensorboard(tmp_path):
    w = metrics.MetricsWriter(str(tmp_path), tensorboard=True)
    w.write(1, {"loss": np.float32(0.5), "reward": np.asarray(0.25), "hist": np.arange(3), "bad": math.nan})
    w.write(2, {"loss": 0.25})
    w.close()
    rows = metrics.read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 0.5 and rows[0]["reward"] == 0.25 and rows[0]["hist"] == [0, 1, 2]
    assert rows[0]["bad"] == "nan"
    assert _scalars(str(tmp_path / "tensorboard")) == [("loss", 1, 0.5), ("loss", 2, 0.25), ("reward", 1, 0.25)]


def test_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    with caplog.at_level(logging.WARNING):
        assert metrics.read_metrics(str(p)) == [{"step": 1}]
    assert f"{p}:2: torn last line" in caplog.text
    # The writer drops it before appending, so the next row does not merge into it.
    w = metrics.MetricsWriter(str(tmp_path))
    w.write(2, {"loss": 1.0})
    assert [(r["step"], r.get("loss")) for r in metrics.read_metrics(str(p))] == [(1, None), (2, 1.0)]
    assert p.read_text().endswith("}\n") and p.read_text().count("\n") == 2


def test_complete_last_row_without_newline_is_kept(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}))  # only the newline was lost
    assert [r["step"] for r in metrics.read_metrics(str(p))] == [1, 2]
    metrics.MetricsWriter(str(tmp_path)).write(3, {})
    assert [r["step"] for r in metrics.read_metrics(str(p))] == [1, 2, 3]


def test_corruption_before_the_last_line_is_refused(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1}\n{"step": 2, "lo{"step": 3}\n{"step": 4}\n')  # old writers merged torn lines
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics row"):
        metrics.read_metrics(str(p))
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics row"):
        metrics.MetricsWriter(str(tmp_path)).truncate(3)


def test_report_skips_a_torn_last_line(tmp_path, caplog):
    from alphagrpo_jax import report

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "reward/mean": s / 10}) + "\n"
                                                    for s in (1, 2)) + '{"step": 3, "rew')
    with caplog.at_level(logging.WARNING):
        steps, values = report.curves(str(tmp_path / "metrics.jsonl"))["reward/mean"]
    assert steps.tolist() == [1, 2] and values.tolist() == [0.1, 0.2] and "torn last line" in caplog.text


def _killed_run(workdir, tensorboard=True):
    """What a run killed during step 4 leaves: rows and events of steps 1-3, a row torn mid-write."""
    w = metrics.MetricsWriter(workdir, tensorboard=tensorboard)
    for s in (1, 2, 3):
        w.write(s, {"loss": s / 4})
    w.write_image(3, "grid", np.zeros((2, 2, 3), np.uint8))
    w.close()
    paths.append_text(paths.join(workdir, "metrics.jsonl"), '{"loss": 1.0, "st')


@pytest.mark.parametrize("where", ["local", "memory"])
def test_truncate_on_resume_drops_what_the_killed_run_logged_after_the_checkpoint(tmp_path, where):
    workdir = str(tmp_path) if where == "local" else f"memory://bucket/{tmp_path.name}/run"
    _killed_run(workdir)
    # Resume from the step-1 checkpoint: steps 2-4 are logged again.
    w = metrics.MetricsWriter(workdir, tensorboard=True)
    assert w.truncate(1) == 2
    for s in (2, 3, 4):
        w.write(s, {"loss": s / 4})
    w.close()
    rows = metrics.read_metrics(paths.join(workdir, "metrics.jsonl"))
    assert [(r["step"], r["loss"]) for r in rows] == [(s, s / 4) for s in (1, 2, 3, 4)]
    tb = paths.join(workdir, "tensorboard")
    assert _scalars(tb) == [("loss", s, s / 4) for s in (1, 2, 3, 4)]
    images = [e.step for n in paths.listdir(tb) for e in tensorboard_events.events(paths.join(tb, n))
              if any(v.HasField("image") for v in e.summary.value)]
    assert images == []  # the step-3 image was logged after the checkpoint: dropped with it
    if where == "memory":
        assert not os.path.exists("memory:")  # nothing written to a local folder named after the scheme


def test_truncate_repairs_a_torn_event_record(tmp_path):
    w = metrics.MetricsWriter(str(tmp_path), tensorboard=True)
    for s in (1, 2):
        w.write(s, {"loss": float(s)})
    w.close()
    (name,) = os.listdir(tmp_path / "tensorboard")
    f = tmp_path / "tensorboard" / name
    f.write_bytes(f.read_bytes()[:-7])  # killed mid-record: the step-2 event is cut
    assert tensorboard_events.read(str(f), f.read_bytes())[1]  # torn
    assert _scalars(str(tmp_path / "tensorboard")) == [("loss", 1, 1.0)]
    metrics.MetricsWriter(str(tmp_path), tensorboard=True).truncate(5)
    records, torn = tensorboard_events.read(str(f), f.read_bytes())
    assert not torn and len(records) == 2  # file version + step 1, framed with valid CRCs


def test_phase_timer():
    t = metrics.PhaseTimer()
    with t("rollout"):
        time.sleep(0.01)
    with t("rollout"):
        time.sleep(0.01)
    t.add("train", 1.5)
    out = t.pop()
    assert out["time/rollout"] >= 0.02 and out["time/train"] == 1.5
    assert t.pop() == {}


def test_progress_bar_counts():
    bar = metrics.progress(total=3, desc="x")
    for _ in range(3):
        bar.update(1)
    assert bar.n == 3
    bar.close()


def test_phase_records_into_the_active_timer_only():
    timer = metrics.PhaseTimer()
    with metrics.phase("outside") as sync:
        assert sync(3) == 3  # nothing active: no timing, no blocking
    assert timer.pop() == {}
    with timer.active():
        with metrics.phase("inside") as sync:
            time.sleep(0.01)
            sync(np.ones(2))
        with metrics.PhaseTimer().active(), metrics.phase("elsewhere"):
            pass  # a nested active timer takes the sub-phase
    out = timer.pop()
    assert set(out) == {"time/inside"} and out["time/inside"] >= 0.01


def test_event_framing_matches_tensorboardx(tmp_path):
    from tensorboardX.record_writer import RecordWriter

    w = RecordWriter(str(tmp_path / "rec"))
    for data in (b"", b"abc", bytes(range(256)) * 3):
        w.write(data)
    w.close()
    expected = (tmp_path / "rec").read_bytes()
    assert b"".join(tensorboard_events.frame(d) for d in (b"", b"abc", bytes(range(256)) * 3)) == expected
    assert tensorboard_events.read("rec", expected) == ([b"", b"abc", bytes(range(256)) * 3], False)


def test_truncate_before_the_first_checkpoint_drops_step_0_rows_too(tmp_path):
    w = metrics.MetricsWriter(str(tmp_path))
    w.write(0, {"eval/reward": 0.5})  # the trainer's step-0 eval, logged again by a run that restarts from 0
    w.write(1, {"loss": 1.0})
    assert metrics.MetricsWriter(str(tmp_path)).truncate(-1) == 2
    assert metrics.read_metrics(str(tmp_path / "metrics.jsonl")) == []


def test_log_lines_are_written_above_the_progress_bar_not_onto_it():
    """A log line while a bar is open starts a line of its own (tqdm.write), and logging is restored after."""
    import subprocess
    import sys

    script = ("import logging; from alphagrpo_jax import cli, metrics\n"
              "cli.setup_logging(); log = logging.getLogger('t')\n"
              "bar = metrics.progress(total=3, desc='grpo', unit='step'); bar.update(1)\n"
              "log.info('eval step 1: 0.5'); bar.update(1); bar.close(); log.info('after the bar')\n")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    for line in ("eval step 1: 0.5", "after the bar"):
        at = r.stderr.index(line)
        head = r.stderr[:at].rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
        assert head.endswith("t: ") and "grpo" not in head, repr(r.stderr[max(0, at - 200):at + 40])


def test_tensorboard_gets_images_texts_and_hparams(tmp_path):
    """Read back with the proto code: a PNG image summary, a text-plugin tensor and the hparams plugin's records."""
    import io

    from PIL import Image
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    w = metrics.MetricsWriter(str(tmp_path), tensorboard=True)
    grid = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    w.write_hparams({"optim.lr": 3e-4, "task.kinds": "('rt2i',)", "loss.train_text": True}, ["eval/reward"])
    w.write_text(0, "config", "    lr: 0.0003")
    w.write(1, {"eval/reward": 0.5})
    w.write_image(1, "eval/samples", grid)
    w.close()
    logdir = tmp_path / "tensorboard"
    values = {}
    for name in os.listdir(logdir):
        for e in tensorboard_events.events(str(logdir / name)):
            values.update({v.tag: (e.step, v) for v in e.summary.value})
    step, image = values["eval/samples"]
    assert step == 1 and (image.image.height, image.image.width) == (6, 10)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.image.encoded_image_string))), grid)
    _, text = values["config/text_summary"]
    assert text.metadata.plugin_data.plugin_name == "text" and text.tensor.string_val == [b"    lr: 0.0003"]
    _, start = values["_hparams_/session_start_info"]
    assert start.metadata.plugin_data.plugin_name == "hparams"
    hp = HParamsPluginData.FromString(start.metadata.plugin_data.content).session_start_info.hparams
    assert hp["optim.lr"].number_value == 3e-4 and hp["loss.train_text"].bool_value
    _, experiment = values["_hparams_/experiment"]
    exp = HParamsPluginData.FromString(experiment.metadata.plugin_data.content).experiment
    assert [m.name.tag for m in exp.metric_infos] == ["eval/reward"]


def test_wandb_asked_for_but_not_installed_is_a_one_line_usage_error():
    import importlib.util

    from alphagrpo_jax import errors

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    with pytest.raises(errors.UsageError, match=r"log.wandb = 'proj' .* wandb is not installed"):
        metrics.check_wandb("proj")
    metrics.check_wandb("")  # off: nothing to check


def test_report_says_which_reward_it_plots(tmp_path, monkeypatch):
    """The eval panel is the run's total reward (its components and weights, from its config.yaml), not "DVReward";
    the user-level command writes the PNG."""
    import subprocess
    import sys

    import matplotlib.figure

    from alphagrpo_jax import report, run_config
    from configs import toy_rt2i

    run_config.write(toy_rt2i.get_config(), str(tmp_path))  # reward.weights: toy_dvreward 1, think_format 0.2
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 0, "eval/reward": 0.4}, {"step": 1, "reward/mean": 0.5}, {"step": 2, "eval/reward": 0.6})))
    assert report.reward_name(str(tmp_path)) == "toy_dvreward + 0.2*think_format"
    labels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: labels.extend(ax.get_ylabel() for ax in fig.axes))
    report.plot([("run", str(tmp_path))], str(tmp_path / "unused.png"))
    assert labels == ["mean reward = toy_dvreward + 0.2*think_format"] * 2
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.report", f"--workdir={tmp_path}"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert os.path.getsize(tmp_path / "reward_curve.png") > 1000
