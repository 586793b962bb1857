"""One verifier question: the request for (image, question) and P(yes) from the answer.

P(yes) comes from the first generated token's top alternatives (`logprobs` + `top_logprobs`):

    P(yes) = sum_{t: norm(t) == "yes"} exp(logprob_t) / sum_{t: norm(t) in {"yes", "no"}} exp(logprob_t)

where `norm` lower-cases and drops whitespace, punctuation and sub-word markers, so " Yes", "yes.", "YES" and
"ĠYes" all count as yes. When the server sent no logprobs the answer is a `MalformedResponse` (retried); when
neither yes nor no is among the alternatives it is an `UnusableAnswer`. Only with `allow_text=True`
(config `reward.allow_text_scores`) does the answer text decide instead: its first word "yes" -> 1.0,
"no" -> 0.0 (source "text": a 0/1 score, counted and warned about by the caller).
"""
from __future__ import annotations

import math
import string
from typing import Any

from alphagrpo_jax.reward.client import MalformedResponse, UnusableAnswer, message_content

VERIFIER_SYSTEM_PROMPT = (
    "You inspect images made by an image generator. Look at the image and answer the user's question about it "
    "with one word: yes or no. Write nothing else. If something the question refers to cannot be seen in the "
    "image, the answer is no.")

# Byte-level BPE (Ġ, Ċ) and SentencePiece (▁) word markers, in case a server returns raw vocabulary pieces.
_STRIP = str.maketrans("", "", string.punctuation + string.whitespace + "\u0120\u010a\u2581")


def normalise_token(token: str) -> str:
    """Lower-case, without whitespace, ASCII punctuation or sub-word markers: " Yes." -> "yes"."""
    return token.translate(_STRIP).lower()


def verifier_payload(image_uri: str, question: str, *, max_tokens: int = 10, top_logprobs: int = 5,
                     system_prompt: str = VERIFIER_SYSTEM_PROMPT) -> dict[str, Any]:
    """Chat-completions body for one question about one image (model name added by the client)."""
    return {
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_uri}},
                                         {"type": "text", "text": question}]},
        ],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "logprobs": True,
        "top_logprobs": top_logprobs,
    }


def _first_token_alternatives(completion: dict[str, Any]) -> list[dict[str, Any]] | None:
    logprobs = completion["choices"][0].get("logprobs")
    if not logprobs:
        return None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        return None
    top = content[0].get("top_logprobs")
    if top is None:
        return None
    if not isinstance(top, list):
        raise MalformedResponse(f"logprobs.content[0].top_logprobs is {type(top).__name__}, expected a list")
    return top


def yes_no_mass(alternatives: list[dict[str, Any]]) -> tuple[float, float]:
    """(sum P over yes-tokens, sum P over no-tokens) among one position's top alternatives."""
    yes = no = 0.0
    for alt in alternatives:
        try:
            token, logprob = alt["token"], float(alt["logprob"])
        except (KeyError, TypeError, ValueError):
            raise MalformedResponse(f"top_logprobs entry without token/logprob: {alt!r}") from None
        if math.isnan(logprob) or logprob > 1e-6:
            raise MalformedResponse(f"top_logprobs entry with an impossible logprob: {alt!r}")
        word = normalise_token(str(token))
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    return yes, no


def p_yes_from_completion(completion: dict[str, Any], allow_text: bool = False) -> tuple[float, str]:
    """(P(yes) in [0, 1], source) with source "logprobs" or (allow_text only) "text".
    Raises MalformedResponse / UnusableAnswer."""
    text = message_content(completion)  # also checks the choices[0] shape
    alternatives = _first_token_alternatives(completion)
    if alternatives:
        yes, no = yes_no_mass(alternatives)
        if yes + no > 0.0:
            return yes / (yes + no), "logprobs"
    if not allow_text:
        if not alternatives:
            raise MalformedResponse("the answer has no logprobs (the server must return logprobs and "
                                    "top_logprobs; reward.allow_text_scores=True scores the answer text as 0/1)")
        raise UnusableAnswer(f"neither yes nor no among the first token's top_logprobs "
                             f"{[a.get('token') for a in alternatives]} (answer {text[:80]!r}; "
                             f"reward.allow_text_scores=True scores the answer text as 0/1)")
    words = text.strip().split()
    first = normalise_token(words[0]) if words else ""
    if first == "yes":
        return 1.0, "text"
    if first == "no":
        return 0.0, "text"
    raise UnusableAnswer(f"answer is neither yes nor no: {text[:80]!r}")
