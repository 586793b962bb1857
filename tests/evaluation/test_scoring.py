"""The official aggregation formulas on hand-computed examples, the answer parsers, and judge round trips
through the toy OpenAI-compatible server (a real HTTP server on 127.0.0.1)."""
import csv
import json
import math
import os

import pytest

from alphagrpo_jax.evaluation import benchmarks, gedit, geneval, scoring, tiif, wise
from alphagrpo_jax.evaluation.judge import Judge
from alphagrpo_jax.evaluation.records import Records
from alphagrpo_jax.evaluation.templates import TEMPLATES
from alphagrpo_jax.toy import serve
from alphagrpo_jax.toy.decompose import decompose_text
from configs import eval_base
from tests.evaluation import fixtures


def test_tiif_aggregate_by_hand():
    scores = [dict(dimension="numeracy", length="short", correct=1, total=2),
              dict(dimension="numeracy", length="short", correct=3, total=3),   # numeracy: 4/5 = 0.8 (pooled)
              dict(dimension="negation", length="short", correct=1, total=4),   # negation: 0.25
              dict(dimension="text", length="short", correct=1, total=1)]       # text: 1.0
    out = tiif.aggregate(scores)
    assert out["numeracy/short"] == pytest.approx(0.8)
    assert out["group/Basic/Reasoning/short"] == pytest.approx((0.8 + 0.25) / 2)
    assert out["group/Advanced/Text/short"] == 1.0
    assert out["overall/short"] == pytest.approx(((0.8 + 0.25) / 2 + 1.0) / 2)  # mean over the groups present


def test_wise_aggregate_by_hand():
    cats = wise.CATEGORIES
    legacy = [dict(dimension=c, consistency=2, realism=1, aesthetic_quality=0) for c in cats]
    legacy[0] = dict(dimension="CULTURE", consistency=1, realism=2, aesthetic_quality=2)
    out = wise.aggregate(legacy, "legacy")
    culture, rest = (0.7 * 1 + 0.2 * 2 + 0.1 * 2) / 2, (0.7 * 2 + 0.2 * 1) / 2
    assert out["CULTURE"] == pytest.approx(culture) and out["TIME"] == pytest.approx(rest)
    assert out["overall"] == pytest.approx(0.4 * culture + (0.167 + 0.133 + 0.1 * 3) * rest)
    verified = [dict(dimension=c, score=float(i % 2)) for i, c in enumerate(cats)]  # CULTURE 0, TIME 1, ...
    out = wise.aggregate(verified, "verified")
    assert out["overall"] == pytest.approx(0.12 * 3)  # TIME, BIOLOGY, CHEMISTRY are 1
    assert "overall" not in wise.aggregate(verified[:5], "verified")  # a category without samples: no overall
    assert wise.category(567, "legacy") == "TIME" and wise.category(567, "verified") == "SPACE"


def test_gedit_aggregate_by_hand():
    rows = [dict(dimension="color_alter", language="en", intersection=True, semantics=9, quality=4),
            dict(dimension="color_alter", language="en", intersection=False, semantics=1, quality=1),
            dict(dimension="subject-add", language="en", intersection=True, semantics=4, quality=4)]
    out = gedit.aggregate(rows)
    assert out["color_alter/en/overall"] == pytest.approx((6 + 1) / 2)   # sqrt(9*4), sqrt(1*1)
    assert out["en/overall"] == pytest.approx(((6 + 1) / 2 + 4) / 2)    # mean over groups
    assert out["en/semantics"] == pytest.approx((5 + 4) / 2)
    assert out["en/intersection/overall"] == pytest.approx((6 + 4) / 2)


