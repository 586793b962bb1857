"""SRR's reward is the image components only (text-only components such as think_format do not enter it), and
the held-out SRR metrics: gain, floored gain, improved fraction, per-category gain."""
import concurrent.futures

import ml_collections
import numpy as np
import pytest

import alphagrpo_jax.toy.reward  # noqa: F401  (registers toy_dvreward)
from alphagrpo_jax.reward.service import RewardResult, build_reward_fn, reward_config
from alphagrpo_jax.rl.tasks import srr
from alphagrpo_jax.rl.tasks.srr import srr_metrics


def _service(**weights):
    c = reward_config()
    c.weights = ml_collections.ConfigDict(weights)
    return build_reward_fn(c)


def test_image_weights_leave_out_text_components():
    with _service(toy_dvreward=0.5, think_format=0.2) as fn:
        assert srr.image_weights(fn) == {"toy_dvreward": 0.5}
    with _service(think_format=1.0) as fn, pytest.raises(ValueError, match="scores images"):
        srr.image_weights(fn)


def test_srr_round_rewards_use_image_components_only():
    comps = {"toy_dvreward": np.array([0.2, 0.6, 0.1, 0.4], np.float32),
             "think_format": np.array([1.0, 1.0, 0.0, 1.0], np.float32)}
    total = 0.5 * comps["toy_dvreward"] + 0.2 * comps["think_format"]
    fut = concurrent.futures.Future()
    fut.set_result(RewardResult(total, comps, [{}] * 4, [], {}, {}))
    rd = srr.SRRRound("srr", None, fut, 2, r_init=np.array([0.15, 0.1]), image_weights={"toy_dvreward": 0.5})
    got = rd.rewards()
    np.testing.assert_allclose(got.rewards, [[0.15, 0.3], [0.1, 0.2]], rtol=1e-6)  # 0.5 * value, floored
    assert got.metrics["srr/improved_frac"] == 0.5


def test_srr_metrics():
    stage1 = np.array([0.2, 0.5, 0.4, 0.1])
    refined = np.array([0.6, 0.3, 0.4, 0.3])
    m = srr_metrics(stage1, refined, ["a", "a", "b", None])
    assert m["eval_srr/stage1_reward"] == pytest.approx(0.3) and m["eval_srr/refined_reward"] == pytest.approx(0.4)
    assert m["eval_srr/gain"] == pytest.approx(0.1)
    assert m["eval_srr/gain_floored"] == pytest.approx((0.4 + 0.2) / 4)
    assert m["eval_srr/improved_frac"] == pytest.approx(0.5)  # a tie is not an improvement
    assert m["eval_srr/gain/a"] == pytest.approx(0.1) and m["eval_srr/gain/b"] == pytest.approx(0.0)
    assert "eval_srr/gain/None" not in m
