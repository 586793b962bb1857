"""A small OpenAI-compatible chat server with pluggable answers and scripted faults (tests, benchmarks, toys).

    server = OpenAIServer(answer=lambda question, image: 0.8,       # vision requests -> P(yes)
                          chat=lambda messages: '{"ok": true}')     # text-only requests -> reply text
    server.inject("Is there a dog?", ["429", "timeout"])           # next matching requests misbehave, in order
    with server:                                                    # background thread on a free port
        ... client pointed at server.url ...                        # e.g. http://127.0.0.1:40123/v1
    server.received["Is there a dog?"]                             # requests seen per key

`POST /v1/chat/completions` takes the OpenAI body. A request whose last user message holds an `image_url`
part is a vision request: the data URI is decoded to a PIL image, `answer(question_text, image)` gives P(yes),
and the reply carries `choices[0].logprobs.content[0].top_logprobs` like vLLM/SGLang when `logprobs` is asked
for. Other requests go to `chat(messages)`. The key of a request is its question text (vision) or its last user
message (text); faults are matched on a substring of the key. The protocol rules (the served model name, supported
parameters, `n`, `stream`) are openai_protocol.py's: a request outside them gets an OpenAI-style 400/404 error.

Faults: delay (answer after `fault_delay_s`), timeout (say nothing for `hang_s`, then hang up), 429, 500, 503,
malformed_json, empty_choices, no_logprobs (answer without logprobs), garbage (answer "Maybe"), drop (close the
connection without a response), truncated (send half a body, then hang up), echo_key (a 200 body that is not
JSON and echoes the request's Authorization header, like a misconfigured proxy's error page).
With `api_key` set, a request without that key gets a 401 whose body echoes its Authorization header;
`echo_pad` filler characters go before every echoed header (to place a key across the client's cuts).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from PIL import Image

from alphagrpo_jax.reward.images import decode_data_uri
from alphagrpo_jax.reward.openai_protocol import RequestError, check_request, error_body, stream_events, with_choices
from alphagrpo_jax.reward.openai_shapes import alternative, chat_completion, yes_no_completion
from alphagrpo_jax.reward.records import read_records
from alphagrpo_jax.reward.scripted import constant_verifier, decomposer_chat, records_decomposer

FAULTS = ("delay", "timeout", "429", "500", "503", "malformed_json", "empty_choices", "no_logprobs", "garbage",
          "drop", "truncated", "echo_key")
# Retried by the client under the default reward config (no_logprobs: unless reward.allow_text_scores).
RETRIED_FAULTS = ("timeout", "429", "500", "503", "malformed_json", "empty_choices", "no_logprobs", "drop",
                  "truncated", "echo_key")
log = logging.getLogger(__name__)

AnswerFn = Callable[[str, Image.Image], float]
ChatFn = Callable[[list[dict[str, Any]]], str]
JudgeFn = Callable[[str, list[Image.Image]], "str | None"]


def _split_user_content(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(text, image URLs) of the last user message."""
    for m in reversed(messages):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content, []
        if not isinstance(content, list):
            raise ValueError("user message content must be a string or a list of parts")
        texts = [p.get("text", "") for p in content if p.get("type") == "text"]
        urls = [p["image_url"]["url"] if isinstance(p.get("image_url"), dict) else p.get("image_url")
                for p in content if p.get("type") == "image_url"]
        return "\n".join(texts), urls
    raise ValueError("no user message")


