import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alphagrpo_jax.reward import decompose, decompose_prompts as dp
from alphagrpo_jax.reward.client import ClientSettings
from alphagrpo_jax.reward.llm_json import JSONReplyError, extract_json
from alphagrpo_jax.reward.records import Question, QuestionSet, RecordError, read_records, write_records
from alphagrpo_jax.reward.scripted import decomposer_chat, records_decomposer


@pytest.mark.parametrize("reply, value", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('Here you go:\n{"questions": ["Is it red?"]}\nHope this helps!', {"questions": ["Is it red?"]}),
    ('{"a": [1, 2,], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}),
    ('{"is_valid": True, "x": None, "s": "True, None,]"}', {"is_valid": True, "x": None, "s": "True, None,]"}),
    ('[{"question": "q \\"quoted\\", ok", "tag": "Texture"},]',
     [{"question": 'q "quoted", ok', "tag": "Texture"}]),
])
def test_extract_json_repairs(reply, value):
    assert extract_json(reply) == value


@pytest.mark.parametrize("reply, message", [("", "empty"), ("no json here", "no JSON object"),
                                            ('{"a": 1', "not valid JSON"), ("{'a': 1}", "not valid JSON")])
def test_extract_json_errors(reply, message):
    with pytest.raises(JSONReplyError, match=message):
        extract_json(reply)


def test_reply_checks():
    assert dp.check_questions({"questions": ["Is there a cat?", " is there a cat? ", "Is it red?"]}) == \
        ["Is there a cat?", "Is it red?"]
    assert dp.check_validation({"is_valid": "False"}) is False
    assert dp.check_tag({"tag": "spatial"}) == "Spatial"
    assert dp.check_quality({"quality_questions": [{"question": "Sharp?", "aspect": "texture"}]}) == \
        [("Sharp?", "Texture")]
    for check, reply, message in [(dp.check_questions, {"questions": []}, "non-empty list"),
                                  (dp.check_validation, {"valid": True}, "'is_valid'"),
                                  (dp.check_tag, {"tag": "Relation"}, "one of Style, Environment"),
                                  (dp.check_quality, {"quality_questions": [{"question": "Q", "tag": "Count"}]},
                                   r"quality_questions\[0\].tag must be one of Geometry")]:
        with pytest.raises(dp.SchemaError, match=message):
            check(reply)


def make_records(n, invalid_at=()):
    out = []
    for i in range(n):
        prompt = f"prompt {i}: {i % 4 + 1} red cats on a blue sofa"
        sem = (Question("semantic", f"Are there cats in {i}?", "Existence"),
               Question("semantic", f"Are there exactly {i % 4 + 1} cats in {i}?", "Count",
                        is_valid=i not in invalid_at),
               Question("semantic", f"Are the cats on the sofa in {i}?", "Spatial"))
        qual = (Question("quality", f"Do the cats in {i} have natural anatomy?", "Anatomy"),
                Question("quality", f"Is the sofa fabric in {i} realistic?", "Texture"))
        out.append(QuestionSet(prompt, sem, qual, original_index=i))
    return out


def write_prompts(path, records):
    path.write_text("\n\n".join(r.prompt for r in records) + "\n", encoding="utf-8")  # blank lines are skipped


def run_in_process(server, prompts, out, concurrency=4, **settings):
    items = decompose.load_prompts(str(prompts))
    client = ClientSettings(endpoints=(server.url,), model=server.model, concurrency_per_endpoint=concurrency,
                            timeout_s=5.0, backoff_s=0.005, backoff_max_s=0.02)
    return asyncio.run(decompose.run(items, str(out), client, decompose.DecomposeSettings(**settings),
                                     progress=False))


def cli_args(server, prompts, out, concurrency):
    return ["--prompts", str(prompts), "--out", str(out), "--endpoint", server.url, "--model", server.model,
            "--concurrency", str(concurrency), "--no-progress"]


