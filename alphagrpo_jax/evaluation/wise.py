"""WISE: prompts from the user's copy of the benchmark's JSON files, images as `<out>/<prompt_id>.png`, judged
through an OpenAI-compatible VLM with the official score files and aggregation.

    variant "verified": data_verified/{cultural_common_sense,spatio-temporal_reasoning,natural_science}_verified.json
                        one binary score per image; overall = 0.4 culture + 0.12 x (time, space, biology, physics,
                        chemistry)  (calculate_verified.py)
    variant "legacy":   WISE_legacy/data/{...}.json ("legacy_rewrite": the *_rewrite.json files); consistency,
                        realism, aesthetic quality 0-2; WiScore = (0.7 c + 0.2 r + 0.1 a) / 2; overall = 0.4 culture
                        + 0.167 time + 0.133 space + 0.1 (biology, physics, chemistry)  (WISE_legacy/Calculate.py)
    judge:  <out>/judge/scores.jsonl   one row per prompt_id, the official score file (run the official calculator)
Categories come from prompt_id ranges, as the official calculators assign them.
"""
from __future__ import annotations

import json
import re

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.judge import Request
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register

SOURCES = ("cultural_common_sense", "spatio-temporal_reasoning", "natural_science")
CATEGORIES = ("CULTURE", "TIME", "SPACE", "BIOLOGY", "PHYSICS", "CHEMISTRY")
# Last prompt_id of each category, and the category weights of the overall score, per variant.
BOUNDS = {"verified": (400, 520, 640, 760, 880, 1000), "legacy": (400, 567, 700, 800, 900, 1000)}
WEIGHTS = {"verified": (0.4, 0.12, 0.12, 0.12, 0.12, 0.12), "legacy": (0.4, 0.167, 0.133, 0.1, 0.1, 0.1)}
SUFFIX = {"verified": "_verified", "legacy": "", "legacy_rewrite": "_rewrite"}


def category(prompt_id: int, variant: str) -> str | None:
    for name, last in zip(CATEGORIES, BOUNDS[variant.split("_")[0]]):
        if 1 <= prompt_id <= last:
            return name
    return None


@register("wise")
class WISE(Benchmark):
    variants = ("verified", "legacy", "legacy_rewrite")
    judged = True

    def read(self, data, variant):
        files.need_folder(data, "the folder of WISE's JSON prompt files")
        items = []
        for src in SOURCES:
            path = files.need_file(paths.join(data, f"{src}{SUFFIX[variant]}.json"),
                                   f"WISE's {src}{SUFFIX[variant]}.json (variant {variant})")
            for i, r in enumerate(files.read_json_list(path, {"Prompt": str, "prompt_id": int, "Explanation": str})):
                cat = category(r["prompt_id"], variant)
                if cat is None:
                    raise UsageError(f"{path}[{i}]: prompt_id {r['prompt_id']} outside 1..1000; expected WISE's ids")
                items.append(Item(len(items), str(r["prompt_id"]), r["Prompt"], cat, {"explanation": r["Explanation"]}))
        seen = set()
        for it in items:
            if it.key in seen:
                raise UsageError(f"config.data: {data}: prompt_id {it.key} appears twice; expected unique ids")
            seen.add(it.key)
        return items

    def outputs(self, out, item, variant, model_name):
        return [paths.join(out, f"{item.key}.png")]

    def write(self, out, item, images, variant, model_name):
        files.save_png(self.outputs(out, item, variant, model_name)[0], images[0])

    def template_names(self, variant):
        return ("wise_legacy",) if variant.startswith("legacy") else ("wise_verified",)

    def judge(self, out, items, rows, variant, model_name, ask, templates):
        legacy = variant.startswith("legacy")
        template = templates["wise_legacy" if legacy else "wise_verified"]
        reqs = [Request([paths.read_bytes(row["files"][0])],
                        template.replace("{prompt}", it.prompt).replace("{explanation}", it.meta["explanation"]),
                        parse_legacy if legacy else parse_verified) for it, row in zip(items, rows)]
        scores = []
        for it, (_, values) in zip(items, ask(reqs, label="wise judge")):
            scores.append({"key": it.key, "dimension": it.dimension, "prompt_id": int(it.key), **values})
        return scores

    def aggregate(self, scores, variant):
        return aggregate(scores, variant)

    def write_scores(self, out, scores, variant, model_name):
        """The official calculators' input: <out>/judge/scores.jsonl, one row per prompt_id in id order."""
        keep = ("prompt_id", "score", "consistency", "realism", "aesthetic_quality")
        rows = sorted(({k: s[k] for k in keep if k in s} for s in scores), key=lambda r: r["prompt_id"])
        path = paths.join(out, "judge", "scores.jsonl")
        paths.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def parse_legacy(text: str) -> dict[str, float]:
    found = {k.lower().replace(" ", "_"): float(v) for k, v in
             re.findall(r"\*{0,2}(Consistency|Realism|Aesthetic Quality)\*{0,2}\s*[:：]?\s*([0-2])\b", text, re.I)}
    if set(found) != {"consistency", "realism", "aesthetic_quality"}:
        raise ValueError(f"expected Consistency, Realism and Aesthetic Quality ratings 0-2, found {sorted(found)}")
    return found


def parse_verified(text: str) -> dict[str, float]:
    m = re.search(r"\*{0,2}Score\*{0,2}\s*[:：]?\s*([01])\b", text, re.I)
    if not m:
        raise ValueError("expected 'Score: 0' or 'Score: 1'")
    return {"score": float(m.group(1))}


def wiscore(s: dict, variant: str) -> float:
    if variant.startswith("legacy"):
        return (0.7 * s["consistency"] + 0.2 * s["realism"] + 0.1 * s["aesthetic_quality"]) / 2
    return float(s["score"])


def aggregate(scores, variant: str) -> dict[str, float]:
    """Mean WiScore per category and `overall` (the variant's category weights; only when every category has
    samples, as the official calculators)."""
    per = {c: [wiscore(s, variant) for s in scores if s["dimension"] == c] for c in CATEGORIES}
    out = {c: float(np.mean(v)) for c, v in per.items() if v}
    if len(out) == len(CATEGORIES):
        out["overall"] = float(sum(w * out[c] for c, w in zip(CATEGORIES, WEIGHTS[variant.split("_")[0]])))
    return out
