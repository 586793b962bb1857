"""What a run's reward is, in words, for plots and captions: the weighted sum of its reward components.

    describe({"dvreward": 0.0, "think_format": 0.2, "toy_dvreward": 1.0})   # "toy_dvreward + 0.2*think_format"
"""
from __future__ import annotations

from collections.abc import Mapping


def describe(weights: Mapping[str, float]) -> str:
    """The reward `service.RewardService` computes: the components of non-zero weight, weight-1 terms first."""
    terms = sorted(((name, float(w)) for name, w in weights.items() if float(w) != 0.0),
                   key=lambda t: (t[1] != 1.0, t[0]))
    if not terms:
        return "reward"
    return " + ".join(name if w == 1.0 else f"{w:g}*{name}" for name, w in terms).replace("+ -", "- ")
