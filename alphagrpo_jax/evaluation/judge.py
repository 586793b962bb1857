"""Asking an OpenAI-compatible VLM judge: many (image(s), text) requests at once through the DVReward chat client
(pooled, retrying; an answer that cannot be parsed is retried, then fails loudly: never a silent zero).

    judge = Judge(endpoint, model)
    answers = judge.ask([Request([png_bytes], "question text", parse)], label="tiif")
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from alphagrpo_jax.reward.client import ChatClient, ClientSettings, MalformedResponse, message_content


@dataclasses.dataclass(frozen=True)
class Request:
    images: Sequence[bytes]              # encoded PNG/JPEG, in the order the template refers to them
    text: str                            # the filled-in judge template
    parse: Callable[[str], Any]          # answer text -> value; raises ValueError when the answer is unusable
    system: str = ""


def data_uri(image: bytes) -> str:
    fmt = "png" if image[:4] == b"\x89PNG" else "jpeg"
    return f"data:image/{fmt};base64," + base64.b64encode(image).decode("ascii")


class Judge:
    def __init__(self, endpoint: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 max_retries: int = 5, timeout_s: float = 300.0, temperature: float = 0.0):
        self.settings = ClientSettings((endpoint,), model, api_key_env or None, concurrency_per_endpoint=concurrency,
                                       max_retries=max_retries, timeout_s=timeout_s)
        self.temperature = temperature

    def payload(self, req: Request) -> dict[str, Any]:
        content = [{"type": "image_url", "image_url": {"url": data_uri(im)}} for im in req.images]
        content.append({"type": "text", "text": req.text})
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + \
            [{"role": "user", "content": content}]
        return {"messages": messages, "temperature": self.temperature, "max_tokens": 1024}

    def ask(self, requests: Sequence[Request], label: str = "judge") -> list[Any]:
        """Every request's parsed answer, in order (RequestFailed if one fails after its retries)."""
        async def run():
            async with ChatClient(self.settings) as client:
                return await asyncio.gather(*[
                    client.complete(self.payload(r), _parser(r.parse), f"{label} request {i}")
                    for i, r in enumerate(requests)])
        return list(asyncio.run(run())) if requests else []


def _parser(parse: Callable[[str], Any]) -> Callable[[dict[str, Any]], Any]:
    def wrapped(completion: dict[str, Any]) -> Any:
        text = message_content(completion)
        try:
            return text, parse(text)
        except ValueError as e:  # retried: sampling judges may format the next answer right
            raise MalformedResponse(f"judge answer not in the expected format ({e}): {text[:200]!r}") from None
    return wrapped
