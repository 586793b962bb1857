"""Reward components and their registry; `service.RewardFn` sums them with weights from config.

A component is built from the reward ConfigDict and scores a whole batch asynchronously:

    @register_component("my_reward")
    def _build(config) -> RewardComponent: ...

Each returns per-sample values [N] (unweighted), per-sample info dicts (keys without the component prefix),
the questions it had to drop, and integer counts for logging.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from alphagrpo_jax.reward.client import ChatClient, settings_from_config
from alphagrpo_jax.reward.dvreward import DVRewardScorer, VerifierSettings
from alphagrpo_jax.reward.fmt import think_format_rewards
from alphagrpo_jax.reward.records import QuestionSet
from alphagrpo_jax.sampling.prompts import prompt_text

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RewardBatch:
    """N samples. Fields a component does not need may be None."""

    prompts: list[str]
    images: list | None = None  # uint8 [H, W, C] arrays or PIL images, already copied
    records: list[QuestionSet] | None = None
    texts: list[str] | None = None  # generated text (e.g. the think block) per sample

    def __len__(self) -> int:
        return len(self.prompts)


@dataclasses.dataclass(frozen=True)
class ComponentOutput:
    values: np.ndarray  # [N] float32, unweighted
    info: list[dict[str, float]]  # per sample
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"sample", "question", "error"}
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    details: list[Any] | None = None  # per sample, free-form (dvreward: its QuestionScores), for logging


class RewardComponent(Protocol):
    needs: tuple[str, ...]  # RewardBatch fields that must not be None

    async def score(self, batch: RewardBatch) -> ComponentOutput: ...

    async def aclose(self) -> None: ...


COMPONENTS: dict[str, Callable[[Any], RewardComponent]] = {}


def register_component(name: str):
    def deco(factory):
        if name in COMPONENTS:
            raise ValueError(f"reward component {name!r} is registered twice")
        COMPONENTS[name] = factory
        return factory
    return deco


def make_component(name: str, config) -> RewardComponent:
    if name not in COMPONENTS:
        raise ValueError(f"reward weights: unknown component {name!r}; known: {sorted(COMPONENTS)}")
    return COMPONENTS[name](config)


class DVRewardComponent:
    """Decompositional verifiable reward through an OpenAI-compatible VLM server."""

    needs = ("images", "records")

    def __init__(self, client: ChatClient, settings: VerifierSettings):
        self.client = client
        self.scorer = DVRewardScorer(client, settings)

    async def score(self, batch: RewardBatch) -> ComponentOutput:
        scores = await self.scorer.score(batch.images, batch.records)
        info, failures = [], []
        counts = {"questions": 0, "scored": 0, "dropped": 0, "from_logprobs": 0, "from_text": 0}
        for i, s in enumerate(scores):
            row = {"overall": s.overall, "semantic": s.semantic, "quality": s.quality, "dropped": float(s.dropped)}
            row.update({f"tag/{tag}": v for tag, v in s.per_tag.items()})
            info.append(row)
            for q in s.questions:
                counts["questions"] += 1
                if q.p_yes is None:
                    counts["dropped"] += 1
                    failures.append({"sample": i, "question": q.question, "error": q.error})
                else:
                    counts["scored"] += 1
                    counts["from_logprobs" if q.source == "logprobs" else "from_text"] += 1
        if counts["from_text"]:
            log.warning("dvreward: %d of %d verifier answers had no usable logprobs and were scored 0/1 from the "
                        "answer text (reward.allow_text_scores=True)", counts["from_text"], counts["questions"])
        if counts["dropped"]:
            log.warning("dvreward: dropped %d of %d verifier questions (failure_policy='drop') in %d samples",
                        counts["dropped"], counts["questions"], len({f["sample"] for f in failures}))
        values = np.asarray([s.overall for s in scores], dtype=np.float32)
        return ComponentOutput(values, info, failures, counts, details=[s.questions for s in scores])

    async def aclose(self) -> None:
        await self.client.aclose()


class ThinkFormatComponent:
    """1 for a `<think>...</think>` text, else 0 (see fmt.py)."""

    needs = ("texts",)

    async def score(self, batch: RewardBatch) -> ComponentOutput:
        values = think_format_rewards(batch.texts)
        return ComponentOutput(values, [{"value": float(v)} for v in values])

    async def aclose(self) -> None:
        return None


def verifier_prompt_setting(config) -> dict:
    """{"system_prompt": text} when the reward config sets `verifier_system_prompt` (text or file:PATH), else {}."""
    text = prompt_text(config.get("verifier_system_prompt"), "reward.verifier_system_prompt")
    return {} if text is None else {"system_prompt": text}


@register_component("dvreward")
def _build_dvreward(config) -> DVRewardComponent:
    settings = VerifierSettings(
        aggregation=config.aggregation, failure_policy=config.failure_policy, image_format=config.image_format,
        jpeg_quality=int(config.jpeg_quality), max_tokens=int(config.max_tokens),
        top_logprobs=int(config.top_logprobs), allow_text_scores=bool(config.get("allow_text_scores", False)),
        **verifier_prompt_setting(config))
    return DVRewardComponent(ChatClient(settings_from_config(config)), settings)


@register_component("think_format")
def _build_think_format(config) -> ThinkFormatComponent:
    del config
    return ThinkFormatComponent()