def test_pipeline_reproduces_the_scripted_decomposition(server, tmp_path):
    records = make_records(6)
    server.chat = decomposer_chat(records_decomposer(records))
    write_prompts(tmp_path / "p.txt", records)
    summary = run_in_process(server, tmp_path / "p.txt", tmp_path / "out.jsonl")
    assert (summary.written, summary.already_done, summary.failures) == (6, 0, [])
    assert read_records(tmp_path / "out.jsonl", strict_tags=True) == records
    # 1 question list + 3 validations + 3 tags + 1 quality list per prompt, nothing more
    assert sum(server.received.values()) == 6 * 8
    again = run_in_process(server, tmp_path / "p.txt", tmp_path / "out.jsonl")
    assert (again.written, again.already_done) == (0, 6) and sum(server.received.values()) == 6 * 8


def test_malformed_replies_are_repaired_or_re_asked(server, tmp_path):
    records = make_records(3)
    scripted = decomposer_chat(records_decomposer(records))
    calls = collections.Counter()

    def sloppy(messages):
        stage, fields = dp.parse_user_message(messages[1]["content"])
        key = (stage, fields["prompt"][:8], fields.get("question"))
        calls[key] += 1
        good = scripted(messages)
        if fields["prompt"].startswith("prompt 1") and calls[key] == 1:
            return {dp.QUESTIONS: "Sure! {'questions': 'oops'}",  # unparseable: re-asked
                    dp.VALIDATE: "```json\n" + good.replace("}", ",}") + "\n```",  # repaired without re-asking
                    dp.TAG: '{"reason": "", "tag": "Relation"}',  # not a category: re-asked
                    dp.QUALITY: '{"quality_questions": [{"question": "Sharp?"}]}'}[stage]  # no tag: re-asked
        return good

    server.chat = sloppy
    write_prompts(tmp_path / "p.txt", records)
    summary = run_in_process(server, tmp_path / "p.txt", tmp_path / "out.jsonl")
    assert summary.failures == []
    assert read_records(tmp_path / "out.jsonl") == records
    assert calls[(dp.QUESTIONS, "prompt 1", None)] == 2 and calls[(dp.QUALITY, "prompt 1", None)] == 2
    assert calls[(dp.VALIDATE, "prompt 1", records[1].semantic[0].question)] == 1
    assert calls[(dp.TAG, "prompt 1", records[1].semantic[0].question)] == 2


def test_failures_are_reported_and_retried_by_the_next_run(server, tmp_path, capsys):
    records = make_records(5, invalid_at=(2,))
    scripted = decomposer_chat(records_decomposer(records))
    questions_asked = collections.Counter()

    def broken_for_prompt_4(messages):
        stage, fields = dp.parse_user_message(messages[1]["content"])
        questions_asked[fields["prompt"][:8]] += stage == dp.QUESTIONS
        return "I cannot answer that." if fields["prompt"].startswith("prompt 4") else scripted(messages)

    server.chat = broken_for_prompt_4
    write_prompts(tmp_path / "p.txt", records)
    code = decompose.main(cli_args(server, tmp_path / "p.txt", tmp_path / "out.jsonl", 4))
    err = capsys.readouterr().err
    assert code == 1
    assert "3 written now, 0 already done, 2 failed" in err
    assert "FAILED 2" in err and "still judged invalid after 3 attempts" in err
    assert "FAILED 4" in err and "no usable reply after 3 tries" in err
    assert questions_asked["prompt 2"] == 3 and questions_asked["prompt 4"] == 3  # 3 attempts; 1 ask + 2 re-asks
    assert [r.original_index for r in read_records(tmp_path / "out.jsonl")] == [0, 1, 3]

    fixed = make_records(5)
    server.chat = decomposer_chat(records_decomposer(fixed))
    assert decompose.main(cli_args(server, tmp_path / "p.txt", tmp_path / "out.jsonl", 4)) == 0
    assert read_records(tmp_path / "out.jsonl") == fixed


