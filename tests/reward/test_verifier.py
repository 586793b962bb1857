import math

import pytest

from alphagrpo_jax.reward.client import MalformedResponse, UnusableAnswer
from alphagrpo_jax.reward.openai_shapes import alternative, chat_completion, yes_no_completion
from alphagrpo_jax.reward.verifier import normalise_token, p_yes_from_completion, verifier_payload


def completion(text, alts):
    return chat_completion(text, "m", [alternative(t, math.log(p)) for t, p in alts] if alts is not None else None)


@pytest.mark.parametrize("token, word", [
    (" Yes", "yes"), ("yes.", "yes"), ("YES", "yes"), ("Yes!", "yes"), ("\nyes", "yes"), ("\u0120Yes", "yes"),
    ("\u2581No", "no"), (" no,", "no"), ("NO", "no"), ("yesterday", "yesterday"), ("Not", "not")])
def test_normalise_token(token, word):
    assert normalise_token(token) == word


def test_yes_no_mass_ratio_over_all_spellings():
    # yes-mass 0.4 + 0.1 + 0.05, no-mass 0.2 + 0.05; "Yesterday" and "The" are neither.
    c = completion("Yes", [(" Yes", 0.4), ("yes.", 0.1), ("YES", 0.05), (" No", 0.2), ("no", 0.05),
                           ("Yesterday", 0.1), ("The", 0.1)])
    p, source = p_yes_from_completion(c)
    assert source == "logprobs"
    assert p == pytest.approx(0.55 / 0.80, abs=1e-12)


def test_one_sided_alternatives():
    assert p_yes_from_completion(completion("Yes", [(" Yes", 0.9), ("The", 0.05)]))[0] == 1.0
    assert p_yes_from_completion(completion("No", [("No", 0.9), ("I", 0.05)]))[0] == 0.0


@pytest.mark.parametrize("text, p", [("Yes.", 1.0), ("yes, there is a dog", 1.0), (" NO", 0.0), ("No!", 0.0)])
def test_text_fallback_without_logprobs_only_when_allowed(text, p):
    assert p_yes_from_completion(completion(text, None), allow_text=True) == (p, "text")
    with pytest.raises(MalformedResponse, match="has no logprobs.*reward.allow_text_scores=True"):
        p_yes_from_completion(completion(text, None))  # retried, never a silent 0/1


def test_text_fallback_when_neither_word_is_among_alternatives():
    assert p_yes_from_completion(completion("Yes", [("The", 0.5), ("I", 0.2)]), allow_text=True) == (1.0, "text")
    with pytest.raises(UnusableAnswer, match=r"neither yes nor no among .*\['The', 'I'\].*allow_text_scores"):
        p_yes_from_completion(completion("Yes", [("The", 0.5), ("I", 0.2)]))
    c = completion("no", [])
    c["choices"][0]["logprobs"] = {"content": []}  # vLLM with logprobs but nothing generated
    assert p_yes_from_completion(c, allow_text=True) == (0.0, "text")
    with pytest.raises(MalformedResponse, match="has no logprobs"):
        p_yes_from_completion(c)


def test_answer_that_is_neither_yes_nor_no_is_unusable_not_zero():
    for allow_text in (False, True):
        with pytest.raises(UnusableAnswer, match="neither yes nor no"):
            p_yes_from_completion(completion("Maybe", [("Maybe", 0.9)]), allow_text=allow_text)
    with pytest.raises(UnusableAnswer):
        p_yes_from_completion(completion("", None), allow_text=True)


@pytest.mark.parametrize("body", [
    {"choices": []},
    {"error": "overloaded"},
    {"choices": [{"message": {"content": None}}]},
    {"choices": [{"message": {"content": "Yes"},
                  "logprobs": {"content": [{"top_logprobs": [{"token": "Yes"}]}]}}]},
    {"choices": [{"message": {"content": "Yes"},
                  "logprobs": {"content": [{"top_logprobs": [{"token": "Yes", "logprob": float("nan")}]}]}}]},
    {"choices": [{"message": {"content": "Yes"}, "logprobs": {"content": [{"top_logprobs": "Yes"}]}}]},
])
def test_malformed_responses_are_rejected(body):
    with pytest.raises(MalformedResponse):
        p_yes_from_completion(body)


@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 0.77, 1.0])
def test_server_shape_round_trip(p):
    c = yes_no_completion(p, "m", yes_tokens=(" Yes", "yes"), no_tokens=("No.",))
    assert len(c["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 5
    assert p_yes_from_completion(c)[0] == pytest.approx(p, abs=1e-12)


def test_payload_is_one_question_with_the_image_at_temperature_zero():
    body = verifier_payload("data:image/png;base64,AAAA", "Is there a dog?", top_logprobs=5)
    assert body["temperature"] == 0.0 and body["logprobs"] is True and body["top_logprobs"] == 5
    system, user = body["messages"]
    assert system["role"] == "system" and "yes or no" in system["content"]
    assert user["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                               {"type": "text", "text": "Is there a dog?"}]