def test_geneval_summary_of_detector_results(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [("single_object", True), ("single_object", False), ("counting", True), ("counting", True)]
    path.write_text("".join(json.dumps({"filename": f"x/{i}.png", "tag": t, "correct": c}) + "\n"
                            for i, (t, c) in enumerate(rows)))
    assert geneval.summarize(str(path)) == {"counting": 1.0, "single_object": 0.5, "overall": 0.75}


def test_parsers():
    assert tiif.parse_yes_no("Yes, a cat.\nno - none\n\nYES", 3) == ["yes", "no", "yes"]
    with pytest.raises(ValueError, match="2 yes/no answers for 3 questions"):
        tiif.parse_yes_no("yes\nno", 3)
    assert wise.parse_legacy("**Consistency**: 2\nRealism: 1\nAesthetic Quality: 0") == \
        {"consistency": 2.0, "realism": 1.0, "aesthetic_quality": 0.0}
    with pytest.raises(ValueError):
        wise.parse_legacy("Consistency: 2")
    assert wise.parse_verified("reasoning...\nScore: 1") == {"score": 1.0}
    assert gedit.parse_scores('sure: {"score": [7, 3], "reasoning": "x"}') == [7.0, 3.0]
    with pytest.raises(ValueError):
        gedit.parse_scores('{"score": [11]}')


def _manifest_rows(bench, items, out, variant, make_image):
    rows = {}
    for it in items:
        bench.write(str(out), it, [make_image(it)], variant, "m")
        rows[it.key] = {"key": it.key, "files": bench.outputs(str(out), it, variant, "m")}
    return rows


@pytest.fixture(scope="module")
def toy_judge():
    with serve.make_server(model="toy-judge") as server:
        yield Judge(server.url, "toy-judge", api_key_env="", concurrency=4, max_retries=1, timeout_s=30)


def test_tiif_judge_round_trip(tmp_path, toy_judge):
    bench = benchmarks.get("tiif")
    items = bench.read(str(fixtures.tiif(tmp_path)), "testmini_short")
    rows = _manifest_rows(bench, items, tmp_path / "out", "testmini_short",
                          lambda it: fixtures.toy_image(it.prompt))  # each image shows its prompt exactly
    scores = scoring.judge_pending(bench, items, rows, str(tmp_path / "out"), "testmini_short", "m", toy_judge,
                                   TEMPLATES)
    assert [(s["correct"], s["total"]) for s in scores] == [(2, 2), (1, 1), (1, 1)]
    official = json.loads((tmp_path / "out" / "judge" / "m" / "numeracy" / "short" / "0.json").read_text())
    assert official["model_pred"] == ["yes", "no"] and official["gt_answers"] == ["yes", "no"]
    assert bench.aggregate(scores, "testmini_short")["overall/short"] == 1.0
    # resumable: a second pass asks nothing and returns the same rows
    assert scoring.judge_pending(bench, items, rows, str(tmp_path / "out"), "testmini_short", "m", toy_judge,
                                 TEMPLATES) == scores


@pytest.mark.parametrize("variant", ["verified", "legacy"])
def test_wise_judge_round_trip(tmp_path, toy_judge, variant):
    bench = benchmarks.get("wise")
    items = bench.read(str(fixtures.wise(tmp_path, variant)), variant)
    wrong = items[1].key  # this one shows a different prompt's image
    rows = _manifest_rows(bench, items, tmp_path / "out", variant,
                          lambda it: fixtures.toy_image("a green triangle" if it.key == wrong else it.prompt))
    scores = scoring.judge_pending(bench, items, rows, str(tmp_path / "out"), variant, "m", toy_judge, TEMPLATES)
    official = [json.loads(x) for x in (tmp_path / "out" / "judge" / "scores.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in official] == sorted(int(it.key) for it in items)
    good = [s for s in scores if s["key"] != wrong]
    if variant == "verified":
        assert [s["score"] for s in scores if s["key"] == wrong] == [0.0] and all(s["score"] == 1 for s in good)
    else:
        assert all(s["consistency"] == 2 and s["realism"] == 2 for s in good)
        assert [s["consistency"] for s in scores if s["key"] == wrong] != [2.0]


def test_gedit_judge_round_trip(tmp_path, toy_judge):
    bench = benchmarks.get("gedit")
    items = bench.read(str(fixtures.gedit(tmp_path)), "en")
    rows = _manifest_rows(bench, items, tmp_path / "out", "en", lambda it: fixtures.toy_image(it.prompt))
    scores = scoring.judge_pending(bench, items, rows, str(tmp_path / "out"), "en", "m", toy_judge, TEMPLATES)
    assert [(s["semantics"], s["quality"]) for s in scores] == [(10.0, 10.0), (10.0, 10.0)]
    with open(tmp_path / "out" / "m" / "judge" / "eval_results_new" / "m_color_alter_gpt_score.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["sementics_score"] == "10.0" and row["instruction_language"] == "en"
    assert bench.aggregate(scores, "en")["en/overall"] == pytest.approx(math.sqrt(100))


def test_records_drop_torn_line_and_missing_files(tmp_path):
    path = tmp_path / "manifest.jsonl"
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    path.write_text(json.dumps({"key": "a", "files": [str(image)]}) + "\n" +
                    json.dumps({"key": "b", "files": [str(tmp_path / "gone.png")]}) + "\n" + '{"key": "c", "fi')
    rec = Records(str(path), keep=lambda r: all(os.path.exists(f) for f in r["files"]))
    assert list(rec.rows) == ["a"]
    assert path.read_text().count("\n") == 1
    rec.add({"key": "b", "files": []})
    with pytest.raises(ValueError, match="recorded twice"):
        rec.add({"key": "b"})
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["a", "b"]


def test_dvreward_score_for_any_benchmark(tmp_path):
    """DVReward through an endpoint (the toy server) as the score of a GenEval run: the same as the toy
    verifier in process; question sets from config.records, checked to cover every prompt."""
    from alphagrpo_jax import evaluate
    from alphagrpo_jax.errors import UsageError
    from alphagrpo_jax.reward.records import write_records
    from alphagrpo_jax.toy.reward import score_image

    bench = benchmarks.get("geneval")
    items = bench.read(str(fixtures.geneval(tmp_path)), "")
    records = tmp_path / "questions.jsonl"
    write_records(str(records), [decompose_text(it.prompt) for it in items[:-1]])
    c = eval_base.get_config("geneval")
    with serve.make_server(model="toy-verifier") as server:
        c.dvreward.update(dict(endpoint=server.url, model="toy-verifier", api_key_env="", image_format="png"))
        c.records = str(records)
        with pytest.raises(UsageError, match=r"no question set for prompt 'a yellow circle and a red square'"):
            evaluate.scorers(c, bench, items)
        score, gate, closers = evaluate.scorers(c, bench, items[:-1])
        try:
            for it in items[:-1]:
                image = fixtures.toy_image(it.prompt, seed=3)
                want = score_image(decompose_text(it.prompt), image).overall
                assert score(it, image) == pytest.approx(want, abs=1e-3)
        finally:
            for fn in closers:
                fn.close()
    assert gate is None


def test_official_openai_client_gets_the_same_judge_answer(tmp_path, toy_judge):
    """The judge protocol is OpenAI's: the official `openai` client sends our judge request to the toy server
    and reads the answer our Judge reads."""
    import openai

    from alphagrpo_jax.evaluation.judge import Request

    image = fixtures.png(fixtures.toy_image("two blue squares"))
    questions = "Are there exactly two blue squares?\nIs there a red circle?"
    text = TEMPLATES["tiif_yes_no"].replace("{questions}", questions)
    req = Request([image], text, lambda t: tiif.parse_yes_no(t, 2))
    ours = toy_judge.ask([req])[0]
    client = openai.OpenAI(base_url=toy_judge.settings.endpoints[0], api_key="unused")
    done = client.chat.completions.create(model="toy-judge", **toy_judge.payload(req))
    assert done.choices[0].message.content == ours[0]
    assert tiif.parse_yes_no(done.choices[0].message.content, 2) == ours[1] == ["yes", "no"]