def test_resume_after_kill_equals_an_uninterrupted_run(server, tmp_path):
    records = make_records(40)
    server.chat = decomposer_chat(records_decomposer(records))
    server.latency_s = 0.03
    prompts, out = tmp_path / "p.txt", tmp_path / "killed.jsonl"
    write_prompts(prompts, records)
    cmd = [sys.executable, "-m", "alphagrpo_jax.reward.decompose", *cli_args(server, prompts, out, 2)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 4):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    written = out.read_bytes()
    assert 4 <= written.count(b"\n") < 40, "the run should have been killed part-way"
    with open(out, "ab") as f:  # what a kill in the middle of a write() would leave behind
        f.write(b'{"prompt": "prompt 39: 4 red cats on a bl')

    server.latency_s = 0.0
    assert decompose.main(cli_args(server, prompts, out, 3)) == 0
    assert decompose.main(cli_args(server, prompts, tmp_path / "straight.jsonl", 3)) == 0
    assert out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes()
    assert read_records(out) == records  # all 40, once each, in index order
    assert out.read_bytes().startswith(written.split(b"\n")[0])  # finished lines were kept, not redone


def test_jsonl_prompts_keep_their_index_and_fields(server, tmp_path):
    records = make_records(2)
    server.chat = decomposer_chat(records_decomposer(records))
    lines = [{"prompt": records[0].prompt, "original_index": 10, "source": "geneval"},
             {"prompt": records[1].prompt, "original_index": 3, "source": "dpg", "level": 2}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    run_in_process(server, tmp_path / "p.jsonl", tmp_path / "out.jsonl")
    got = read_records(tmp_path / "out.jsonl")
    assert [(r.original_index, dict(r.extra)) for r in got] == [(3, {"source": "dpg", "level": 2}),
                                                               (10, {"source": "geneval"})]


def test_bad_inputs_and_foreign_outputs(server, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:2: field 'prompt'"):
        decompose.load_prompts(str(tmp_path / "p.jsonl"))
    records = make_records(2)
    write_prompts(tmp_path / "p.txt", records)
    write_records(tmp_path / "other.jsonl", [QuestionSet("a different prompt", (), (), original_index=0)])
    with pytest.raises(RecordError, match=r"other\.jsonl:1: .*does not match the prompts file"):
        run_in_process(server, tmp_path / "p.txt", tmp_path / "other.jsonl")


def test_two_runs_cannot_write_the_same_file(server, tmp_path):
    write_prompts(tmp_path / "p.txt", make_records(1))
    holder = decompose._Appender(str(tmp_path / "out.jsonl"))
    try:
        with pytest.raises(RuntimeError, match="another decompose run is writing"):
            run_in_process(server, tmp_path / "p.txt", tmp_path / "out.jsonl")
    finally:
        holder.close()


def test_prompts_and_output_on_gs(server, gcs, tmp_path):
    """Prompts read from and records written to a real local GCS server (tests/gcs_server.py): the same bytes as
    a local run; a second run finds everything done; a partial output object is completed."""
    from alphagrpo_jax import paths

    records = make_records(5)
    server.chat = decomposer_chat(records_decomposer(records))
    root = gcs.new_bucket()
    write_prompts(tmp_path / "p.txt", records)
    paths.copy(str(tmp_path / "p.txt"), root + "/p.txt")
    assert decompose.main(cli_args(server, root + "/p.txt", root + "/out.jsonl", 3)) == 0
    assert decompose.main(cli_args(server, tmp_path / "p.txt", tmp_path / "out.jsonl", 3)) == 0
    assert paths.read_bytes(root + "/out.jsonl") == (tmp_path / "out.jsonl").read_bytes()
    again = run_in_process(server, tmp_path / "p.txt", root + "/out.jsonl")
    assert (again.written, again.already_done) == (0, 5)
    paths.write_text(root + "/part.jsonl", "".join(r.to_line() for r in records[:2]))
    part = run_in_process(server, tmp_path / "p.txt", root + "/part.jsonl")
    assert (part.written, part.already_done) == (3, 2)
    assert paths.read_bytes(root + "/part.jsonl") == (tmp_path / "out.jsonl").read_bytes()
