"""JSON out of LLM replies: strip markdown fences and chatter, repair the common slips, or say what is wrong.

Repairs, in order, stopping at the first text that parses:
  1. the reply as is;
  2. the body of a ```json fenced block;
  3. the outermost {...} or [...] span (drops "Here is the JSON:" and trailing remarks);
  4. that span with trailing commas removed and Python literals (True/False/None) turned into JSON ones,
     both only outside string literals.
Anything else raises `JSONReplyError`, whose message is fed back to the model when it is re-asked.
"""
from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


class JSONReplyError(ValueError):
    """The reply holds no parseable JSON; the message says why (shown to the model on re-ask)."""


def _outer_span(text: str) -> str | None:
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    return text[start:end + 1] if end > start else None


def _repair(text: str) -> str:
    """Drops trailing commas and maps Python literals to JSON, leaving string contents untouched."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':  # copy a whole string literal verbatim
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
            continue
        if c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "}]":
                i += 1
                continue
        m = re.match(r"True|False|None", text[i:i + 5])
        if m and (i == 0 or not text[i - 1].isalnum()) and not text[i + len(m[0]):i + len(m[0]) + 1].isalnum():
            out.append(_PY_LITERALS[m[0]])
            i += len(m[0])
            continue
        out.append(c)
        i += 1
    return "".join(out)


def extract_json(reply: str) -> Any:
    """The JSON value in an LLM reply (see module docstring); raises JSONReplyError."""
    if not isinstance(reply, str) or not reply.strip():
        raise JSONReplyError("the reply is empty; expected a JSON object")
    candidates = [reply.strip()]
    fence = _FENCE.search(reply)
    if fence:
        candidates.append(fence.group(1).strip())
    span = _outer_span(candidates[-1])  # None when there is no {...} / [...] at all
    if span:
        candidates += [span, _repair(span)]
    for text in candidates:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            error = e  # the last candidate is the most repaired one: its error is the most telling
    if "{" not in reply and "[" not in reply:
        raise JSONReplyError("the reply holds no JSON object or array")
    raise JSONReplyError(f"the reply is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})")
