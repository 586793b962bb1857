"""Reward faults a user meets: a verifier without logprobs, an API key echoed across an error-body cut, and
endpoints checked before any model loads. Real HTTP: the project's fault server on 127.0.0.1."""
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.reward.client import scrub
from alphagrpo_jax.reward.dvreward import RewardFailure
from alphagrpo_jax.reward.health import check_endpoints
from alphagrpo_jax.reward.service import build_reward_fn
from alphagrpo_jax.train import RoundStats, step_metrics
from tests.reward.conftest import cfg, question_set, server, session_server, solid_images  # noqa: F401

KEY = "sk-Zq8vR2mXw7LpT4nYc9bHd3KfGs6JtA1eUo5iPx"


def test_no_logprobs_is_a_failure_by_default(server, cfg):  # noqa: F811
    server.inject("nolp s0?", ["no_logprobs"] * 10)
    with build_reward_fn(cfg) as fn, pytest.raises(RewardFailure) as err:
        fn(solid_images([204]), ["p"], [question_set("nolp", 1, 1)])
    assert "gave up after 4 attempts" in str(err.value) and "has no logprobs" in str(err.value)
    assert "reward.allow_text_scores=True" in str(err.value)
    assert server.received["nolp s0?"] == cfg.max_retries + 1


def test_text_scores_when_allowed_are_counted_warned_and_in_the_step_metrics(server, cfg, caplog):  # noqa: F811
    cfg.allow_text_scores = True
    server.inject("txt s0?", ["no_logprobs"])
    with build_reward_fn(cfg) as fn:
        rw = fn(solid_images([204, 51]), ["p", "p"], [question_set("txt", 1, 1), question_set("txt2", 1, 1)])
    # s0's answer text "Yes" scores 1.0 instead of P(yes) = 0.8: S = 1.0, Q = 0.8
    np.testing.assert_allclose(rw.rewards, [np.sqrt(0.8), 0.2], atol=1e-6)
    assert rw.counts["dvreward/from_text"] == 1 and server.received["txt s0?"] == 1
    assert "1 of 4 verifier answers had no usable logprobs and were scored 0/1" in caplog.text
    rewards = rw.rewards.reshape(1, 2).astype(np.float64)
    row = step_metrics([RoundStats(rw, rewards, rewards - rewards.mean(), None, None)] * 2, {}, think=False)
    assert row["dvreward/from_text"] == 2.0  # summed over the step's rounds


@pytest.mark.parametrize("text, want", [
    (f"invalid key Bearer {KEY}", "invalid key Bearer ***"),
    (f"cut here: Bearer {KEY[:17]}", "cut here: Bearer ***"),
    (f"{KEY[:4]} and {KEY[:3]}!", "*** and sk-!"),
    (f"{KEY}{KEY[:9]}x", "******x"),
    ("nothing secret", "nothing secret"),
])
def test_scrub_removes_the_key_and_every_prefix_of_four_or_more(text, want):
    assert scrub(text, KEY) == want


def _leaks(text: str) -> list[str]:
    return [KEY[:n] for n in range(4, len(KEY) + 1) if KEY[:n] in text]


def _key_offset(server, pad: int) -> int:
    """Where the server's raw answer to a chat request (Authorization: Bearer KEY) puts the key."""
    body = json.dumps({"model": server.model, "messages": [{"role": "user", "content": "leak-probe"}]}).encode()
    req = urllib.request.Request(server.url + "/chat/completions", body, {"Authorization": f"Bearer {KEY}",
                                                                          "Content-Type": "application/json"})
    server.echo_pad = pad
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as e:
        text = e.read().decode()
    return text.index(KEY)


@pytest.mark.parametrize("where, cut", [("error_body", 300), ("malformed_body", 120)])
def test_a_key_straddling_a_cut_leaves_no_prefix(server, cfg, monkeypatch, caplog, where, cut):  # noqa: F811
    """The echoed key is placed so that the client's cut keeps its first `visible` characters."""
    monkeypatch.setenv("REWARD_TEST_KEY", KEY)
    cfg.api_key_env, cfg.max_retries = "REWARD_TEST_KEY", 0
    if where == "error_body":
        server.api_key = "another-key"  # rejects our key with a 401 that echoes it
    else:
        server.inject("leak", ["echo_key"] * 20)  # a 200 non-JSON page that echoes it
    start = _key_offset(server, 0)
    with build_reward_fn(cfg) as fn:
        for visible in (4, 5, 17, len(KEY) - 1, len(KEY) + 3):
            server.echo_pad = cut - start - visible
            assert _key_offset(server, server.echo_pad) + visible == cut
            with pytest.raises(RewardFailure) as err:
                fn(solid_images([204]), ["p"], [question_set(f"leak{visible}", 1, 0)])
            assert "Bearer ***" in str(err.value) and not _leaks(str(err.value)), (visible, str(err.value))
    assert not _leaks(caplog.text)


def test_endpoint_health_before_model_load(server, cfg, caplog):  # noqa: F811
    check_endpoints(cfg)  # up, serves the model it lists
    dead = "http://127.0.0.1:9/v1"  # the discard port: nobody listens
    cfg.endpoints = (server.url, dead)
    with pytest.raises(UsageError, match=rf"^config.reward.endpoints: {dead} does not answer \(GET {dead}/models"):
        check_endpoints(cfg)
    cfg.endpoints, cfg.model = (server.url,), "not-served"
    check_endpoints(cfg)
    assert "config.reward.model: 'not-served' is not among the models" in caplog.text
    server.api_key = "right"
    with pytest.raises(UsageError, match=r"^config.reward.endpoints: .* refused the key \(HTTP 401"):
        check_endpoints(cfg)
