"""`toy_dvreward`: DVReward for the toy world computed in process (no HTTP), same aggregation as `dvreward`.

Importing this module registers the component; configs select it with `reward.weights.toy_dvreward`.
The answers equal those of `python -m alphagrpo_jax.toy.serve` behind the HTTP `dvreward` component
(PNG transport), which a test checks.
"""
from __future__ import annotations

import asyncio

import numpy as np

from alphagrpo_jax.reward.components import ComponentOutput, RewardBatch, register_component
from alphagrpo_jax.reward.dvreward import QuestionScore, combine
from alphagrpo_jax.toy import verifier


def score_image(record, image: np.ndarray, aggregation: str = "geometric", where: str = "toy_dvreward"):
    """One image's DVReward `ImageScore` from the exact toy verifier's answers to `record`'s questions."""
    p = verifier.score_record(record, np.asarray(image))
    qs = [QuestionScore(kind, q.question, q.tag, float(pv), "logprobs")
          for (kind, q), pv in zip([("semantic", q) for q in record.semantic]
                                   + [("quality", q) for q in record.quality], p)]
    return combine(qs, aggregation, "fail", where)


class ToyDVRewardComponent:
    needs = ("images", "records")

    def __init__(self, aggregation: str = "geometric"):
        self.aggregation = aggregation

    def _score(self, batch: RewardBatch) -> ComponentOutput:
        values, info, details = [], [], []
        for i, (image, record) in enumerate(zip(batch.images, batch.records)):
            s = score_image(record, image, self.aggregation, f"sample {i}")
            values.append(s.overall)
            row = {"overall": s.overall, "semantic": s.semantic, "quality": s.quality}
            row.update({f"tag/{tag}": v for tag, v in s.per_tag.items()})
            info.append(row)
            details.append(s.questions)
        return ComponentOutput(np.asarray(values, np.float32), info, [], {"questions": sum(map(len, details))},
                               details)

    async def score(self, batch: RewardBatch) -> ComponentOutput:
        return await asyncio.to_thread(self._score, batch)

    async def aclose(self) -> None:
        return None


@register_component("toy_dvreward")
def _build(config) -> ToyDVRewardComponent:
    return ToyDVRewardComponent(config.aggregation)
