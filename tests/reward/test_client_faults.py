"""Every fault the test server can inject: rewards come back right after retries, or fail per the policy.

The server counts requests per question text (unique per test); `received == 1 + retried faults` shows that
no request was lost and none was sent twice.
"""
import math
import time

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax.reward.dvreward import RewardFailure
from alphagrpo_jax.reward.openai_server import FAULTS, RETRIED_FAULTS, OpenAIServer
from alphagrpo_jax.reward.service import build_reward_fn
from tests.reward.conftest import question_set, red_level, solid_images

REDS = (51, 204)  # P(yes) = 0.2 and 0.8


def expected(red):
    return red / 255.0  # geometric mean of identical S and Q


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_retried_or_surfaced(server, cfg, fault):
    records = [question_set(f"{fault}-img{i}", 2, 1) for i in range(len(REDS))]
    target = f"{fault}-img1 s1?"
    server.inject(target, [fault])
    if fault == "timeout":
        cfg.timeout_s, server.hang_s = 0.8, 3.0
    with build_reward_fn(cfg) as fn:
        if fault == "garbage":  # an answer that is neither yes nor no is not retried and not scored 0
            with pytest.raises(RewardFailure, match=r"sample 1: 1/3 verifier questions failed.*neither yes"):
                fn(solid_images(REDS), ["p"] * 2, records)
            assert server.received[target] == 1
            return
        result = fn(solid_images(REDS), ["p"] * 2, records)
        stats = fn.stats()
    # no_logprobs is retried like a malformed body (reward.allow_text_scores=False): the exact P(yes) comes back
    np.testing.assert_allclose(result.rewards, [expected(r) for r in REDS], atol=1e-6)
    assert server.received[target] == (2 if fault in RETRIED_FAULTS else 1)
    assert server.faulted[target] == 1
    for rec in records:  # every other question: exactly one request
        for q in rec.questions:
            if q.question != target:
                assert server.received[q.question] == 1 and server.answered[q.question] == 1, q.question
    assert stats["dvreward/attempts"] == sum(server.received.values())
    assert result.counts["dvreward/from_text"] == 0
    assert result.counts["dvreward/scored"] == 6 and result.failures == []


def test_a_sequence_of_faults_then_success(server, cfg):
    cfg.max_retries = 6
    faults = ["429", "500", "drop", "malformed_json", "503", "truncated"]
    server.inject("seq s0?", faults)
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images([102]), ["p"], [question_set("seq", 1, 1)])
        assert fn.stats()["dvreward/retries"] == len(faults)
    assert result.rewards[0] == pytest.approx(0.4, abs=1e-6)
    assert server.received["seq s0?"] == len(faults) + 1 and server.answered["seq s0?"] == 1


def test_timeouts_are_retried_within_the_deadline(server, cfg):
    server.inject("slow s0?", ["timeout", "timeout"])
    cfg.timeout_s, server.hang_s = 0.8, 3.0
    start = time.perf_counter()
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images([153]), ["p"], [question_set("slow", 1, 1)])
    elapsed = time.perf_counter() - start
    assert result.rewards[0] == pytest.approx(0.6, abs=1e-6)
    assert server.received["slow s0?"] == 3
    assert 2 * cfg.timeout_s <= elapsed < 2 * cfg.timeout_s + 1.0  # waited for two timeouts, not for hang_s


def test_exhausted_retries_fail_the_step_under_fail(server, cfg):
    server.inject("dead-img0 q0?", ["500"] * 10)
    with build_reward_fn(cfg) as fn:
        with pytest.raises(RewardFailure, match=r"(?s)1/2 samples could not be scored.*sample 0.*'dead-img0 q0\?'"
                                                r".*gave up after 4 attempts.*http_500"):
            fn(solid_images(REDS), ["p"] * 2, [question_set(f"dead-img{i}", 1, 1) for i in range(2)])
    assert server.received["dead-img0 q0?"] == cfg.max_retries + 1


def test_drop_policy_renormalises_and_reports(server, cfg, caplog):
    cfg.failure_policy = "drop"
    server.inject("drop-img0 s1?", ["503"] * 10)
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images(REDS), ["p"] * 2, [question_set(f"drop-img{i}", 3, 1) for i in range(2)])
    np.testing.assert_allclose(result.rewards, [0.2, 0.8], atol=1e-6)  # mean of the two remaining is unchanged
    assert result.counts["dvreward/dropped"] == 1 and result.counts["dvreward/scored"] == 7
    assert [(f["sample"], f["question"]) for f in result.failures] == [(0, "drop-img0 s1?")]
    assert result.info[0]["dvreward/dropped"] == 1.0 and result.info[1]["dvreward/dropped"] == 0.0
    assert "dropped 1 of 8 verifier questions" in caplog.text


def test_drop_policy_still_fails_when_every_question_of_an_image_fails(server, cfg):
    cfg.failure_policy = "drop"
    server.inject("gone-img1", ["500"] * 40)
    with build_reward_fn(cfg) as fn, pytest.raises(RewardFailure, match="sample 1: all 2 semantic questions"):
        fn(solid_images(REDS), ["p"] * 2, [question_set(f"gone-img{i}", 2, 0) for i in range(2)])


