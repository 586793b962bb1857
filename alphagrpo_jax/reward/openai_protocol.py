"""The OpenAI chat-completions protocol rules of `openai_server.OpenAIServer`: request checks, errors, n, streaming.

    check_request(body, served=("toy-verifier",))     # raises RequestError (-> an OpenAI-style 400/404 body)
    reply = with_choices(reply, n)                     # n identical choices (the handlers are deterministic)
    for event in stream_events(reply, include_usage):  # `data: {chat.completion.chunk}\n\n` ... `data: [DONE]\n\n`
        ...

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so the official `openai` SDK raises
its matching classes (BadRequestError for 400, NotFoundError for 404). Like vLLM, a request without `model` gets
the (first) served model; any other name is a 404 `model_not_found` that lists the served names. Parameters
outside SUPPORTED are refused with a 400 naming the parameter rather than silently ignored.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

# What the server honours. Sampling settings are checked and accepted: the handlers are deterministic, which is
# what temperature 0 would give; every other parameter changes the answer's shape and is implemented.
SAMPLING = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "seed")
SUPPORTED = ("model", "messages", "stream", "stream_options", "n", "logprobs", "top_logprobs") + SAMPLING
MAX_N = 128  # OpenAI's limit
MAX_TOP_LOGPROBS = 20  # OpenAI's limit


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, *, status: int = 400,
                 code: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.kind, self.param, self.code)


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _number(body: dict[str, Any], name: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise RequestError(f"`{name}` must be {kind} in [{low:g}, {high:g}], got {value!r}", name)


def check_request(body: Any, served: Sequence[str]) -> None:
    """Raises RequestError for a body this server does not answer as OpenAI would; fills in a missing `model`."""
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(k for k in body if k not in SUPPORTED)
    if unknown:
        raise RequestError(f"unsupported parameter `{unknown[0]}`: this server takes {', '.join(SUPPORTED)}",
                           unknown[0], code="unsupported_parameter")
    body.setdefault("model", served[0])
    if body["model"] not in served:
        names = ", ".join(f"`{m}`" for m in served)
        raise RequestError(f"The model `{body['model']}` does not exist; this server serves {names}", "model",
                           status=404, code="model_not_found")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise RequestError("`messages` must be a non-empty list of messages", "messages")
    for name in ("stream", "logprobs"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise RequestError(f"`{name}` must be true or false, got {body[name]!r}", name)
    options = body.get("stream_options")
    if options is not None:
        if not body.get("stream"):
            raise RequestError("`stream_options` is only allowed with `stream: true`", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise RequestError(f"`stream_options` takes only `include_usage`, got {options!r}", "stream_options")
    _number(body, "n", 1, MAX_N, integer=True)
    _number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True)
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise RequestError("`top_logprobs` needs `logprobs: true`", "top_logprobs")
    _number(body, "temperature", 0.0, 2.0)
    _number(body, "top_p", 0.0, 1.0)
    _number(body, "max_tokens", 1, 2**31, integer=True)
    _number(body, "max_completion_tokens", 1, 2**31, integer=True)
    _number(body, "seed", -2**63, 2**63 - 1, integer=True)


def with_choices(reply: dict[str, Any], n: int) -> dict[str, Any]:
    """`reply` (one choice) with `n` copies of its choice, indexed 0..n-1, and usage counted n times."""
    if n == 1 or not reply.get("choices"):
        return reply
    choice = reply["choices"][0]
    out = {**reply, "choices": [{**copy.deepcopy(choice), "index": i} for i in range(n)]}
    if isinstance(reply.get("usage"), dict):
        completion = reply["usage"]["completion_tokens"] * n
        out["usage"] = {**reply["usage"], "completion_tokens": completion,
                        "total_tokens": reply["usage"]["prompt_tokens"] + completion}
    return out


def _pieces(text: str) -> list[str]:
    """The streamed deltas of `text`: words with their leading whitespace (they join back to `text`)."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def stream_events(reply: dict[str, Any], include_usage: bool = False) -> Iterator[bytes]:
    """Server-sent events of a `chat.completion` as OpenAI streams it: per choice a role delta, content deltas
    (logprobs entries one per delta, as one token each) and a finish delta; then usage (if asked) and [DONE]."""
    head = {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"],
            "model": reply["model"]}
    if include_usage:
        head["usage"] = None

    def event(choice: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n"

    for choice in reply["choices"]:
        i, logprobs = choice["index"], choice.get("logprobs")
        entries = list((logprobs or {}).get("content") or [])
        yield event({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                     "finish_reason": None})
        pieces = _pieces(choice["message"]["content"] or "")
        pieces += [""] * (len(entries) - len(pieces))  # more logprob tokens than words: one token per delta
        for j, piece in enumerate(pieces):
            last = j == len(pieces) - 1
            mine = entries[j:] if last else entries[j:j + 1]
            yield event({"index": i, "delta": {"content": piece},
                         "logprobs": None if logprobs is None else {"content": mine}, "finish_reason": None})
        yield event({"index": i, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]})
    if include_usage:
        yield b"data: " + json.dumps({**head, "choices": [], "usage": reply.get("usage")}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
