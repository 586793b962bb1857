"""Drawing a benchmark's images: batched through the jitted pipeline (every call has `batch_size` rows, the last
batch padded, so nothing recompiles between batches), each row's noise from (seed, prompt index, sample index)
alone, each finished prompt written in the official layout and then recorded in the manifest (a killed run
resumes after its last recorded prompt; a half-written prompt is redone, never taken as done).
With `refine.rounds` > 0 every image goes through Self-Reflective Refinement (sampling/srr.py) one at a time.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.evaluation.records import Records
from alphagrpo_jax.evaluation.registry import Benchmark, Item


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    height: int = 512
    width: int = 512
    images_per_prompt: int = 0        # 0: the benchmark's own number
    num_timesteps: int = 50
    cfg_text: float = 4.0
    cfg_img: float = 0.0              # 0: the pipeline's default (2.0 when editing)
    cfg_interval: tuple[float, float] = (0.4, 1.0)
    shift: float = 3.0
    think: bool = False
    think_tokens: int = 1024
    think_temperature: float = 0.3
    batch_size: int = 4
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    rounds: int = 0
    gate: str = "self"
    threshold: float = 0.9
    reflection: str = ""              # template with {prompt}; empty = the project's default


def seed_for(seed: int, index: int, sample: int) -> int:
    """The generation seed of sample `sample` of prompt `index`: a function of these three numbers only."""
    return int(np.random.SeedSequence([seed, index, sample]).generate_state(1)[0] & 0x7FFFFFFF)


def manifest_path(out: str, process_index: int = 0, process_count: int = 1) -> str:
    name = "manifest.jsonl" if process_count == 1 else f"manifest.process{process_index}.jsonl"
    return paths.join(out, name)


def open_manifest(out: str, process_index: int = 0, process_count: int = 1) -> Records:
    """This process's manifest, without rows whose files are gone (those prompts are drawn again)."""
    return Records(manifest_path(out, process_index, process_count),
                   keep=lambda row: all(paths.exists(f) for f in row.get("files", [])) and bool(row.get("files")))


def generate(bench: Benchmark, items: Sequence[Item], pipe, settings: GenerationSettings, out: str, variant: str,
             model_name: str, manifest: Records, score: Callable | None = None, refine: RefineSettings | None = None,
             gate: dict | None = None) -> int:
    """Draws and writes every item not yet in `manifest`; returns how many were drawn. `score(item, image)`:
    an in-process score recorded per image (the toy verifier); `gate`: {"record": item -> question set,
    "reward_fn": ...} for refinement."""
    from alphagrpo_jax.metrics import progress
    from alphagrpo_jax.sampling.text import TextSamplerConfig

    n_img = settings.images_per_prompt or bench.images_per_prompt
    todo = [it for it in items if it.key not in manifest]
    think_cfg = TextSamplerConfig(max_new_tokens=settings.think_tokens, temperature=settings.think_temperature)
    bar = progress(total=len(todo) * n_img, desc=f"{bench.name}: images", unit="img")
    buffers: dict[str, list] = {}
    started = {it.key: 0.0 for it in todo}

    def finish(it: Item, gens: list[dict]) -> None:
        images = [g["image"] for g in gens]
        bench.write(out, it, images, variant, model_name)
        row = {"key": it.key, "index": it.index, "dimension": it.dimension, "prompt": it.prompt,
               "files": bench.outputs(out, it, variant, model_name),
               "seeds": [seed_for(settings.seed, it.index, j) for j in range(n_img)],
               "think": [g["think"] for g in gens], "time_s": round(time.time() - started[it.key], 3)}
        if score is not None:
            row["score"] = [float(score(it, im)) for im in images]
        if refine is not None and refine.rounds:
            row["rounds"] = [g["rounds"] for g in gens]
            row["gate_scores"] = [g["gate_scores"] for g in gens]
            if score is not None:
                row["first_score"] = [float(score(it, g["first"])) for g in gens]
        manifest.add(row)

    rows = [(it, j) for it in todo for j in range(n_img)]
    try:
        if refine is not None and refine.rounds:
            batches = [[r] for r in rows]
        else:
            batches = _batches(rows, settings.batch_size, pipe if bench.editing else None)
        for batch in batches:
            t0 = time.time()
            for it, _ in batch:
                started[it.key] = started[it.key] or t0
            if refine is not None and refine.rounds:
                gens = [_refine_one(pipe, batch[0], settings, refine, gate, think_cfg)]
            else:
                gens = _draw(pipe, batch, settings, think_cfg)
            for (it, j), g in zip(batch, gens):
                buffers.setdefault(it.key, []).append(g)
                if len(buffers[it.key]) == n_img:
                    finish(it, buffers.pop(it.key))
            bar.update(len(batch))
    finally:
        bar.close()
    return len(todo)


def _batches(rows, size: int, pipe) -> list[list]:
    """Consecutive rows in groups of at most `size`; editing rows only share a batch when their input images
    resize to one size (`pipe` given)."""
    out, current, current_key = [], [], None
    for it, j in rows:
        key = None if pipe is None else pipe.condition_items(_source(it))[1]
        if current and (len(current) == size or key != current_key):
            out.append(current)
            current = []
        current.append((it, j))
        current_key = key
    if current:
        out.append(current)
    return out


def _source(item: Item):
    from alphagrpo_jax.evaluation.files import open_image

    return open_image(item.source)


def _draw(pipe, batch, settings: GenerationSettings, think_cfg) -> list[dict]:
    real = len(batch)
    padded = list(batch) + [batch[-1]] * (settings.batch_size - real)  # static batch shape
    images = [_source(it) for it, _ in padded] if padded[0][0].source is not None else None
    gens = pipe.generate_images(
        [it.prompt for it, _ in padded], think=settings.think, images=images, height=settings.height,
        width=settings.width, num_timesteps=settings.num_timesteps, cfg_text=settings.cfg_text,
        cfg_img=settings.cfg_img or None, cfg_interval=tuple(settings.cfg_interval), shift=settings.shift,
        think_sampler=think_cfg, row_seeds=[seed_for(settings.seed, it.index, j) for it, j in padded])
    return [{"image": g.image, "think": g.think} for g in gens[:real]]


def _refine_one(pipe, row, settings: GenerationSettings, refine: RefineSettings, gate: dict, think_cfg) -> dict:
    from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT
    from alphagrpo_jax.sampling.srr import refine as srr

    it, j = row
    rounds = srr(pipe, it.prompt, gate["record"](it), refine.rounds, gate=refine.gate, reward_fn=gate.get("reward_fn"),
                 threshold=refine.threshold, think=settings.think, height=settings.height, width=settings.width,
                 seed=seed_for(settings.seed, it.index, j), num_timesteps=settings.num_timesteps, shift=settings.shift,
                 t2i_cfg=dict(cfg_text=settings.cfg_text, cfg_interval=tuple(settings.cfg_interval)),
                 think_sampler=think_cfg, reflection=refine.reflection or REFLECTION_PROMPT)
    return {"image": rounds[-1].image, "first": rounds[0].image, "think": rounds[0].text,
            "rounds": len(rounds) - 1, "gate_scores": [float(r.score) for r in rounds]}
