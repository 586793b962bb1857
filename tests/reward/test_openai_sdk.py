"""The official `openai` SDK, sync and async, against the test server on 127.0.0.1: streamed chunks reassemble to
the non-streamed answer (content, logprobs, n choices, usage), and refusals raise the SDK's matching exceptions."""
import asyncio
import json
import urllib.error
import urllib.request

import openai
import pytest

from alphagrpo_jax.reward.images import encode_data_uri
from alphagrpo_jax.reward.verifier import p_yes_from_completion, verifier_payload
from tests.reward.conftest import solid_images

REPLY = '{"questions": ["Is there a red circle?", "Is it left of the square?"]}'


@pytest.fixture
def chat_server(server):
    server.chat = lambda messages: REPLY
    return server


def _vision(red=204, **extra):
    return {**verifier_payload(encode_data_uri(solid_images([red])[0], "png"), "Is it red?"), **extra}


def _text(**extra):
    return {"messages": [{"role": "user", "content": "Decompose: a red circle left of a square"}],
            "temperature": 0.3, "max_tokens": 64, **extra}


def _reassemble(chunks):
    """choice index -> (content, logprobs entries, finish_reason) from a list of ChatCompletionChunk."""
    out = {}
    for chunk in chunks:
        assert chunk.object == "chat.completion.chunk"
        for c in chunk.choices:
            text, entries, finish = out.get(c.index, ("", [], None))
            text += c.delta.content or ""
            if c.logprobs is not None:
                entries = entries + [e.model_dump() for e in c.logprobs.content or []]
            out[c.index] = (text, entries, c.finish_reason or finish)
    return out


def _full(completion):
    return {c.index: (c.message.content, [e.model_dump() for e in (c.logprobs.content if c.logprobs else [])],
                      c.finish_reason) for c in completion.choices}


@pytest.mark.parametrize("payload", [_vision, _text], ids=["vision", "text"])
def test_sync_stream_reassembles_to_the_answer(chat_server, payload):
    client = openai.OpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
    model = client.models.list().data[0].id
    assert model == chat_server.model
    full = client.chat.completions.create(model=model, n=3, **payload())
    assert len(full.choices) == 3 and full.usage.completion_tokens == 3  # one token per choice
    chunks = list(client.chat.completions.create(model=model, n=3, stream=True,
                                                 stream_options={"include_usage": True}, **payload()))
    assert len(chunks) > 3 * 3  # role, content and finish deltas per choice: really streamed
    assert _reassemble(chunks) == _full(full)
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert all(c.usage is None for c in chunks[:-1])
    if payload is _vision:  # the reward client's own parse of the SDK's object
        p, source = p_yes_from_completion(full.model_dump())
        assert source == "logprobs" and p == pytest.approx(204 / 255)
        assert full.choices[0].logprobs.content[0].top_logprobs  # asked for, given
    else:
        assert full.choices[0].message.content == REPLY and len(chunks) > 3 * 5  # one delta per word


def test_async_stream_reassembles_to_the_answer(chat_server):
    async def main():
        client = openai.AsyncOpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
        full, stream = await asyncio.gather(
            client.chat.completions.create(model=chat_server.model, **_vision(51)),
            client.chat.completions.create(model=chat_server.model, stream=True, **_vision(51)))
        chunks = [c async for c in stream]
        models = await client.models.list()
        await client.close()
        return full, chunks, [m.id for m in models.data]

    full, chunks, models = asyncio.run(main())
    assert models == [chat_server.model]
    assert _reassemble(chunks) == _full(full) and full.choices[0].message.content == "No"
    assert all(c.usage is None for c in chunks)  # not asked for


def test_logprobs_only_when_asked(chat_server):
    client = openai.OpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
    body = _vision()
    del body["logprobs"], body["top_logprobs"]
    full = client.chat.completions.create(model=chat_server.model, **body)
    assert full.choices[0].logprobs is None and full.choices[0].message.content == "Yes"


@pytest.mark.parametrize("extra,param,words", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported parameter `tools`"),
    ({"n": 0}, "n", "`n` must be an integer in [1, 128], got 0"),
    ({"top_logprobs": 50}, "top_logprobs", "`top_logprobs` must be an integer in [0, 20]"),
    ({"temperature": 3.0}, "temperature", "`temperature` must be a number in [0, 2]"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with `stream: true`"),
])
def test_bad_params_raise_bad_request(chat_server, extra, param, words):
    client = openai.OpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=chat_server.model, **_vision(**extra))
    assert err.value.status_code == 400 and words in err.value.message
    assert err.value.body["param"] == param and err.value.body["type"] == "invalid_request_error"
    assert sum(chat_server.received.values()) == 0  # refused before any handler or fault


def test_text_replies_have_no_logprobs_and_say_so(chat_server):
    client = openai.OpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="vision") as err:
        client.chat.completions.create(model=chat_server.model, logprobs=True, **_text())
    assert err.value.body["param"] == "logprobs" and sum(chat_server.answered.values()) == 0


def test_unknown_model_raises_not_found_listing_the_served_one(chat_server):
    async def main():
        client = openai.AsyncOpenAI(base_url=chat_server.url, api_key="EMPTY", max_retries=0)
        try:
            with pytest.raises(openai.NotFoundError) as err:
                await client.chat.completions.create(model="gpt-4o", stream=True, **_text())
        finally:
            await client.close()
        return err.value

    err = asyncio.run(main())
    assert err.body["code"] == "model_not_found" and err.body["param"] == "model"
    assert f"The model `gpt-4o` does not exist; this server serves `{chat_server.model}`" in err.message


def test_raw_stream_is_server_sent_events(chat_server):
    """What the SDK hides: the media type and the closing [DONE]; a request without `model` gets the served one."""
    body = json.dumps({**_text(), "stream": True}).encode()
    req = urllib.request.Request(chat_server.url + "/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = r.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])
    assert len(events) == 1 + len(REPLY.split()) + 1 + 1 + 1  # role, one delta per word, finish, [DONE], ""
    first = json.loads(events[0][len("data: "):])
    assert first["model"] == chat_server.model and first["choices"][0]["delta"] == {"role": "assistant",
                                                                                    "content": ""}
    req = urllib.request.Request(chat_server.url + "/chat/completions", data=b"[1, 2]",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400 and "must be a JSON object" in json.loads(err.value.read())["error"]["message"]
