"""GEdit-Bench (image editing): items from the user's local copy of the dataset (its parquet files: task_type,
key, instruction, instruction_language, input_image, Intersection_exist), edited images in the layout the
official `test_gedit_score.py` reads, with the source image beside each:

    <out>/<model_name>/fullset/<task_type>/<en|cn>/<key>.png          the edit
    <out>/<model_name>/fullset/<task_type>/<en|cn>/<key>_SRCIMG.png   the source image
    judge: <out>/<model_name>/judge/eval_results_new/<model_name>_<task_type>_gpt_score.csv  (official columns)

Judge: semantic consistency SC and perceptual quality PQ (0-10, the minimum of each rating's sub-scores, as
VIEScore); per image overall = sqrt(SC x PQ); per task group the mean; the benchmark score = the mean over groups
(per language; also over the images whose `Intersection_exist` is true).
"""
from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.judge import Request
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register

COLUMNS = ("task_type", "key", "instruction", "instruction_language", "input_image", "Intersection_exist")
CSV_FIELDS = ("source_image", "edited_image", "instruction", "sementics_score", "quality_score",
              "intersection_exist", "instruction_language")  # the official spelling


def _parquet_files(data: str) -> list[str]:
    found = []
    stack = [data]
    while stack:
        d = stack.pop()
        for name in paths.listdir(d):
            p = paths.join(d, name)
            if paths.isdir(p):
                stack.append(p)
            elif name.endswith(".parquet"):
                found.append(p)
    return sorted(found)


@register("gedit")
class GEdit(Benchmark):
    variants = ("all", "en", "cn")
    editing = True
    judged = True

    def read(self, data, variant):
        import pyarrow.parquet as pq

        files.need_folder(data, "a local copy of the GEdit-Bench dataset (its parquet files)")
        parquets = _parquet_files(data)
        if not parquets:
            raise UsageError(f"config.data: {data}: no .parquet files; expected the GEdit-Bench dataset folder")
        items = []
        for path in parquets:
            with paths.open(path, "rb") as f:
                table = pq.read_table(f)
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise UsageError(f"{path}: no column(s) {missing}; expected GEdit-Bench's columns {list(COLUMNS)}")
            for n, r in enumerate(table.select(list(COLUMNS)).to_pylist()):
                if variant != "all" and r["instruction_language"] != variant:
                    continue
                image = r["input_image"]
                data_bytes = image.get("bytes") if isinstance(image, dict) else None
                if not data_bytes:
                    raise UsageError(f"{path}: row {n}: input_image holds no image bytes; expected the encoded image")
                items.append(Item(len(items), f"{r['task_type']}/{r['instruction_language']}/{r['key']}",
                                  r["instruction"], r["task_type"],
                                  {"language": r["instruction_language"], "name": str(r["key"]),
                                   "intersection": bool(r["Intersection_exist"])}, source=data_bytes))
        if not items:
            raise UsageError(f"config.data: {data}: no rows with instruction_language {variant!r}")
        return items

    def outputs(self, out, item, variant, model_name):
        folder = paths.join(out, model_name, "fullset", item.dimension, item.meta["language"])
        return [paths.join(folder, f"{item.meta['name']}.png"), paths.join(folder, f"{item.meta['name']}_SRCIMG.png")]

    def write(self, out, item, images, variant, model_name):
        edit, src = self.outputs(out, item, variant, model_name)
        files.save_png(src, np.asarray(files.open_image(item.source)))
        files.save_png(edit, images[0])

    def template_names(self, variant):
        return ("gedit_sc", "gedit_pq")

    def judge(self, out, items, rows, variant, model_name, ask, templates):
        reqs = []
        for it, row in zip(items, rows):
            edit, src = row["files"]
            edited = paths.read_bytes(edit)
            reqs.append(Request([paths.read_bytes(src), edited],
                                templates["gedit_sc"].replace("{instruction}", it.prompt), parse_scores))
            reqs.append(Request([edited], templates["gedit_pq"], parse_scores))
        answers = ask(reqs, label="gedit judge")
        scores = []
        for i, (it, row) in enumerate(zip(items, rows)):
            sc, pq = min(answers[2 * i][1]), min(answers[2 * i + 1][1])
            scores.append({"key": it.key, "dimension": it.dimension, "language": it.meta["language"],
                           "intersection": it.meta["intersection"], "instruction": it.prompt, "semantics": sc,
                           "quality": pq, "source_image": row["files"][1], "edited_image": row["files"][0]})
        return scores

    def write_scores(self, out, scores, variant, model_name):
        for group in sorted({s["dimension"] for s in scores}):
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(CSV_FIELDS)
            for s in scores:
                if s["dimension"] == group:
                    w.writerow([s["source_image"], s["edited_image"], s["instruction"], s["semantics"], s["quality"],
                                s["intersection"], s["language"]])
            paths.write_text(paths.join(out, model_name, "judge", "eval_results_new",
                                        f"{model_name}_{group}_gpt_score.csv"), buf.getvalue())

    def aggregate(self, scores, variant):
        return aggregate(scores)


def parse_scores(text: str) -> list[float]:
    """The `score` list of a VIEScore-style JSON answer (0-10 each)."""
    m = re.search(r"\{.*\}", text, re.DOTALL)
    try:
        value = json.loads(m.group(0)) if m else None
    except json.JSONDecodeError:
        value = None
    score = value.get("score") if isinstance(value, dict) else None
    if not isinstance(score, list) or not score or not all(isinstance(x, (int, float)) and 0 <= x <= 10
                                                            for x in score):
        raise ValueError('expected JSON {"score": [numbers 0-10, ...], ...}')
    return [float(x) for x in score]


def aggregate(scores) -> dict[str, float]:
    """Per language L: "<group>/<L>/{semantics,quality,overall}" group means and "<L>/{...}" their mean over groups;
    "<L>/intersection/..." the same over Intersection_exist images."""
    out = {}
    for lang in sorted({s["language"] for s in scores}):
        for subset, pick in (("", lambda s: True), ("intersection/", lambda s: s["intersection"])):
            rows = [s for s in scores if s["language"] == lang and pick(s)]
            groups = sorted({s["dimension"] for s in rows})
            for metric in ("semantics", "quality", "overall"):
                per = []
                for g in groups:
                    vals = [math.sqrt(s["semantics"] * s["quality"]) if metric == "overall" else s[metric]
                            for s in rows if s["dimension"] == g]
                    per.append(float(np.mean(vals)))
                    if not subset:
                        out[f"{g}/{lang}/{metric}"] = per[-1]
                if per:
                    out[f"{lang}/{subset}{metric}"] = float(np.mean(per))
    return out
