"""Each benchmark's reader on a fixture in its official format (and its one-line errors), and each writer's
layout checked by a reader that follows the official scorer's directory logic."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import benchmarks
from tests.evaluation import fixtures


def _images(n, size=16):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _write_all(bench, out, items, variant, model="m"):
    for it in items:
        bench.write(str(out), it, _images(bench.images_per_prompt), variant, model)
        for f in bench.outputs(str(out), it, variant, model):
            assert os.path.exists(f), f


def test_geneval_reader_and_layout(tmp_path):
    bench = benchmarks.get("geneval")
    items = bench.read(str(fixtures.geneval(tmp_path)), "")
    assert [it.prompt for it in items] == list(fixtures.TOY_PROMPTS)
    assert [it.dimension for it in items] == ["single_object", "counting", "single_object", "two_object"]
    out = tmp_path / "out"
    _write_all(bench, out, items, "")
    # GenEval's evaluate_images.py: every folder of <out>, sorted; metadata.jsonl is one JSON object; samples/*.png
    folders = sorted(os.listdir(out))
    assert folders == [f"{i:05d}" for i in range(len(items))]
    for folder, it in zip(folders, items):
        with open(out / folder / "metadata.jsonl") as f:
            assert json.load(f) == it.meta["metadata"]
        assert sorted(os.listdir(out / folder / "samples")) == [f"{j:04d}.png" for j in range(4)]


def test_tiif_reader_and_layout(tmp_path):
    bench = benchmarks.get("tiif")
    data = fixtures.tiif(tmp_path)
    items = bench.read(str(data), "testmini")
    assert len(items) == 2 * 3  # short and long description of 3 prompts
    short = [it for it in items if it.meta["description"] == "short_description"]
    assert [(it.dimension, it.meta["line"], it.prompt) for it in short] == [
        ("numeracy", 0, "two blue squares"), ("numeracy", 1, "a green triangle"), ("shape+color", 0, "a red circle")]
    assert short[0].meta["questions"] == ["Are there exactly two blue squares?", "Is there a green triangle?"]
    assert len(bench.read(str(data), "testmini_long")) == 3
    out = tmp_path / "out"
    _write_all(bench, out, items, "testmini", "mymodel")
    # TIIF's eval_with_vlm.py: <image_dir>/<type>/<model>/<desc>/<line index>.<ext>
    for it in items:
        assert (out / it.dimension / "mymodel" / it.meta["description"] / f"{it.meta['line']}.png").is_file()


def test_dpg_reader_and_layout(tmp_path):
    bench = benchmarks.get("dpg")
    items = bench.read(str(fixtures.dpg(tmp_path)), "")
    assert [it.key for it in items] == [f"toy{i}" for i in range(4)]
    out = tmp_path / "out"
    bench.write(str(out), items[0], _images(4, 16), "", "m")
    # compute_dpg_bench.py: <image_root>/<item_id>.png, a 2x2 grid cut at --resolution
    grid = np.asarray(Image.open(out / "toy0.png"))
    assert grid.shape == (32, 32, 3)
    np.testing.assert_array_equal(grid[16:, :16], _images(4, 16)[2])


def test_wise_reader_and_layout(tmp_path):
    bench = benchmarks.get("wise")
    items = bench.read(str(fixtures.wise(tmp_path, "verified")), "verified")
    assert [(it.key, it.dimension) for it in items] == [("1", "CULTURE"), ("401", "TIME"), ("521", "SPACE"),
                                                        ("641", "BIOLOGY")]
    legacy = bench.read(str(fixtures.wise(tmp_path, "legacy")), "legacy")
    assert [it.dimension for it in legacy] == ["CULTURE", "TIME", "SPACE", "BIOLOGY"]
    out = tmp_path / "out"
    _write_all(bench, out, items, "verified")
    assert sorted(os.listdir(out)) == sorted(f"{it.key}.png" for it in items)  # <image_dir>/<prompt_id>.png


def test_gedit_reader_and_layout(tmp_path):
    bench = benchmarks.get("gedit")
    data = fixtures.gedit(tmp_path)
    items = bench.read(str(data), "all")
    assert [(it.dimension, it.meta["language"], it.meta["name"]) for it in items] == [
        ("color_alter", "en", "k0"), ("subject-add", "en", "k1"), ("color_alter", "cn", "k2")]
    assert [it.key for it in bench.read(str(data), "en")] == ["color_alter/en/k0", "subject-add/en/k1"]
    out = tmp_path / "out"
    _write_all(bench, out, items, "all", "mymodel")
    # test_gedit_score.py: <save_path>/<model>/fullset/<group>/<lang>/<key>.png and <key>_SRCIMG.png
    folder = out / "mymodel" / "fullset" / "color_alter" / "en"
    assert sorted(os.listdir(folder)) == ["k0.png", "k0_SRCIMG.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(folder / "k0_SRCIMG.png")),
                                  fixtures.toy_image("a red circle"))


@pytest.mark.parametrize("name,make,variant,match", [
    ("geneval", lambda p: p / "missing.jsonl", "", "missing.jsonl: no such file"),
    ("geneval", lambda p: (p / "bad.jsonl").write_text('{"tag": "x", "prompt": "y"}\n') and p / "bad.jsonl", "",
     r"bad.jsonl:1: no field 'include'"),
    ("geneval", lambda p: (p / "bad.jsonl").write_text('{"tag": 1}\nnot json\n') and p / "bad.jsonl", "",
     r"bad.jsonl:1: no field|bad.jsonl:1: field"),
    ("tiif", lambda p: p, "testmini", "testmini_prompts: no such folder"),
    ("dpg", lambda p: p, "", "prompts: no such folder"),
    ("wise", lambda p: p, "verified", "cultural_common_sense_verified.json: no such file"),
    ("gedit", lambda p: p, "all", "no .parquet files"),
])
def test_bad_data_is_one_line_naming_the_file(tmp_path, name, make, variant, match):
    with pytest.raises(UsageError, match=match) as e:
        benchmarks.get(name).read(str(make(tmp_path)), variant)
    assert "\n" not in str(e.value)


def test_partial_tiif_question_file(tmp_path):
    data = fixtures.tiif(tmp_path)
    qfile = data / "testmini_eval_prompts" / "numeracy_eval_prompts.jsonl"
    qfile.write_text(qfile.read_text().splitlines()[0] + "\n")
    with pytest.raises(UsageError, match=r"numeracy_eval_prompts.jsonl: 1 question records; expected 2"):
        benchmarks.get("tiif").read(str(data), "testmini")


def test_dpg_csv_must_cover_the_prompts(tmp_path):
    folder = fixtures.dpg(tmp_path)
    rows = list(csv.reader(open(folder / "dpg_bench.csv")))
    with open(folder / "dpg_bench.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows[:-1])
    with pytest.raises(UsageError, match=r"dpg_bench.csv: no questions for prompt file toy3.txt"):
        benchmarks.get("dpg").read(str(folder), "")


def test_unknown_benchmark_and_variant():
    with pytest.raises(UsageError, match=r"unknown benchmark 'nope'; known: \["):
        benchmarks.get("nope")
    with pytest.raises(UsageError, match=r"wise has variants \['verified', 'legacy', 'legacy_rewrite'\], got 'x'"):
        benchmarks.get("wise").check_variant("x")
