"""DVReward: score an image by asking the verifier every question of its prompt's question set.

Per image, with S = mean P(yes) over semantic questions and Q = mean P(yes) over quality questions (an empty
group counts as 1.0, as in the reference):

    geometric (default): sqrt(S * Q)      mean: (S + Q) / 2      sum_mean: mean over all questions

Failure policy for a question that still fails after the client's retries (never scored 0 quietly):
    "fail": raise `RewardFailure` naming every failed question;
    "drop": leave the question out, renormalise over the rest of its group, and count it. A group that loses
            all of its questions, or an image that loses all of them, is still a `RewardFailure` (scoring the
            group as "empty = 1.0" would reward a verifier outage).
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Sequence

from alphagrpo_jax.reward.client import ChatClient, RequestFailed
from alphagrpo_jax.reward.images import IMAGE_FORMATS, encode_data_uri
from alphagrpo_jax.reward.records import QuestionSet
from alphagrpo_jax.reward.verifier import VERIFIER_SYSTEM_PROMPT, p_yes_from_completion, verifier_payload

AGGREGATIONS = ("geometric", "mean", "sum_mean")
FAILURE_POLICIES = ("fail", "drop")
UNTAGGED = "untagged"


class RewardFailure(RuntimeError):
    """Verifier questions failed and the failure policy does not allow the reward to be computed."""


def aggregate(semantic: Sequence[float], quality: Sequence[float],
              mode: str = "geometric") -> tuple[float, float, float]:
    """(overall, S, Q) from per-question P(yes) values of one image."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"reward aggregation: expected one of {AGGREGATIONS}, got {mode!r}")
    s = sum(semantic) / len(semantic) if semantic else 1.0
    q = sum(quality) / len(quality) if quality else 1.0
    if mode == "geometric":
        return math.sqrt(s * q), s, q
    if mode == "mean":
        return 0.5 * (s + q), s, q
    n = len(semantic) + len(quality)
    if n == 0:
        raise ValueError("sum_mean aggregation of an image with no questions")
    return (sum(semantic) + sum(quality)) / n, s, q


@dataclasses.dataclass(frozen=True)
class QuestionScore:
    kind: str  # "semantic" | "quality"
    question: str
    tag: str | None
    p_yes: float | None  # None when the question failed
    source: str  # "logprobs" | "text" | "failed"
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class ImageScore:
    overall: float
    semantic: float  # S
    quality: float  # Q
    questions: tuple[QuestionScore, ...]  # every question, in record order (semantic first)
    per_tag: dict[str, float]  # mean P(yes) per tag over the scored questions
    dropped: int  # questions left out under the "drop" policy


def tag_means(scores: Sequence[QuestionScore]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for s in scores:
        if s.p_yes is not None:
            groups.setdefault(s.tag or UNTAGGED, []).append(s.p_yes)
    return {tag: sum(v) / len(v) for tag, v in sorted(groups.items())}


def combine(scores: Sequence[QuestionScore], mode: str, policy: str, where: str) -> ImageScore:
    """Applies the failure policy and aggregates one image's question scores."""
    if policy not in FAILURE_POLICIES:
        raise ValueError(f"reward failure_policy: expected one of {FAILURE_POLICIES}, got {policy!r}")
    failed = [s for s in scores if s.p_yes is None]
    if not scores:
        raise RewardFailure(f"{where}: the question set has no questions")
    if failed and policy == "fail":
        raise RewardFailure(f"{where}: {len(failed)}/{len(scores)} verifier questions failed (failure_policy="
                            f"'fail'): " + "; ".join(f"{s.question!r}: {s.error}" for s in failed[:5]))
    values = {}
    for kind in ("semantic", "quality"):
        group = [s for s in scores if s.kind == kind]
        values[kind] = [s.p_yes for s in group if s.p_yes is not None]
        if group and not values[kind]:
            raise RewardFailure(f"{where}: all {len(group)} {kind} questions failed, even under failure_policy="
                                f"'drop'; first error: {group[0].error}")
    overall, s, q = aggregate(values["semantic"], values["quality"], mode)
    return ImageScore(overall=overall, semantic=s, quality=q, questions=tuple(scores), per_tag=tag_means(scores),
                      dropped=len(failed))


@dataclasses.dataclass(frozen=True)
class VerifierSettings:
    aggregation: str = "geometric"
    failure_policy: str = "fail"
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    max_tokens: int = 10
    top_logprobs: int = 5
    system_prompt: str = VERIFIER_SYSTEM_PROMPT
    allow_text_scores: bool = False  # no usable logprobs: score the answer text 0/1 (counted) instead of failing

    def __post_init__(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"reward aggregation: expected one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.failure_policy not in FAILURE_POLICIES:
            raise ValueError(f"reward failure_policy: expected one of {FAILURE_POLICIES}, "
                             f"got {self.failure_policy!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"reward image_format: expected one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.top_logprobs <= 20:
            raise ValueError(f"reward top_logprobs: expected 1..20, got {self.top_logprobs}")


class DVRewardScorer:
    """Scores images against question sets through a `ChatClient` (one request per question)."""

    def __init__(self, client: ChatClient, settings: VerifierSettings = VerifierSettings()):
        self.client = client
        self.settings = settings

    async def _ask(self, image_uri: str, kind: str, q, label: str) -> QuestionScore:
        st = self.settings
        payload = verifier_payload(image_uri, q.question, max_tokens=st.max_tokens, top_logprobs=st.top_logprobs,
                                   system_prompt=st.system_prompt)
        try:
            parse = functools.partial(p_yes_from_completion, allow_text=st.allow_text_scores)
            p, source = await self.client.complete(payload, parse, label=label)
        except RequestFailed as e:
            return QuestionScore(kind, q.question, q.tag, None, "failed", str(e))
        return QuestionScore(kind, q.question, q.tag, p, source)

    async def score_one(self, image, record: QuestionSet, where: str = "image") -> ImageScore:
        st = self.settings
        loop = asyncio.get_running_loop()
        # JPEG/PNG encoding releases the GIL in PIL; keep it off the event loop thread.
        uri = await loop.run_in_executor(None, encode_data_uri, image, st.image_format, st.jpeg_quality, where)
        asks = [self._ask(uri, q.kind, q, f"{where} question {i}") for i, q in enumerate(record.questions)]
        scores = await asyncio.gather(*asks)
        return combine(scores, st.aggregation, st.failure_policy, where)

    async def score(self, images: Sequence, records: Sequence[QuestionSet]) -> list[ImageScore]:
        """One ImageScore per image, in order. Raises RewardFailure per the failure policy (all images are
        scored first, so the error lists every failing image)."""
        if len(images) != len(records):
            raise ValueError(f"dvreward: {len(images)} images but {len(records)} question sets")
        results = await asyncio.gather(*(self.score_one(img, rec, f"sample {i}")
                                         for i, (img, rec) in enumerate(zip(images, records))),
                                       return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for r in errors:
            if not isinstance(r, RewardFailure):
                raise r  # bad input or a bug: not a verifier failure
        if errors:
            raise RewardFailure(f"{len(errors)}/{len(images)} samples could not be scored:\n  "
                                + "\n  ".join(str(e) for e in errors[:8]))
        return results