def test_client_errors_are_not_retried(server, cfg):
    cfg.endpoints = (server.url.replace("/v1", "/v2"),)  # a route the server does not have: 404
    with build_reward_fn(cfg) as fn:
        with pytest.raises(RewardFailure, match=r"HTTP 404.*base URL ending in /v1"):
            fn(solid_images([0]), ["p"], [question_set("nf", 1, 0)])
        assert fn.stats()["dvreward/attempts"] == 1


def test_api_key_is_sent_and_never_shown(server, cfg, monkeypatch, caplog):
    monkeypatch.setenv("REWARD_TEST_KEY", "sk-very-secret-123")
    cfg.api_key_env = "REWARD_TEST_KEY"
    server.api_key = "sk-very-secret-123"
    with build_reward_fn(cfg) as fn:
        assert fn(solid_images([255]), ["p"], [question_set("auth", 1, 0)]).rewards[0] == 1.0
    server.api_key = "another-key"  # the server now rejects us and echoes the header it got
    with build_reward_fn(cfg) as fn, pytest.raises(RewardFailure) as err:
        fn(solid_images([255]), ["p"], [question_set("auth2", 1, 0)])
    assert "HTTP 401" in str(err.value) and "***" in str(err.value)
    assert "sk-very-secret-123" not in str(err.value) and "sk-very-secret-123" not in caplog.text


def test_concurrency_limit_per_endpoint(server, cfg):
    server.latency_s = 0.02
    cfg.concurrency_per_endpoint = 3
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images([51] * 4), ["p"] * 4, [question_set(f"cc{i}", 4, 2) for i in range(4)])
    np.testing.assert_allclose(result.rewards, 0.2, atol=1e-6)
    assert server.max_in_flight == 3
    assert sum(server.received.values()) == 24


def test_load_spreads_over_endpoints_and_avoids_a_dead_one(server, cfg):
    with OpenAIServer(answer=red_level, model=cfg.model) as second:
        cfg.endpoints = (server.url, second.url)
        with build_reward_fn(cfg) as fn:
            fn(solid_images([51] * 2), ["p"] * 2, [question_set(f"lb{i}", 4, 4) for i in range(2)])
        assert sum(server.received.values()) + sum(second.received.values()) == 16
        assert sum(server.received.values()) >= 4 and sum(second.received.values()) >= 4
        dead_url = second.url
    cfg.endpoints = (dead_url, server.url)  # the second server is gone: connection refused
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images([204] * 2), ["p"] * 2, [question_set(f"dead{i}", 2, 2) for i in range(2)])
        np.testing.assert_allclose(result.rewards, 0.8, atol=1e-6)
        dead_keys = {k: v for k, v in server.received.items() if k.startswith("dead")}
        assert len(dead_keys) == 8 and set(dead_keys.values()) == {1}  # each answered once, by the live one
        stats = fn.stats()
        assert stats["dvreward/connection"] == stats["dvreward/retries"] == stats["dvreward/attempts"] - 8 > 0
        fn(solid_images([204]), ["p"], [question_set("rested", 2, 2)])  # the dead endpoint is now skipped
        assert fn.stats()["dvreward/connection"] == stats["dvreward/connection"]


@pytest.mark.parametrize("image_format, tol", [("png", 1e-6), ("jpeg", 2 / 255)])
def test_image_inputs_arrive_intact(server, cfg, image_format, tol):
    cfg.image_format = image_format
    rgba = np.zeros((20, 12, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, 255
    gray = np.full((8, 8), 30, np.uint8)  # HW: gray 30 -> red 30
    pil = Image.new("RGB", (10, 10), (240, 0, 0))
    with build_reward_fn(cfg) as fn:
        result = fn([rgba, gray, pil], ["p"] * 3, [question_set(f"img{image_format}{i}", 1, 1) for i in range(3)])
    np.testing.assert_allclose(result.rewards, [100 / 255, 30 / 255, 240 / 255], atol=tol)


def test_token_spellings_from_the_server(server, cfg):
    server.yes_tokens, server.no_tokens = ("Yes", " yes."), ("NO",)
    with build_reward_fn(cfg) as fn:
        result = fn(solid_images([51]), ["p"], [question_set("spell", 1, 1)])
    assert result.rewards[0] == pytest.approx(0.2, abs=1e-6)
    assert result.counts["dvreward/from_logprobs"] == 2


def test_aggregation_modes_end_to_end(server, cfg):
    cfg.aggregation = "mean"
    records = [question_set("agg-a", 1, 0)]
    with build_reward_fn(cfg) as fn:  # semantic only: S = 0.2, empty Q counts as 1
        assert fn(solid_images([51]), ["p"], records).rewards[0] == pytest.approx(0.6, abs=1e-6)
    cfg.aggregation = "geometric"
    with build_reward_fn(cfg) as fn:
        assert fn(solid_images([51]), ["p"], records).rewards[0] == pytest.approx(math.sqrt(0.2), abs=1e-6)
