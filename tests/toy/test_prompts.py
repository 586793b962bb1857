"""Prompt grammar: exact text <-> spec round trip, strict parsing, the held-out split, prompt sets."""
import dataclasses

import pytest

from alphagrpo_jax.toy import prompts


def test_round_trip_every_prompt_and_json():
    n = 0
    for category in prompts.CATEGORIES:
        for spec in prompts.enumerate_prompts(category):
            text = prompts.format_prompt(spec)
            assert prompts.parse(text) == spec
            assert prompts.PromptSpec.from_json(spec.dumps()) == spec
            n += 1
    assert n == 21 + 294 + 63 + 126 + 1680 + 105 + 840


@pytest.mark.parametrize("text, category", [
    ("a red circle", "single_object"),
    ("a red circle and a blue square", "two_objects"),
    ("two green triangles", "counting"),
    ("one green triangle", "counting"),
    ("a red circle and a blue circle", "colors"),
    ("a red circle to the left of a blue square", "position"),
    ("a cyan square below a white circle", "position"),
    ("a red circle on the left", "location"),
    ("a purple triangle in the center", "location"),
    ("a large red circle and a small blue square", "size"),
])
def test_category_is_read_from_the_text(text, category):
    assert prompts.parse(text).category == category


@pytest.mark.parametrize("text, fragment", [
    ("a orange circle", "expected a color"),
    ("a red circles", "plural iff"),
    ("two red circle", "plural iff"),
    ("a red circle next to a blue square", "expected 'and'"),
    ("a red circle and a red circle", "differ in color or shape"),
    ("a large red circle and a large blue square", "two different sizes"),
    ("a small red circle", "size prompts"),
    ("a red circle and two blue squares", "numbers only"),
    ("a red circle and a blue square please", "unexpected words"),
    ("four red circles", "expected 'a' or a number"),
    ("a  red   circle", None),  # extra spaces are fine: the words are canonical
])
def test_parse_rejects_non_canonical_text(text, fragment):
    if fragment is None:
        assert prompts.parse(text) == prompts.parse("a red circle")
        return
    with pytest.raises(prompts.PromptError, match=fragment):
        prompts.parse(text)


def test_held_out_combinations_never_in_train():
    seen_eval_reasons = set()
    for category in prompts.CATEGORIES:
        train, held = prompts.split_prompts("train", category), prompts.split_prompts("eval", category)
        assert train and held, category
        assert len(train) + len(held) == len(prompts.enumerate_prompts(category))
        for spec in train:
            assert not any((o.color, o.shape) in prompts.HELD_OUT_PAIRS for o in spec.objects)
            objs = spec.objects
            if category == "position":
                assert (objs[0].shape, spec.relation, objs[1].shape) not in prompts.HELD_OUT_RELATIONS
            if category == "location":
                assert (objs[0].shape, objs[0].location) not in prompts.HELD_OUT_LOCATIONS
            if category == "counting":
                assert (prompts.NUMBERS[objs[0].count - 1], objs[0].shape) not in prompts.HELD_OUT_COUNTS
            if category in ("two_objects", "colors"):
                assert frozenset({objs[0].color, objs[1].color}) not in prompts.HELD_OUT_COLOR_PAIRS
        for spec in held:
            seen_eval_reasons.update(r.split()[0] for r in prompts.held_out_reasons(spec))
    assert seen_eval_reasons == {"pair", "count", "colors", "relation", "location", "size"}


def test_prompt_set_sizes_determinism_and_prefix():
    small = prompts.prompt_set("train", 5, seed=3)
    large = prompts.prompt_set("train", 12, seed=3)
    assert prompts.prompt_set("train", 5, seed=3) == small
    assert prompts.prompt_set("train", 5, seed=4) != small
    assert set(small) <= set(large)
    counts = {c: sum(s.category == c for s in small) for c in prompts.CATEGORIES}
    assert counts == {c: 5 for c in prompts.CATEGORIES}
    assert len(prompts.prompt_set("eval", None)) == sum(len(prompts.split_prompts("eval", c))
                                                        for c in prompts.CATEGORIES)
    only = prompts.prompt_set("eval", {"counting": 1000})
    assert only == prompts.split_prompts("eval", "counting")
    with pytest.raises(prompts.PromptError, match="'train' or 'eval'"):
        prompts.prompt_set("test", 1)


def test_invalid_specs_are_rejected():
    good = prompts.parse("a red circle on the left")
    with pytest.raises(prompts.PromptError, match="location"):
        prompts.validate(dataclasses.replace(good, objects=(dataclasses.replace(good.objects[0], location="up"),)))
    with pytest.raises(prompts.PromptError, match="spec json"):
        prompts.PromptSpec.from_json({"objects": []})
