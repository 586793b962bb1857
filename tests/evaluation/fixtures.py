"""Small prompt sets written in each benchmark's official file format (our own text; no third-party data)."""
from __future__ import annotations

import io
import json
import pathlib

import numpy as np
from PIL import Image

from alphagrpo_jax.toy import prompts as toy_prompts, world

TOY_PROMPTS = ("a red circle", "two blue squares", "a green triangle", "a yellow circle and a red square")


def toy_image(prompt: str, seed: int = 0) -> np.ndarray:
    """A clean toy-world render that satisfies `prompt`."""
    return world.render(toy_prompts.sample_scene(toy_prompts.parse(prompt), seed))


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def geneval(root: pathlib.Path, prompts=TOY_PROMPTS) -> pathlib.Path:
    path = root / "evaluation_metadata.jsonl"
    tags = ("single_object", "counting", "single_object", "two_object")
    path.write_text("".join(json.dumps({"tag": t, "include": [{"class": p.split()[-1], "count": 1}], "prompt": p})
                            + "\n" for t, p in zip(tags, prompts)))
    return path


def tiif(root: pathlib.Path, split: str = "testmini") -> pathlib.Path:
    data = root / "data"
    (data / f"{split}_prompts").mkdir(parents=True)
    (data / f"{split}_eval_prompts").mkdir(parents=True)
    sets = {"shape+color": [("a red circle", "a single round red circle on black", ["Is there a red circle?"])],
            "numeracy": [("two blue squares", "exactly two blue squares drawn on black",
                          ["Are there exactly two blue squares?", "Is there a green triangle?"]),
                         ("a green triangle", "one green triangle alone", ["Is there a green triangle?"])]}
    for kind, rows in sets.items():
        (data / f"{split}_prompts" / f"{kind}_prompts.jsonl").write_text("".join(
            json.dumps({"type": kind, "short_description": s, "long_description": lg}) + "\n" for s, lg, _ in rows))
        (data / f"{split}_eval_prompts" / f"{kind}_eval_prompts.jsonl").write_text("".join(
            json.dumps({"type": kind, "yn_question_list": qs,
                        "yn_answer_list": ["no" if "green" in q and "two" in s else "yes" for q in qs]}) + "\n"
            for s, _, qs in rows))
    return data


def dpg(root: pathlib.Path, prompts=TOY_PROMPTS) -> pathlib.Path:
    folder = root / "dpg_bench"
    (folder / "prompts").mkdir(parents=True)
    names = [f"toy{i}" for i in range(len(prompts))]
    for name, p in zip(names, prompts):
        (folder / "prompts" / f"{name}.txt").write_text(p)
    lines = ["item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,"
             "question_natural_language"]
    lines += [f'{n},"{p}",k,1,0,entity,whole,entity - whole ({p.split()[-1]}),Is there a {p.split()[-1]}?'
              for n, p in zip(names, prompts)]
    (folder / "dpg_bench.csv").write_text("\n".join(lines) + "\n")
    return folder


WISE_FILES = ("cultural_common_sense", "spatio-temporal_reasoning", "natural_science")


def wise(root: pathlib.Path, variant: str = "verified", prompts=TOY_PROMPTS) -> pathlib.Path:
    """One or two prompts per file, with prompt_ids in the variant's category ranges."""
    folder = root / f"wise_{variant}"
    folder.mkdir()
    suffix = {"verified": "_verified", "legacy": ""}[variant]
    ids = {"verified": ((1,), (401, 521), (641,)), "legacy": ((1,), (401, 568), (701,))}[variant]
    k = 0
    for name, file_ids in zip(WISE_FILES, ids):
        rows = []
        for pid in file_ids:
            rows.append({"Prompt": prompts[k % len(prompts)], "Explanation": f"shows {prompts[k % len(prompts)]}",
                         "Category": name, "Subcategory": "toy", "prompt_id": pid})
            k += 1
        (folder / f"{name}{suffix}.json").write_text(json.dumps(rows, indent=2))
    return folder


def gedit(root: pathlib.Path) -> pathlib.Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / "GEdit-Bench" / "data"
    folder.mkdir(parents=True)
    rows = [("color_alter", "k0", "a blue circle", "en", True), ("subject-add", "k1", "two red squares", "en", False),
            ("color_alter", "k2", "a green triangle", "cn", True)]
    src = png(toy_image("a red circle"))
    table = pa.table({
        "task_type": [r[0] for r in rows], "key": [r[1] for r in rows], "instruction": [r[2] for r in rows],
        "instruction_language": [r[3] for r in rows],
        "input_image": [{"bytes": src, "path": None} for _ in rows],
        "input_image_raw": [{"bytes": src, "path": None} for _ in rows],
        "Intersection_exist": [r[4] for r in rows]})
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    return root / "GEdit-Bench"
