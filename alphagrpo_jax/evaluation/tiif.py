"""TIIF-Bench: prompts from the user's copy of the benchmark's `data/` folder, images in the layout its
`eval/eval_with_vlm.py` reads, yes/no judging and the aggregation of its `eval/summary_*.py`.

    data:   <data>/{testmini,test}_prompts/<type>_prompts.jsonl          type, short_description, long_description
            <data>/{testmini,test}_eval_prompts/<type>_eval_prompts.jsonl  yn_question_list, yn_answer_list (same lines)
    images: <out>/<type>/<model_name>/{short_description,long_description}/<line index>.png
    judge:  <out>/judge/<model_name>/<type>/{short,long}/<line index>.json   (the official per-image result files)

Score per (type, length) = correct answers / questions; a group's = the mean of its types'; overall = the mean
of the nine groups (per description length).
"""
from __future__ import annotations

import collections
import json
import re

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.judge import Request
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register

DESCRIPTIONS = ("short_description", "long_description")
GROUPS = {
    "Basic/Attribute": ("shape+color", "color+texture", "texture+color", "shape+texture"),
    "Basic/Relation": ("2d_spatial_relation", "3d_spatial_relation", "action+2d", "action+3d"),
    "Basic/Reasoning": ("numeracy", "negation", "differentiation", "comparison"),
    "Advanced/Attribute+Relation": ("action+color", "action+texture", "color+2d", "color+3d", "shape+2d", "shape+3d",
                                    "texture+2d", "texture+3d"),
    "Advanced/Attribute+Reasoning": ("numeracy+color", "numeracy+texture", "comparison+color", "comparison+texture",
                                     "differentiation+color", "differentiation+texture", "negation+color",
                                     "negation+texture"),
    "Advanced/Relation+Reasoning": ("numeracy+2d", "numeracy+3d", "comparison+2d", "comparison+3d",
                                    "differentiation+2d", "differentiation+3d", "negation+2d", "negation+3d"),
    "Advanced/Text": ("text",),
    "Advanced/Style": ("style",),
    "RealWorld/Complex": ("real_world",),
}


