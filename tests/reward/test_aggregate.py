import math

import pytest

from alphagrpo_jax.reward.dvreward import QuestionScore, RewardFailure, aggregate, combine


def test_geometric_is_the_default():
    overall, s, q = aggregate([1.0, 0.5], [0.25])
    assert (s, q) == (0.75, 0.25)
    assert overall == pytest.approx(math.sqrt(0.75 * 0.25))


def test_mean_and_sum_mean():
    assert aggregate([1.0, 0.5], [0.25], "mean")[0] == pytest.approx(0.5)
    assert aggregate([1.0, 0.5], [0.25], "sum_mean")[0] == pytest.approx(1.75 / 3)


@pytest.mark.parametrize("mode, expected", [("geometric", math.sqrt(0.4)), ("mean", 0.7), ("sum_mean", 0.4)])
def test_empty_group_counts_as_one(mode, expected):
    assert aggregate([], [0.2, 0.6], mode)[0] == pytest.approx(expected)
    assert aggregate([], [0.2, 0.6], mode)[1] == 1.0


def test_no_questions_and_unknown_mode():
    assert aggregate([], [], "geometric")[0] == 1.0  # the reference's empty rule
    with pytest.raises(ValueError, match="no questions"):
        aggregate([], [], "sum_mean")
    with pytest.raises(ValueError, match="expected one of"):
        aggregate([1.0], [1.0], "sqrt_mean")


def qs(kind, p, tag, name=None):
    return QuestionScore(kind, name or f"{kind} {tag} {p}", tag, p, "failed" if p is None else "logprobs",
                         None if p is not None else "HTTP 500")


SCORES = [qs("semantic", 0.2, "Existence"), qs("semantic", None, "Count", "how many?"),
          qs("semantic", 0.8, "Existence"), qs("quality", 0.5, "Texture"), qs("quality", 0.3, None)]


def test_fail_policy_raises_naming_the_question():
    with pytest.raises(RewardFailure, match=r"sample 3: 1/5 verifier questions failed.*'how many\?': HTTP 500"):
        combine(SCORES, "geometric", "fail", "sample 3")


def test_drop_policy_renormalises_and_counts():
    out = combine(SCORES, "geometric", "drop", "sample 3")
    assert out.semantic == pytest.approx(0.5) and out.quality == pytest.approx(0.4)
    assert out.overall == pytest.approx(math.sqrt(0.2))
    assert out.dropped == 1
    assert out.per_tag == pytest.approx({"Existence": 0.5, "Texture": 0.5, "untagged": 0.3})
    assert len(out.questions) == 5  # the failed one is kept (with its error) for logging


def test_drop_policy_still_fails_when_a_group_or_image_loses_everything():
    lost_group = [qs("semantic", None, "Count"), qs("quality", 0.9, "Texture")]
    with pytest.raises(RewardFailure, match="all 1 semantic questions failed"):
        combine(lost_group, "geometric", "drop", "img")
    with pytest.raises(RewardFailure, match="all 2 quality"):
        combine([qs("quality", None, "Texture"), qs("quality", None, "Anatomy")], "mean", "drop", "img")
    with pytest.raises(RewardFailure, match="no questions"):
        combine([], "geometric", "drop", "img")


def test_unknown_policy():
    with pytest.raises(ValueError, match="failure_policy"):
        combine(SCORES, "geometric", "zero", "img")
