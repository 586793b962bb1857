"""The toy benchmark (the evaluation harness's embedded default) and the toy judge.

`toy`: the toy world's held-out prompts (toy/prompts.py `prompt_set`, 16 per category; variant "train" for
training prompts), drawn at 32 px and scored by the exact toy verifier (DVReward of the prompt's exact question
set), per category. Images: `<out>/<category>/<index:04d>.png`. Importing this module registers it.

`judge_answer`: answers the harness's judge templates (TIIF yes/no lists, WISE ratings, GEdit SC/PQ) for toy
prompts from the toy verifier, deterministically; `toy/serve.py` puts it behind the OpenAI-compatible server.
"""
from __future__ import annotations

import json
import re

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.evaluation import files
from alphagrpo_jax.evaluation.registry import Benchmark, Item, register
from alphagrpo_jax.toy import prompts as toy_prompts, verifier
from alphagrpo_jax.toy.decompose import decompose_text

PER_CATEGORY = 16  # as configs/toy_sft.py's eval


def record(prompt: str):
    return decompose_text(prompt)


@register("toy")
class Toy(Benchmark):
    variants = ("eval", "train")
    transform = "toy"
    needs_data = False

    def read(self, data, variant):
        if data:  # a prompt file of the toy world (python -m alphagrpo_jax.toy.data): DVReward records
            from alphagrpo_jax.reward.records import RecordError, read_records

            files.need_file(data, "a toy prompt file (JSONL DVReward records, toy/data.py)")
            try:
                recs = read_records(data)
            except RecordError as e:
                raise UsageError(f"config.data: {e}") from None
            specs = []
            for n, rec in enumerate(recs, 1):
                try:
                    specs.append(toy_prompts.parse(rec.prompt))
                except toy_prompts.PromptError as e:
                    raise UsageError(f"{data}:{n}: prompt {rec.prompt!r} is not a toy prompt ({e})") from None
        else:
            specs = toy_prompts.prompt_set(variant, PER_CATEGORY)
        return [Item(i, f"{s.category}/{i:04d}", toy_prompts.format_prompt(s), s.category) for i, s in enumerate(specs)]

    def outputs(self, out, item, variant, model_name):
        return [paths.join(out, item.dimension, f"{item.index:04d}.png")]

    def write(self, out, item, images, variant, model_name):
        files.save_png(self.outputs(out, item, variant, model_name)[0], images[0])

    @staticmethod
    def score(item: Item, image: np.ndarray) -> float:
        """DVReward of the image by the exact toy verifier."""
        from alphagrpo_jax.toy.reward import score_image

        return score_image(record(item.prompt), image).overall

    @staticmethod
    def record(item: Item):
        return record(item.prompt)

    @staticmethod
    def gate_weights() -> dict[str, float]:
        """Reward weights of the dvreward/oracle refinement gates: the exact toy verifier in process."""
        import alphagrpo_jax.toy.reward  # noqa: F401  (registers toy_dvreward)

        return {"dvreward": 0.0, "think_format": 0.0, "toy_dvreward": 1.0}


def _field(text: str, name: str) -> str | None:
    m = re.search(rf"^{name}:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else None


def _semantic(prompt: str, image) -> tuple[np.ndarray, np.ndarray]:
    rec = record(prompt)
    p = verifier.score_record(rec, np.asarray(image))
    return p[:len(rec.semantic)], p[len(rec.semantic):]


def judge_answer(text: str, images: list) -> str | None:
    """A judge's answer to one of the harness's templates about toy prompts; None for other requests."""
    try:
        if "Questions:" in text:
            block = text.split("Questions:", 1)[1].strip().split("\n\n", 1)[0]
            qs = [q.strip() for q in block.splitlines() if q.strip()]
            return "\n".join(("yes" if verifier.answer(q, images[-1]) > 0.5 else "no") + " (toy verifier)" for q in qs)
        prompt = _field(text, "Text")
        if prompt and "Consistency" in text:
            sem, qual = _semantic(prompt, images[-1])
            return (f"Consistency: {int((sem > 0.5).sum() * 2 // len(sem))}\nRealism: {2 * int((qual > 0.5).all())}\n"
                    f"Aesthetic Quality: {2 * int((qual > 0.5).all())}")
        if prompt and "Score:" in text:
            return f"Score: {int((_semantic(prompt, images[-1])[0] > 0.5).all())}"
        if '"score"' in text:
            if len(images) == 2:  # semantic consistency: the instruction is a toy prompt for the edited image
                instruction = text.split("instruction:", 1)[1].strip().split("\n\n", 1)[0]
                sem, _ = _semantic(instruction, images[1])
                return json.dumps({"score": [round(10 * float(sem.mean())), 10], "reasoning": "toy verifier"})
            _, qual = _semantic("a red circle", images[0])  # quality questions do not depend on the prompt
            return json.dumps({"score": [round(10 * float(qual.mean()))] * 2, "reasoning": "toy verifier"})
    except ValueError:  # not a toy prompt or question (PromptError, UnknownQuestion)
        return None
    return None
