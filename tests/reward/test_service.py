import subprocess
import sys
import time

import numpy as np
import pytest

from alphagrpo_jax.reward import components
from alphagrpo_jax.reward.components import ComponentOutput
from alphagrpo_jax.reward.fmt import think_format_reward, think_format_rewards
from alphagrpo_jax.reward.service import build_reward_fn, reward_config
from tests.reward.conftest import question_set, solid_images


def test_reward_config_defaults():
    c = reward_config()
    assert c.model == "Qwen/Qwen3-VL-30B-A3B-Instruct" and c.endpoints[0].endswith("/v1")
    assert (c.failure_policy, c.aggregation, c.image_format, c.top_logprobs) == ("fail", "geometric", "jpeg", 5)
    assert dict(c.weights) == {"dvreward": 1.0, "think_format": 0.0}
    for key in ("api_key_env", "concurrency_per_endpoint", "timeout_s", "max_retries", "backoff_s"):
        assert key in c


@pytest.mark.parametrize("text, reward", [
    ("<think>plan the image</think>", 1.0), ("<think></think>", 1.0), ("<think>\na\n</think>", 1.0),
    (" <think>x</think>", 0.0), ("<think>x</think>\n", 0.0), ("<think>x", 0.0), ("x</think>", 0.0), ("", 0.0),
    ("<THINK>x</THINK>", 0.0)])
def test_think_format_is_the_reference_rule(text, reward):
    assert think_format_reward(text) == reward


def test_think_format_types():
    assert think_format_rewards(["<think>a</think>", "no"]).tolist() == [1.0, 0.0]
    with pytest.raises(TypeError, match="think_format"):
        think_format_reward(None)


def test_weighted_components_and_result_shape(server, cfg):
    cfg.weights.think_format = 0.5
    texts = ["<think>ok</think>", "no think"]
    with build_reward_fn(cfg) as fn:
        records = [question_set("w0", 2, 1), question_set("w1", 1, 2)]
        r = fn(solid_images([51, 204]), ["a", "b"], records, texts=texts)
    np.testing.assert_allclose(r.components["dvreward"], [0.2, 0.8], atol=1e-6)
    np.testing.assert_array_equal(r.components["think_format"], [1.0, 0.0])
    np.testing.assert_allclose(r.rewards, [0.2 + 0.5, 0.8], atol=1e-6)
    assert r.rewards.dtype == np.float32 and r.rewards.shape == (2,)
    assert r.info[0]["dvreward/tag/Existence"] == pytest.approx(0.2, abs=1e-6)
    assert r.info[1]["dvreward/tag/Texture"] == pytest.approx(0.8, abs=1e-6)
    assert r.info[0]["think_format/value"] == 1.0
    per_question = r.details["dvreward"][1]  # every question of sample 1 with its own P(yes)
    assert [(q.question, q.tag, q.source) for q in per_question] == [
        ("w1 s0?", "Existence", "logprobs"), ("w1 q0?", "Texture", "logprobs"), ("w1 q1?", "Texture", "logprobs")]
    assert [q.p_yes for q in per_question] == pytest.approx([0.8] * 3, abs=1e-6)
    assert r.counts == {"dvreward/questions": 6, "dvreward/scored": 6, "dvreward/dropped": 0,
                        "dvreward/from_logprobs": 6, "dvreward/from_text": 0}
    m = r.metrics()
    assert m["reward/mean"] == pytest.approx(0.75, abs=1e-6)
    assert m["reward/dvreward/semantic"] == pytest.approx(0.5, abs=1e-6)
    assert m["reward/count/dvreward/questions"] == 6.0


