"""Chat-completion response bodies in the shape OpenAI, vLLM and SGLang return, for servers and tests.

    choices[0].message.content                      the answer text
    choices[0].logprobs.content[0].top_logprobs     [{token, logprob, bytes}, ...] for the first generated token
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

_ids = itertools.count()
# vLLM reports impossible tokens as -9999.0 (JSON has no -inf); so do we.
MIN_LOGPROB = -9999.0
_FILLERS = ("The", "I", "\n")


def _logprob(p: float) -> float:
    return math.log(p) if p > 0.0 else MIN_LOGPROB


def alternative(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_completion(content: str, model: str, top_logprobs: Sequence[dict[str, Any]] | None = None,
                    finish_reason: str = "stop") -> dict[str, Any]:
    """A full `chat.completion` object; `top_logprobs` (first token's alternatives) adds a logprobs block."""
    logprobs = None
    if top_logprobs is not None:
        first = top_logprobs[0] if top_logprobs else alternative(content[:1], 0.0)
        logprobs = {"content": [{**first, "top_logprobs": list(top_logprobs)}]}
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1},
    }


def yes_no_completion(p_yes: float, model: str, yes_tokens: Sequence[str] = (" Yes",),
                      no_tokens: Sequence[str] = (" No",), k: int = 5) -> dict[str, Any]:
    """The answer of a verifier whose first-token distribution puts `p_yes` on yes (split evenly across the
    spellings in `yes_tokens`) and 1 - p_yes on no; filler tokens pad the list to `k`. The text is the more
    likely answer."""
    if not 0.0 <= p_yes <= 1.0:
        raise ValueError(f"p_yes must be in [0, 1], got {p_yes}")
    alts = [alternative(t, _logprob(p_yes / len(yes_tokens))) for t in yes_tokens]
    alts += [alternative(t, _logprob((1.0 - p_yes) / len(no_tokens))) for t in no_tokens]
    alts += [alternative(t, -30.0) for t in _FILLERS]
    alts = sorted(alts, key=lambda a: -a["logprob"])[:k]
    text = (yes_tokens[0] if p_yes >= 0.5 else no_tokens[0]).strip()
    return chat_completion(text, model, alts)
