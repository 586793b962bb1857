import json

import pytest

from alphagrpo_jax.reward import decompose_prompts as dp
from alphagrpo_jax.reward.records import (QUALITY_TAGS, SEMANTIC_TAGS, Question, QuestionSet, RecordError,
                                          parse_line, read_records, record_from_json, write_records)

# A record exactly as the reference's decompose.py writes it (original_index last), plus fields of our own.
REFERENCE_LINE = json.dumps({
    "prompt": "A photo of a dog and a red cat.",
    "semantic_questions": [
        {"question_type": "semantic", "question": "Is there a dog?", "is_valid": True, "tag": "Existence"},
        {"question_type": "semantic", "question": "Is the cat red?", "is_valid": True, "tag": "Attribute",
         "source": "dsg", "depends_on": [0]},
    ],
    "quality_questions": [
        {"question_type": "quality", "question": "Does the dog have correct anatomy?", "is_valid": True,
         "tag": "Anatomy"},
    ],
    "original_index": 7,
    "category": "animals",
    "split": {"name": "train", "shard": 3},
})


def test_tag_lists_match_the_spec():
    assert SEMANTIC_TAGS == ("Style", "Environment", "Viewpoint", "Existence", "Count", "Attribute", "Action",
                             "Spatial", "Text", "Negative")
    assert QUALITY_TAGS == ("Geometry", "Anatomy", "Texture", "Coherence", "Lighting", "Physics", "Legibility",
                            "Aesthetics")
    assert tuple(dp.SEMANTIC_TAG_MEANINGS) == SEMANTIC_TAGS
    assert tuple(dp.QUALITY_TAG_MEANINGS) == QUALITY_TAGS


def test_reference_record_round_trips_with_extra_fields(tmp_path):
    rec = parse_line(REFERENCE_LINE, "ref")
    assert rec.prompt == "A photo of a dog and a red cat."
    assert rec.original_index == 7
    assert [q.tag for q in rec.semantic] == ["Existence", "Attribute"]
    assert rec.semantic[1].extra == {"source": "dsg", "depends_on": [0]}
    assert rec.extra == {"category": "animals", "split": {"name": "train", "shard": 3}}
    assert rec.to_json() == json.loads(REFERENCE_LINE)  # nothing dropped, nothing added
    path = tmp_path / "r.jsonl"
    write_records(path, [rec, QuestionSet("p2", (), (Question("quality", "Sharp?", "Texture"),), 8)])
    back = read_records(path)
    assert back[0] == rec
    assert back[1].quality[0].question == "Sharp?" and back[1].semantic == ()
    assert list(tmp_path.iterdir()) == [path]  # the temp file of the atomic write is gone


def test_non_ascii_text_round_trips(tmp_path):
    rec = QuestionSet("一只红色的猫 'Café'", (Question("semantic", "有猫吗？", "Existence"),), (), 0)
    write_records(tmp_path / "u.jsonl", [rec])
    assert "一只红色的猫" in (tmp_path / "u.jsonl").read_text(encoding="utf-8")
    assert read_records(tmp_path / "u.jsonl") == [rec]


def test_bare_string_questions_and_tag_spelling():
    rec = record_from_json({"prompt": "p", "semantic_questions": ["Is there a cat?"],
                            "quality_questions": [{"question": "Sharp?", "tag": " texture "}]})
    assert rec.semantic[0] == Question("semantic", "Is there a cat?", None)
    assert rec.quality[0].tag == "Texture" and rec.quality[0].is_valid
    assert rec.original_index is None and "original_index" not in rec.to_json()


def test_unknown_tags_kept_when_lenient_rejected_when_strict():
    obj = {"prompt": "p", "semantic_questions": [{"question": "Q?", "tag": "Relation"}], "quality_questions": []}
    assert record_from_json(obj).semantic[0].tag == "Relation"
    with pytest.raises(RecordError, match=r"semantic_questions\[0\]'.tag: 'Relation' is not a semantic tag"):
        record_from_json(obj, strict_tags=True)
    # A semantic tag in the quality list is not a quality tag.
    obj = {"prompt": "p", "semantic_questions": [], "quality_questions": [{"question": "Q?", "tag": "Count"}]}
    with pytest.raises(RecordError, match="not a quality tag"):
        record_from_json(obj, strict_tags=True)


@pytest.mark.parametrize("obj, message", [
    ([], "expected a JSON object"),
    ({"semantic_questions": [], "quality_questions": []}, "field 'prompt'"),
    ({"prompt": "p", "quality_questions": []}, "field 'semantic_questions': expected a list"),
    ({"prompt": "p", "semantic_questions": [], "quality_questions": [], "original_index": -1}, "original_index"),
    ({"prompt": "p", "semantic_questions": [], "quality_questions": [], "original_index": True}, "original_index"),
    ({"prompt": "p", "semantic_questions": [{"question": ""}], "quality_questions": []},
     r"semantic_questions\[0\]'.question"),
    ({"prompt": "p", "semantic_questions": [{"question": "Q", "question_type": "quality"}],
      "quality_questions": []},
     "question_type: expected 'semantic'"),
    ({"prompt": "p", "semantic_questions": [], "quality_questions": [{"question": "Q", "is_valid": "yes"}]},
     r"quality_questions\[0\]'.is_valid"),
    ({"prompt": "p", "semantic_questions": [7], "quality_questions": []}, "got int"),
])
def test_validation_errors_name_the_field(obj, message):
    with pytest.raises(RecordError, match=message):
        record_from_json(obj, "f.jsonl:1")


def test_errors_name_file_and_line(tmp_path):
    good = json.dumps({"prompt": "p", "original_index": 0, "semantic_questions": [], "quality_questions": []})
    path = tmp_path / "bad.jsonl"
    path.write_text(good + "\n\n" + '{"prompt": "q", "semantic_questions": [\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.jsonl:3: not valid JSON"):
        read_records(path)
    path.write_text(good + "\n" + good.replace('"p"', '"q"') + "\n", encoding="utf-8")
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'original_index': 0 already used on line 1"):
        read_records(path)
    path.write_text("\n" + good.replace('"semantic_questions": []', '"semantic_questions": {}') + "\n")
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'semantic_questions'"):
        read_records(path)
