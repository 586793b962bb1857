"""Async client for OpenAI-compatible `POST {base}/chat/completions` (SGLang, vLLM, OpenAI).

One `ChatClient` spreads requests over several endpoints (the least-busy one first; a retry moves to another
endpoint when one has room), caps the requests in flight per endpoint, keeps connections alive (one pooled
aiohttp session), skips an endpoint that refused a connection for `endpoint_rest_s` (while
others are up), and retries 429 / 5xx / timeouts / dropped connections / malformed bodies with exponential
backoff and jitter. A request that still fails raises `RequestFailed`; nothing is turned into a default value
here. The API key is read from an environment variable and only ever placed in the Authorization header: it,
and any prefix of it of 4+ characters, is scrubbed from every response body before the body is cut or quoted
in an error message.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiohttp

log = logging.getLogger(__name__)
T = TypeVar("T")

_RETRY_STATUSES = frozenset({408, 409, 425, 429})  # plus every 5xx


class MalformedResponse(ValueError):
    """The server answered 200 but the body is not a usable completion (retried: usually transient)."""


class UnusableAnswer(ValueError):
    """A well-formed completion whose content cannot be used (not retried: temperature 0 would repeat it)."""


class RequestFailed(RuntimeError):
    """A request that failed for good. `reason` is a short cause, `attempts` how many requests were sent."""

    def __init__(self, message: str, reason: str, attempts: int):
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts


class _RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None, body: str):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class ClientSettings:
    """Where and how to send chat requests. Times in seconds."""

    endpoints: tuple[str, ...]  # base URLs ending in /v1, e.g. "http://10.0.0.5:30000/v1"
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"  # env var holding the key; unset var = no Authorization header
    concurrency_per_endpoint: int = 64
    timeout_s: float = 120.0  # whole request, connect to last byte
    connect_timeout_s: float = 10.0
    max_retries: int = 5  # retries after the first attempt
    backoff_s: float = 0.5  # first retry waits about this long, doubling each time
    backoff_max_s: float = 20.0
    jitter: float = 0.5  # each wait is scaled by a uniform factor in [1 - jitter, 1]
    endpoint_rest_s: float = 30.0  # an endpoint that refused a connection gets no new requests for this long

    def __post_init__(self):
        eps = (self.endpoints,) if isinstance(self.endpoints, str) else tuple(self.endpoints)
        object.__setattr__(self, "endpoints", eps)
        if not eps or not all(isinstance(e, str) and e.startswith(("http://", "https://")) for e in eps):
            raise ValueError(f"reward endpoints: expected one or more http(s):// base URLs, "
                             f"got {self.endpoints!r}")
        if not self.model:
            raise ValueError("reward model: expected the served model name, got an empty string")
        for name in ("concurrency_per_endpoint",):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"reward {name}: expected >= 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"reward client: bad retry/timeout settings {self!r}")

    def url(self, index: int) -> str:
        base = self.endpoints[index].rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


class ChatClient:
    """Pooled, rate-limited, retrying chat-completions client. Use inside one event loop; `aclose()` when done."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self._key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        n = len(settings.endpoints)
        self._in_flight = [0] * n
        self._down_until = [0.0] * n  # loop time before which an endpoint that refused connections is skipped
        self._next = 0
        self.stats: collections.Counter[str] = collections.Counter()

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("ChatClient is bound to another event loop; create one client per loop")
        if self._session is None:
            s = self.settings
            total = s.concurrency_per_endpoint * len(s.endpoints)
            connector = aiohttp.TCPConnector(limit=total, limit_per_host=s.concurrency_per_endpoint,
                                             keepalive_timeout=60)
            timeout = aiohttp.ClientTimeout(total=s.timeout_s, connect=s.connect_timeout_s)
            # trust_env=False: reward servers sit next to the trainer; a cluster HTTP proxy only gets in the way
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False)
            self._slots = asyncio.Semaphore(total)
            self._loop = loop

    def _pick(self, avoid: int | None) -> int:
        """Least-busy endpoint with a free slot, preferring reachable ones other than `avoid`; ties round-robin."""
        n, cap = len(self._in_flight), self.settings.concurrency_per_endpoint
        order = [(self._next + i) % n for i in range(n)]
        self._next = (self._next + 1) % n
        free = [i for i in order if self._in_flight[i] < cap]
        now = self._loop.time()
        up = [i for i in free if self._down_until[i] <= now] or free
        preferred = [i for i in up if i != avoid] or up
        return min(preferred, key=lambda i: self._in_flight[i])

    def _scrub(self, text: str) -> str:
        return scrub(text, self._key)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    async def _send(self, index: int, payload: dict[str, Any]) -> dict[str, Any]:
        async with self._session.post(self.settings.url(index), json=payload, headers=self._headers()) as resp:
            body = await resp.read()
            # Scrubbed whole, before any cut: a key echoed across a cut would otherwise leave its prefix.
            if resp.status != 200:
                text = self._scrub(body.decode("utf-8", "replace"))[:300]
                if resp.status in _RETRY_STATUSES or resp.status >= 500:
                    raise _RetryableStatus(resp.status, _retry_after(resp.headers.get("Retry-After")), text)
                raise RequestFailed(self._scrub(f"{self.settings.url(index)}: HTTP {resp.status}: {text}"
                                                + _hint(resp.status, self.settings.api_key_env)),
                                    reason=f"http_{resp.status}", attempts=0)
        text = self._scrub(body.decode("utf-8", "replace"))  # parse errors quote (and cut) the body
        try:
            return json.loads(text)
        except ValueError:
            raise MalformedResponse(f"response body is not JSON: {text[:120]!r}") from None

    async def complete(self, payload: dict[str, Any], parse: Callable[[dict[str, Any]], T], label: str = "") -> T:
        """POSTs `payload` (model filled in if absent) and returns `parse(response_json)`.

        `parse` raises MalformedResponse to retry or UnusableAnswer to fail at once. Raises RequestFailed.
        """
        self._start()
        payload = {"model": self.settings.model, **payload}
        s, avoid, last = self.settings, None, ""
        for attempt in range(s.max_retries + 1):
            retry_after = None
            async with self._slots:
                index = self._pick(avoid)
                self._in_flight[index] += 1
                self.stats["attempts"] += 1
                try:
                    result = parse(await self._send(index, payload))
                    self.stats["ok"] += 1
                    return result
                except RequestFailed as e:
                    self.stats[e.reason] += 1
                    self.stats["failed"] += 1
                    e.attempts = attempt + 1
                    raise
                except UnusableAnswer as e:
                    self.stats["failed"] += 1
                    raise RequestFailed(self._scrub(f"{label}: unusable answer: {e}"), "unusable_answer",
                                        attempt + 1) from None
                except _RetryableStatus as e:
                    reason, last, retry_after = f"http_{e.status}", str(e), e.retry_after
                except MalformedResponse as e:
                    reason, last = "malformed", str(e)
                except asyncio.TimeoutError:
                    reason, last = "timeout", f"no complete answer within {s.timeout_s:g} s"
                except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                    reason, last = "connection", f"{type(e).__name__}: {e}"
                    if isinstance(e, aiohttp.ClientConnectorError):  # nobody listening: rest it for a while
                        self._down_until[index] = self._loop.time() + s.endpoint_rest_s
                finally:
                    self._in_flight[index] -= 1
            self.stats[reason] += 1
            avoid = index
            if attempt < s.max_retries:
                self.stats["retries"] += 1
                delay = min(s.backoff_max_s, s.backoff_s * 2 ** attempt) * (1 - s.jitter * random.random())
                if retry_after is not None:
                    delay = max(delay, min(retry_after, s.backoff_max_s))
                log.debug("%s: %s (attempt %d), retrying in %.2f s", label, self._scrub(last), attempt + 1, delay)
                await asyncio.sleep(delay)  # outside the slot: a waiting retry does not block other requests
        self.stats["failed"] += 1
        raise RequestFailed(self._scrub(f"{label}: gave up after {s.max_retries + 1} attempts; last error: "
                                        f"{reason}: {last}"), reason, s.max_retries + 1)