class OpenAIServer:
    def __init__(self, answer: AnswerFn | None = None, chat: ChatFn | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, model: str = "test-model", latency_s: float = 0.0, fault_delay_s: float = 0.05,
                 hang_s: float = 5.0, yes_tokens: Sequence[str] = (" Yes",), no_tokens: Sequence[str] = (" No",),
                 api_key: str | None = None, echo_pad: int = 0, judge: JudgeFn | None = None):
        self.answer, self.chat, self.api_key, self.echo_pad = answer, chat, api_key, echo_pad
        self.judge = judge  # vision requests it answers (text, or None to fall through to `answer`)
        self.host, self.port, self.model = host, port, model
        self.latency_s, self.fault_delay_s, self.hang_s = latency_s, fault_delay_s, hang_s
        self.yes_tokens, self.no_tokens = tuple(yes_tokens), tuple(no_tokens)
        self.received: collections.Counter[str] = collections.Counter()  # requests per key
        self.answered: collections.Counter[str] = collections.Counter()  # usable 200 answers per key
        self.faulted: collections.Counter[str] = collections.Counter()  # injected faults served per key
        self.in_flight = self.max_in_flight = 0
        self._rules: list[tuple[str, collections.deque[str]]] = []
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- scripting --------------------------------------------------------------------------------------
    def inject(self, match: str, faults: Sequence[str]) -> None:
        """The next len(faults) requests whose key contains `match` get these faults, in order."""
        bad = [f for f in faults if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}; known: {FAULTS}")
        with self._lock:
            self._rules.append((match, collections.deque(faults)))

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self.received.clear()
            self.answered.clear()
            self.faulted.clear()
            self.max_in_flight = self.in_flight

    def _next_fault(self, key: str) -> str | None:
        with self._lock:
            self.received[key] += 1
            for match, queue in self._rules:
                if queue and match in key:
                    self.faulted[key] += 1
                    return queue.popleft()
        return None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- HTTP -----------------------------------------------------------------------------------------
    def _answer(self, body: dict[str, Any], fault: str | None) -> tuple[str, dict[str, Any]]:
        text, urls = _split_user_content(body.get("messages") or [])
        if urls and self.judge is not None:
            verdict = self.judge(text, [decode_data_uri(u) for u in urls])
            if verdict is not None:
                return text, chat_completion(verdict, self.model)
        if urls:
            if self.answer is None:
                raise ValueError("this server has no vision handler")
            p = float(self.answer(text, decode_data_uri(urls[0])))
            reply = yes_no_completion(p, self.model, self.yes_tokens, self.no_tokens,
                                      int(body.get("top_logprobs", 5)))
            if fault == "no_logprobs" or not body.get("logprobs"):
                reply["choices"][0]["logprobs"] = None
            elif fault == "garbage":
                reply = chat_completion("Maybe", self.model,
                                        [alternative("Maybe", -0.1), alternative("The", -3.0)])
            return text, reply
        if self.chat is None:
            raise ValueError("this server has no text handler")
        if body.get("logprobs"):
            raise RequestError("`logprobs` is given for vision (yes/no) requests only on this server", "logprobs")
        return text, chat_completion(self.chat(body["messages"]), self.model)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            # Echoes what it got, like some proxies do: clients must scrub their key from error messages.
            got = request.headers.get("Authorization")
            return web.json_response(error_body(f"invalid API key: {'.' * self.echo_pad}{got}",
                                                "authentication_error", code="invalid_api_key"), status=401)
        try:
            body = await request.json()
        except ValueError as e:
            return web.json_response(error_body(f"the request body is not JSON: {e}"), status=400)
        try:
            check_request(body, (self.model,))
            key, _ = _split_user_content(body["messages"])
        except RequestError as e:
            return web.json_response(e.body(), status=e.status)
        except (ValueError, AttributeError, TypeError) as e:
            return web.json_response(error_body(f"bad request: {e}", param="messages"), status=400)
        fault = self._next_fault(key)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request, body, key, fault)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request, body: dict[str, Any], key: str,
                       fault: str | None) -> web.StreamResponse:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "delay":
            await asyncio.sleep(self.fault_delay_s)
        elif fault == "timeout":  # say nothing until the client gives up (it must then retry) or hang_s passes
            until = asyncio.get_running_loop().time() + self.hang_s
            while request.transport is not None and asyncio.get_running_loop().time() < until:
                await asyncio.sleep(0.01)
            fault = "drop"
        if fault == "drop":
            if request.transport is not None:  # None when the client already hung up
                request.transport.close()
            return web.Response()
        if fault in ("429", "500", "503"):
            return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault),
                                     headers={"Retry-After": "0"} if fault == "429" else None)
        if fault == "malformed_json":
            return web.Response(text='{"choices": [{"message": {"content": "Ye', content_type="application/json")
        if fault == "echo_key":
            got = request.headers.get("Authorization")
            return web.Response(text=f"<html>proxy error {'.' * self.echo_pad}{got}</html>", content_type="text/html")
        if fault == "empty_choices":
            return web.json_response({"id": "x", "object": "chat.completion", "choices": []})
        try:
            _, reply = self._answer(body, fault)
        except RequestError as e:
            return web.json_response(e.body(), status=e.status)
        except Exception as e:  # noqa: BLE001 - a handler that cannot answer this request: tell the client
            log.warning("handler error: %s", e)
            return web.json_response(error_body(f"bad request: {e}"), status=400)
        reply = with_choices(reply, body.get("n") or 1)
        if fault == "truncated":
            data = (b"".join(stream_events(reply)) if body.get("stream") else json.dumps(reply).encode())
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream" if body.get("stream")
                                               else "application/json", "Content-Length": str(len(data))})
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            request.transport.close()
            return resp
        if fault is None or fault in ("delay", "no_logprobs"):
            with self._lock:
                self.answered[key] += 1
        if body.get("stream"):
            return await self._stream(request, reply, bool((body.get("stream_options") or {}).get("include_usage")))
        return web.json_response(reply)

    async def _stream(self, request: web.Request, reply: dict[str, Any], include_usage: bool) -> web.StreamResponse:
        """`reply` as server-sent events, one chunk per write (openai_protocol.stream_events)."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for event in stream_events(reply, include_usage):
            await resp.write(event)
        await resp.write_eof()
        return resp

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _stats(self, request: web.Request) -> web.Response:
        """Totals for callers in another process (benchmarks): requests received, usable answers, faults."""
        with self._lock:
            return web.json_response({"received": sum(self.received.values()),
                                      "answered": sum(self.answered.values()),
                                      "faulted": sum(self.faulted.values()), "max_in_flight": self.max_in_flight})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _models(self, request: web.Request) -> web.Response:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(error_body("invalid API key", "authentication_error", code="invalid_api_key"),
                                     status=401)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                              "owned_by": "alphagrpo_jax"}]})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        return app

    # --- lifetime -------------------------------------------------------------------------------------
    async def start_async(self) -> None:
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        # Handlers whose client already hung up (timeout faults) are not cancelled by the cleanup.
        stragglers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in stragglers:
            t.cancel()
        await asyncio.gather(*stragglers, return_exceptions=True)

    def start(self) -> OpenAIServer:
        """Serves from a daemon thread; returns once the port is listening."""
        ready, errors = threading.Event(), []

        def main():
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.start_async())
            except BaseException as e:  # noqa: BLE001 - re-raised in the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.stop_async())
            self._loop.close()

        self._thread = threading.Thread(target=main, name=f"openai-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Serves in the calling thread until interrupted (Ctrl-C / SIGTERM)."""
        async def main():
            await self.start_async()
            print(f"serving OpenAI-compatible API at {self.url}", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop_async()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            pass


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m alphagrpo_jax.reward.openai_server --port 8000 --p-yes 0.7 [--records train.jsonl]`: a constant
    verifier and, with --records, a decomposer that replays those question sets."""
    p = argparse.ArgumentParser(prog="python -m alphagrpo_jax.reward.openai_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--p-yes", type=float, default=0.5, help="P(yes) answered to every vision question")
    p.add_argument("--records", help="question-set JSONL to replay for decomposition requests")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--model", default="test-model", help="the served model name (= reward.model); others get a 404")
    args = p.parse_args(argv)
    chat = decomposer_chat(records_decomposer(read_records(args.records))) if args.records else None
    OpenAIServer(constant_verifier(args.p_yes), chat, host=args.host, port=args.port, model=args.model,
                 latency_s=args.latency_ms / 1000.0).serve_forever()


if __name__ == "__main__":
    main()
