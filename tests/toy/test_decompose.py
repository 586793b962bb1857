"""Decomposer: valid reward records, question text <-> Query round trip, exact scene answers."""
import numpy as np
import pytest

from alphagrpo_jax.reward.records import QUALITY_TAGS, SEMANTIC_TAGS, record_from_json
from alphagrpo_jax.toy import decompose as D
from alphagrpo_jax.toy import prompts, world


def test_records_are_valid_strict_and_round_trip():
    for category in prompts.CATEGORIES:
        for i, spec in enumerate(prompts.enumerate_prompts(category)[::11]):
            rec = D.decompose(spec, index=i)
            back = record_from_json(rec.to_json(), strict_tags=True)
            assert back == rec
            assert rec.prompt == prompts.format_prompt(spec) and rec.original_index == i
            assert rec.extra["category"] == category
            assert prompts.PromptSpec.from_json(rec.extra["spec"]) == spec
            assert all(q.tag in SEMANTIC_TAGS for q in rec.semantic)
            assert all(q.tag in QUALITY_TAGS for q in rec.quality)
            texts = [q.question for q in rec.questions]
            assert len(texts) == len(set(texts))


def test_question_texts_parse_back_to_their_queries():
    seen = set()
    for category in prompts.CATEGORIES:
        for spec in prompts.enumerate_prompts(category):
            for q in D.semantic_queries(spec):
                text = D.question_text(q)
                assert D.parse_question(text) == q
                seen.add(q.kind)
    assert seen == set(D.QUERY_KINDS) - {"quality"}
    for name, (text, _) in D.QUALITY.items():
        assert D.parse_question(text) == D.Query("quality", value=name)
    assert D.parse_question("  is THERE a red   circle? ") == D.Query("exists", "circle", "red")
    assert D.parse_question("Are there exactly four squares?") == D.Query("count", "square", None, 4)


def test_example_record():
    rec = D.decompose(prompts.parse("a red circle to the left of a blue square"))
    assert [(q.question, q.tag) for q in rec.semantic] == [
        ("Is there a circle?", "Existence"), ("Is there a square?", "Existence"),
        ("Is there a red circle?", "Attribute"), ("Is there a blue square?", "Attribute"),
        ("Is the red circle to the left of the blue square?", "Spatial"),
        ("Are there exactly two shapes in the image?", "Count")]
    assert [q.tag for q in rec.quality] == ["Geometry", "Geometry", "Texture", "Texture", "Coherence"]


@pytest.mark.parametrize("text", ["Is there a dog?", "Is the red circle left of the blue square?",
                                  "Are there exactly one red circles?", ""])
def test_unknown_questions_raise(text):
    with pytest.raises(D.UnknownQuestion, match="unknown question"):
        D.parse_question(text)


def test_scene_answers():
    o = world.Obj
    scene = world.Scene((o("red", "circle", "small", (5.5, 16.5)), o("red", "circle", "large", (24.5, 8.5)),
                         o("blue", "square", "small", (24.5, 25.5))))
    truth = {
        "Is there a circle?": True, "Is there a triangle?": False, "Is there a blue circle?": False,
        "Are there exactly two red circles?": True, "Are there exactly two circles?": True,
        "Is there exactly one square?": True, "Are there exactly three shapes in the image?": True,
        "Is the red circle large?": True, "Is the red circle small?": True, "Is the blue square large?": False,
        "Is the red circle on the left side of the image?": True,
        "Is the blue square at the top of the image?": False,
        "Is the blue square at the bottom of the image?": True,
        "Is the red circle to the left of the blue square?": True,
        "Is the blue square above the red circle?": False,  # y 25.5 is below both red circles
        "Is the red circle below the blue square?": False,
        "Is the red circle to the left of the red circle?": True,  # two distinct red circles
        "Is the red circle to the right of the blue square?": False,
        "Is the background clean?": True,
    }
    for text, want in truth.items():
        assert D.scene_answer(text, scene) is want, text
    empty = world.Scene(())
    assert not D.scene_answer("Is the red circle large?", empty)
    assert D.scene_answer("Is the image free of stray blobs?", empty)
    np.testing.assert_equal(world.relation_margin((0.0, 0.0), (3.0, 0.0), "left_of"), 1.0)
