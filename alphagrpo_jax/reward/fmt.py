"""Think-format reward: 1.0 for a well-formed `<think>...</think>` text, else 0.0.

Well-formed is the reference's rule, kept exactly: the text starts with "<think>" and ends with "</think>"
(no stripping, nothing checked in between). Its values are {0, 1}; the reference's `reflect.py` comment that
assumes [-1, 0] does not match its shipped function, and neither does this one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THINK_START = "<think>"
THINK_END = "</think>"


def think_format_reward(text: str) -> float:
    if not isinstance(text, str):
        raise TypeError(f"think_format: expected the generated text as str, got {type(text).__name__}")
    return 1.0 if text.startswith(THINK_START) and text.endswith(THINK_END) else 0.0


def think_format_rewards(texts: Sequence[str]) -> np.ndarray:
    """[N] float32 rewards for N texts."""
    return np.asarray([think_format_reward(t) for t in texts], dtype=np.float32)
