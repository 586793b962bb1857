"""GenEval: prompts from the user's `evaluation_metadata.jsonl` (or a rewritten-prompt file in the same format,
e.g. a long-prompt one), images in the layout of GenEval's `evaluation/evaluate_images.py`:

    <out>/<00000>/metadata.jsonl        the prompt's metadata line (tag, include, prompt, ...)
    <out>/<00000>/samples/<0000>.png    4 images per prompt

Correctness comes from GenEval's object-detector scorer; its `results.jsonl` is read back by `summarize`
(score = mean over the six tasks of the per-image accuracy, as its `summary_scores.py`).
"""
from __future__ import annotations

import collections
import json
import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register

TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@register("geneval")
class GenEval(Benchmark):
    images_per_prompt = 4
    max_images_per_prompt = None

    def read(self, data: str, variant: str) -> list[Item]:
        files.need_file(data, "GenEval's prompts/evaluation_metadata.jsonl (or a rewritten file in its format)")
        rows = files.read_jsonl(data, {"tag": str, "prompt": str, "include": list})
        return [Item(i, f"{i:05d}", r["prompt"], r["tag"], {"metadata": r}) for i, r in enumerate(rows)]

    def outputs(self, out, item, variant, model_name):
        folder = paths.join(out, item.key)
        return [paths.join(folder, "metadata.jsonl")] + [paths.join(folder, "samples", f"{j:04d}.png")
                                                         for j in range(self.images_per_prompt)]

    def write(self, out, item, images, variant, model_name):
        meta, *pngs = self.outputs(out, item, variant, model_name)
        for path, image in zip(pngs, images):
            files.save_png(path, image)
        paths.write_text(meta, json.dumps(item.meta["metadata"]) + "\n")  # last: its presence marks the folder


def summarize(results_path: str) -> dict[str, float]:
    """GenEval's scores from its detector's `results.jsonl` (one row per image with `tag` and `correct`):
    per-task image accuracy and `overall` = their mean over the tasks present."""
    rows = files.read_jsonl(files.need_file(results_path, "GenEval's results.jsonl"), {"tag": str})
    per = collections.defaultdict(list)
    for n, r in enumerate(rows, 1):
        if not isinstance(r.get("correct"), bool):
            raise UsageError(f"{results_path}: row {n}: field 'correct' is {r.get('correct')!r}; expected true/false")
        per[r["tag"]].append(float(r["correct"]))
    scores = {tag: float(np.mean(v)) for tag, v in sorted(per.items())}
    scores["overall"] = float(np.mean(list(scores.values())))
    return scores