@register("tiif")
class TIIF(Benchmark):
    variants = ("testmini", "test", "testmini_short", "testmini_long", "test_short", "test_long")
    judged = True

    def read(self, data, variant):
        split, _, length = variant.partition("_")
        descs = DESCRIPTIONS if not length else (f"{length}_description",)
        prompts_dir = files.need_folder(paths.join(data, f"{split}_prompts"),
                                        f"TIIF-Bench's data/{split}_prompts folder of <type>_prompts.jsonl files")
        names = sorted(n for n in paths.listdir(prompts_dir) if n.endswith("_prompts.jsonl"))
        if not names:
            raise UsageError(f"config.data: {prompts_dir}: no <type>_prompts.jsonl files; expected TIIF-Bench's "
                             f"{split}_prompts folder")
        items = []
        for name in names:
            path = paths.join(prompts_dir, name)
            rows = files.read_jsonl(path, {"type": str, "short_description": str, "long_description": str})
            kind = name[:-len("_prompts.jsonl")]
            for n, r in enumerate(rows, 1):
                if r["type"] != kind:
                    raise UsageError(f"{path}:{n}: type {r['type']!r}; expected {kind!r} (the file's name)")
            questions = self._questions(data, split, kind, len(rows))
            for desc in descs:
                for i, r in enumerate(rows):
                    meta = {"description": desc, "line": i, "jsonl_file": f"{kind}_eval_prompts.jsonl"}
                    if questions is not None:
                        meta.update(questions=questions[i]["yn_question_list"], answers=questions[i]["yn_answer_list"])
                    items.append(Item(len(items), f"{kind}/{desc}/{i}", r[desc], kind, meta))
        return items

    @staticmethod
    def _questions(data, split, kind, n):
        path = paths.join(data, f"{split}_eval_prompts", f"{kind}_eval_prompts.jsonl")
        if not paths.exists(path):
            return None
        rows = files.read_jsonl(path, {"yn_question_list": list, "yn_answer_list": list})
        if len(rows) != n:
            raise UsageError(f"{path}: {len(rows)} question records; expected {n}, one per line of "
                             f"{kind}_prompts.jsonl")
        for k, r in enumerate(rows, 1):
            if len(r["yn_question_list"]) != len(r["yn_answer_list"]) or not r["yn_question_list"]:
                raise UsageError(f"{path}:{k}: {len(r['yn_question_list'])} questions and "
                                 f"{len(r['yn_answer_list'])} answers; expected as many answers as questions (>= 1)")
        return rows

    def outputs(self, out, item, variant, model_name):
        return [paths.join(out, item.dimension, model_name, item.meta["description"], f"{item.meta['line']}.png")]

    def write(self, out, item, images, variant, model_name):
        files.save_png(self.outputs(out, item, variant, model_name)[0], images[0])

    def template_names(self, variant):
        return ("tiif_yes_no",)

    def judge(self, out, items, rows, variant, model_name, ask, templates):
        missing = [it.key for it in items if "questions" not in it.meta]
        if missing:
            raise UsageError(f"config.data: no <type>_eval_prompts.jsonl question file for {missing[0]} (and "
                             f"{len(missing) - 1} more); expected TIIF-Bench's {variant.split('_')[0]}_eval_prompts")
        reqs = []
        for it, row in zip(items, rows):
            qs = [q.strip() for q in it.meta["questions"]]
            text = templates["tiif_yes_no"].replace("{questions}", "\n".join(qs))
            reqs.append(Request([paths.read_bytes(row["files"][0])], text,
                                lambda t, n=len(qs): parse_yes_no(t, n)))
        scores = []
        for it, (answer, preds) in zip(items, ask(reqs, label="tiif judge")):
            gt = [a.strip().lower() for a in it.meta["answers"]]
            length = it.meta["description"].split("_")[0]
            record = {"attribute": it.dimension, "desc": it.meta["description"], "jsonl_file": it.meta["jsonl_file"],
                      "line_idx": it.meta["line"], "questions": it.meta["questions"], "gt_answers": it.meta["answers"],
                      "model_pred": preds, "model_output": answer}
            paths.write_text(paths.join(out, "judge", model_name, it.dimension, length, f"{it.meta['line']}.json"),
                             json.dumps(record, ensure_ascii=False, indent=2))
            scores.append({"key": it.key, "dimension": it.dimension, "length": length,
                           "correct": sum(g == p for g, p in zip(gt, preds)), "total": len(gt)})
        return scores

    def aggregate(self, scores, variant):
        return aggregate(scores)


def parse_yes_no(text: str, n: int) -> list[str]:
    """The "yes"/"no" starting each answer line; ValueError unless there are exactly `n`."""
    preds = [m.group(1).lower() for line in text.splitlines()
             if (m := re.match(r"^\s*(yes|no)\b", line, flags=re.IGNORECASE))]
    if len(preds) != n:
        raise ValueError(f"{len(preds)} yes/no answers for {n} questions")
    return preds


def aggregate(scores) -> dict[str, float]:
    """{"<type>/<length>", "group/<group>/<length>", "overall/<length>"}: accuracies as TIIF's summary scripts."""
    correct, total = collections.Counter(), collections.Counter()
    for s in scores:
        correct[s["dimension"], s["length"]] += s["correct"]
        total[s["dimension"], s["length"]] += s["total"]
    out = {f"{kind}/{length}": correct[kind, length] / total[kind, length] for kind, length in sorted(total)}
    for length in sorted({k[1] for k in total}):
        groups = []
        for group, kinds in GROUPS.items():
            vals = [out[f"{k}/{length}"] for k in kinds if f"{k}/{length}" in out]
            if vals:
                out[f"group/{group}/{length}"] = float(np.mean(vals))
                groups.append(out[f"group/{group}/{length}"])
        out[f"overall/{length}"] = float(np.mean(groups))
    return out