def test_submit_returns_at_once_and_overlaps_batches(server, cfg):
    server.latency_s = 0.5
    imgs = solid_images([51, 204])
    with build_reward_fn(cfg) as fn:
        start = time.perf_counter()
        first = fn.submit(imgs, ["a", "b"], [question_set("k0", 2, 2), question_set("k1", 2, 2)])
        submitted = time.perf_counter() - start
        imgs[:] = 0  # the caller reuses its buffer for the next batch: the first batch was copied
        second = fn.submit(imgs, ["a", "b"], [question_set("k2", 1, 1), question_set("k3", 1, 1)])
        assert not first.done() and not second.done()
        r1, r2 = first.result(timeout=5), second.result(timeout=5)
        total = time.perf_counter() - start
    assert submitted < 0.25  # far below the server's 0.5 s latency: nothing was awaited
    assert total < 0.9  # both batches were in flight together (one after the other takes >= 1.0 s)
    np.testing.assert_allclose(r1.rewards, [0.2, 0.8], atol=1e-6)
    np.testing.assert_allclose(r2.rewards, [0.0, 0.0], atol=1e-6)


def test_input_errors_raise_at_submit(server, cfg):
    recs = [question_set("e", 1, 0)]
    with build_reward_fn(cfg) as fn:
        with pytest.raises(ValueError, match=r"images\[0\]: expected uint8"):
            fn.submit([np.zeros((4, 4, 3), np.float32)], ["p"], recs)
        with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
            fn.submit(np.zeros((4, 4, 3), np.uint8), ["p"], recs)
        with pytest.raises(ValueError, match="2 images for 1 prompts"):
            fn.submit(solid_images([1, 2]), ["p"], recs)
        with pytest.raises(ValueError, match=r"need \['records'\]"):
            fn.submit(solid_images([1]), ["p"], None)
        with pytest.raises(ValueError, match=r"records\[0\]: field 'prompt'"):
            fn.submit(solid_images([1]), ["p"], [{"semantic_questions": [], "quality_questions": []}])
    cfg.weights.think_format = 1.0
    with build_reward_fn(cfg) as fn, pytest.raises(ValueError, match=r"\['think_format'\] need \['texts'\]"):
        fn.submit(solid_images([1]), ["p"], recs)


def test_reference_format_dict_records_are_accepted(server, cfg):
    rec = {"prompt": "p", "original_index": 3, "extra": 1,
           "semantic_questions": [{"question_type": "semantic", "question": "ref s?", "is_valid": True,
                                   "tag": "Existence"}],
           "quality_questions": [{"question_type": "quality", "question": "ref q?", "is_valid": True,
                                  "tag": "Texture"}]}
    with build_reward_fn(cfg) as fn:
        assert fn(solid_images([102]), ["p"], [rec]).rewards[0] == pytest.approx(0.4, abs=1e-6)


def test_weights_select_registered_components(cfg):
    cfg.weights.dvreward = 0.0
    with pytest.raises(ValueError, match="every weight is 0"):
        build_reward_fn(cfg)
    cfg.weights.mystery = 1.0
    with pytest.raises(ValueError, match=r"unknown component 'mystery'; known: \[.*'dvreward'.*'think_format'"):
        build_reward_fn(cfg)


def test_custom_component_through_the_registry(cfg):
    class PromptLength:
        needs = ()

        async def score(self, batch):
            lengths = np.asarray([len(p) for p in batch.prompts], np.float32)
            return ComponentOutput(lengths, [{} for _ in batch.prompts])

        async def aclose(self):
            return None

    components.register_component("prompt_length")(lambda config: PromptLength())
    try:
        cfg.weights.dvreward = 0.0
        cfg.weights.prompt_length = 2.0
        with build_reward_fn(cfg) as fn:
            assert fn(None, ["ab", "abcd"]).rewards.tolist() == [4.0, 8.0]
    finally:
        del components.COMPONENTS["prompt_length"]


def test_reward_package_imports_no_jax_or_model_code():
    code = ("import sys, alphagrpo_jax.reward, alphagrpo_jax.reward.decompose, "
            "alphagrpo_jax.reward.openai_server, alphagrpo_jax.reward.scripted; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax') "
            "or m.startswith(('alphagrpo_jax.models', 'alphagrpo_jax.parallel'))); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
