import json
import math
import time

import numpy as np
import pytest

from alphagrpo_jax import metrics


def test_jsonl_and_tensorboard(tmp_path):
    w = metrics.MetricsWriter(str(tmp_path), tensorboard=True)
    w.write(1, {"loss": np.float32(0.5), "reward": np.asarray(0.25), "hist": np.arange(3), "bad": math.nan})
    w.write(2, {"loss": 0.25})
    w.close()
    rows = metrics.read_metrics(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 0.5 and rows[0]["reward"] == 0.25 and rows[0]["hist"] == [0, 1, 2]
    assert rows[0]["bad"] == "nan"
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_truncated_last_line_is_reported(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    with pytest.raises(ValueError, match="incomplete"):
        metrics.read_metrics(str(p))


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