def scrub(text: str, key: str) -> str:
    """`text` with every occurrence of `key`, and of any prefix of it of 4 or more characters (what survives a
    cut through an echoed key), replaced by ***."""
    if not key:
        return text
    text = text.replace(key, "***")
    head = key[:4]
    if len(key) < 4 or head not in text:
        return text
    out, i = [], 0
    while (j := text.find(head, i)) >= 0:
        n = 4
        while n < len(key) and j + n < len(text) and text[j + n] == key[n]:
            n += 1
        out.append(text[i:j] + "***")
        i = j + n
    return "".join(out) + text[i:]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP-date; the exponential backoff is good enough


def _hint(status: int, api_key_env: str | None) -> str:
    if status in (401, 403):
        return f" (check that ${api_key_env} holds a valid key)" if api_key_env else " (set reward.api_key_env)"
    if status == 404:
        return " (is the endpoint a base URL ending in /v1, and is the model name the served one?)"
    return ""


def message_content(completion: dict[str, Any]) -> str:
    """`choices[0].message.content` of a completion; MalformedResponse if the shape is wrong."""
    try:
        content = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise MalformedResponse(f"no choices[0].message.content in {str(completion)[:160]}") from None
    if not isinstance(content, str):
        raise MalformedResponse(f"choices[0].message.content is {type(content).__name__}, expected a string")
    return content


def settings_from_config(config, endpoints: Sequence[str] | None = None) -> ClientSettings:
    """ClientSettings from a reward ConfigDict (see `service.reward_config`)."""
    return ClientSettings(
        endpoints=tuple(endpoints if endpoints is not None else config.endpoints), model=config.model,
        api_key_env=config.api_key_env or None, concurrency_per_endpoint=int(config.concurrency_per_endpoint),
        timeout_s=float(config.timeout_s), connect_timeout_s=float(config.connect_timeout_s),
        max_retries=int(config.max_retries), backoff_s=float(config.backoff_s),
        backoff_max_s=float(config.backoff_max_s), jitter=float(config.jitter),
        endpoint_rest_s=float(config.endpoint_rest_s))
