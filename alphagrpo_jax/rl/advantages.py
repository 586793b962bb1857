"""Group-relative advantages (registry). Rewards arrive as [P, G]: P prompts x G samples of one round.

"grpo" (the reference): A = (r - mean over the prompt's group) / (std + eps), where std is taken over the whole
population ("global", default) or per group ("group"); `compute(..., population=n)` estimates over consecutive
blocks of n prompts (the reference's population is its round of 8 prompts; rl/accumulation.py); image steps
additionally clip A to [-clip, clip] (the learner applies the clip). "rloo": leave-one-out mean baseline, same
normalisation. "drgrpo": no std division.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

ADVANTAGES: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        ADVANTAGES[name] = fn
        return fn
    return deco


def _scale(centered: np.ndarray, rewards: np.ndarray, std: str, eps: float) -> np.ndarray:
    if std == "global":
        return centered / (rewards.std() + eps)
    if std == "group":
        return centered / (rewards.std(axis=1, keepdims=True) + eps)
    if std == "none":
        return centered
    raise ValueError(f"advantage std must be 'global', 'group' or 'none', got {std!r}")


@register("grpo")
def grpo(rewards: np.ndarray, std: str = "global", eps: float = 1e-4) -> np.ndarray:
    r = np.asarray(rewards, np.float64)
    return _scale(r - r.mean(axis=1, keepdims=True), r, std, eps).astype(np.float32)


@register("rloo")
def rloo(rewards: np.ndarray, std: str = "global", eps: float = 1e-4) -> np.ndarray:
    r = np.asarray(rewards, np.float64)
    g = r.shape[1]
    baseline = (r.sum(axis=1, keepdims=True) - r) / (g - 1)
    return _scale(r - baseline, r, std, eps).astype(np.float32)


@register("drgrpo")
def drgrpo(rewards: np.ndarray, std: str = "none", eps: float = 0.0) -> np.ndarray:
    del std, eps
    r = np.asarray(rewards, np.float64)
    return (r - r.mean(axis=1, keepdims=True)).astype(np.float32)


def compute(name: str, rewards: np.ndarray, population: int | None = None, **kw) -> np.ndarray:
    """[P, G] rewards -> [P, G] advantages with the named estimator, each consecutive block of `population`
    prompts normalised on its own (None: all P prompts are one population)."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGES)}")
    rewards = np.asarray(rewards)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, group >= 2], got shape {rewards.shape}")
    if not np.all(np.isfinite(rewards)):
        raise ValueError("rewards contain NaN/inf")
    population = population or rewards.shape[0]
    if rewards.shape[0] % population:
        raise ValueError(f"{rewards.shape[0]} prompts do not split into populations of {population}")
    return np.concatenate([ADVANTAGES[name](rewards[i:i + population], **kw)
                           for i in range(0, rewards.shape[0], population)])
