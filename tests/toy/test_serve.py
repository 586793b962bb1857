"""The toy server speaks the OpenAI protocol: the real DVReward client gets the in-process scores (PNG), and the
real decomposition CLI reproduces the exact toy records."""
import json
import subprocess
import sys

import numpy as np
import pytest

from alphagrpo_jax.reward.records import read_records
from alphagrpo_jax.reward.service import build_reward_fn, reward_config
from alphagrpo_jax.toy import decompose, prompts, serve, world
from alphagrpo_jax.toy import reward as toy_reward  # noqa: F401  (registers toy_dvreward)


def _cases(n=6):
    specs = prompts.prompt_set("eval", per_category=1, seed=0)[:n]
    images = [world.render(prompts.sample_scene(s, i)) for i, s in enumerate(specs)]
    images[1] = world.render(world.perturb(prompts.sample_scene(specs[1], 1), "color", np.random.default_rng(0)))
    return specs, images


def test_http_verifier_equals_in_process_reward():
    specs, images = _cases()
    texts = [prompts.format_prompt(s) for s in specs]
    records = [decompose.decompose(s, i) for i, s in enumerate(specs)]
    with serve.make_server() as server:
        cfg = reward_config()
        cfg.endpoints = (server.url,)
        cfg.image_format = "png"
        cfg.model = "toy-verifier"
        http = build_reward_fn(cfg)
        local_cfg = reward_config()
        local_cfg.weights = {"dvreward": 0.0, "think_format": 0.0, "toy_dvreward": 1.0}
        local = build_reward_fn(local_cfg)
        try:
            r_http, r_local = http(images, texts, records), local(images, texts, records)
        finally:
            http.close()
            local.close()
    np.testing.assert_allclose(r_http.rewards, r_local.rewards, atol=1e-6)
    assert r_local.rewards[0] > 0.9 and r_local.rewards[1] < r_local.rewards[0]
    assert sum(server.answered.values()) == sum(len(r.semantic) + len(r.quality) for r in records)


def test_decompose_cli_against_toy_server(tmp_path):
    specs, _ = _cases(4)
    src = tmp_path / "prompts.txt"
    src.write_text("\n".join(prompts.format_prompt(s) for s in specs) + "\n")
    out = tmp_path / "records.jsonl"
    with serve.make_server() as server:
        r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.reward.decompose", "--prompts", str(src), "--out",
                            str(out), "--endpoint", server.url, "--model", server.model], capture_output=True,
                           text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = read_records(str(out))
    for rec, spec in zip(got, specs):
        want = decompose.decompose(spec)
        assert [q.question for q in rec.semantic] == [q.question for q in want.semantic]
        assert [q.tag for q in rec.semantic] == [q.tag for q in want.semantic]
        assert [(q.question, q.tag) for q in rec.quality] == [(q.question, q.tag) for q in want.quality]
    json.loads(out.read_text().splitlines()[0])


def test_cli_server_streams_to_the_official_openai_client():
    """`python -m alphagrpo_jax.toy.serve` as a user starts it, read with the `openai` SDK: the streamed answer
    equals the plain one, and a request for another model is a NotFoundError naming the served one."""
    import openai

    from alphagrpo_jax.reward.images import encode_data_uri
    from alphagrpo_jax.reward.verifier import verifier_payload

    specs, images = _cases(2)
    question = decompose.decompose(specs[0]).semantic[0].question
    payload = verifier_payload(encode_data_uri(images[0], "png"), question)
    proc = subprocess.Popen([sys.executable, "-m", "alphagrpo_jax.toy.serve", "--port", "0", "--model", "my-verifier"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "serving OpenAI-compatible API at " not in line:
            line = proc.stdout.readline()
            assert line, "the server exited before listening"
        client = openai.OpenAI(base_url=line.split(" at ")[1].strip(), api_key="EMPTY", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["my-verifier"]
        full = client.chat.completions.create(model="my-verifier", **payload)
        chunks = list(client.chat.completions.create(model="my-verifier", stream=True, **payload))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
        streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
        assert streamed == full.choices[0].logprobs.content and streamed[0].top_logprobs
        with pytest.raises(openai.NotFoundError, match="serves `my-verifier`"):
            client.chat.completions.create(model="toy-verifier", **payload)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
