"""DPG-Bench: prompts from the user's copy of the benchmark's `dpg_bench/` folder (one `prompts/<name>.txt` per
prompt; `dpg_bench.csv`, the scorer's question file, checked to cover them when present), images in the layout
its `compute_dpg_bench.py` reads: one 2x2 grid of 4 images per prompt, `<out>/<name>.png` (run the scorer with
`--resolution` = the single image size and `--pic_num 4`). Scoring is the benchmark's own VQA scorer.
"""
from __future__ import annotations

import csv
import io

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register

CSV_COLUMNS = ("item_id", "text", "proposition_id", "dependency", "category_broad", "question_natural_language")


def _natural(name: str):
    stem = name[:-len(".txt")]
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


@register("dpg")
class DPG(Benchmark):
    images_per_prompt = 4
    max_images_per_prompt = 4  # the cells of the 2x2 grid

    def read(self, data, variant):
        folder = files.need_folder(paths.join(data, "prompts"), "DPG-Bench's dpg_bench folder with prompts/*.txt")
        names = sorted((n for n in paths.listdir(folder) if n.endswith(".txt")), key=_natural)
        if not names:
            raise UsageError(f"config.data: {folder}: no .txt prompt files; expected one prompt per <name>.txt")
        items = []
        for name in names:
            text = paths.read_text(paths.join(folder, name)).strip()
            if not text:
                raise UsageError(f"{paths.join(folder, name)}: empty; expected the prompt text")
            items.append(Item(len(items), name[:-len(".txt")], text, "all"))
        self._check_csv(paths.join(data, "dpg_bench.csv"), items)
        return items

    @staticmethod
    def _check_csv(path, items):
        if not paths.exists(path):
            return
        reader = csv.DictReader(io.StringIO(paths.read_text(path)))
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UsageError(f"{path}: no column(s) {missing}; expected DPG-Bench's question file with columns "
                             f"{list(CSV_COLUMNS)}")
        have = {row["item_id"] for row in reader}
        lacking = [it.key for it in items if it.key not in have]
        if lacking:
            raise UsageError(f"{path}: no questions for prompt file {lacking[0]}.txt ({len(lacking)} prompt(s) "
                             "without); expected item_id rows for every prompts/<name>.txt")

    def outputs(self, out, item, variant, model_name):
        return [paths.join(out, f"{item.key}.png")]

    def write(self, out, item, images, variant, model_name):
        files.save_png(self.outputs(out, item, variant, model_name)[0], files.grid(images, 2))
