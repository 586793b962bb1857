"""The toy world as a plug-in: a config names it and the library finds the toy's pieces by name.

    c.plugins = ("alphagrpo_jax.toy.plugin",)              # configs/toy_*.py
    c.reward.weights = dict(toy_dvreward=1.0, ...)         # reward component (toy/reward.py)
    c.data.prompt_source = "toy"                           # prompt files written into <workdir>/data/prompts/
    c.toy = dict(train_per_category=-1, eval_per_category=8)  # ... with this many prompts per category (-1 = all)
    c.task.srr.transforms = "toy"                          # image transforms (toy/transforms.py)

Importing this module registers them (and the toy SFT data source, toy/sft_source.py, the toy decomposer
for `generate --refine` and the toy benchmark of `evaluate`, toy/benchmark.py). Nothing in the library imports it.
"""
from __future__ import annotations

from alphagrpo_jax import paths
from alphagrpo_jax.data.sources import register_prompt_source
from alphagrpo_jax.models.bagel.image_transform import register_transform
from alphagrpo_jax.reward.decomposers import register_decomposer
# benchmark, reward and sft_source register themselves on import
from alphagrpo_jax.toy import benchmark, decompose, reward, sft_source, transforms  # noqa: F401
from alphagrpo_jax.toy.prompt_files import write_prompt_files

register_transform("toy", transforms.VAE_TRANSFORM, transforms.VIT_TRANSFORM)
register_decomposer("toy")(decompose.decompose_text)


@register_prompt_source("toy")
def toy_prompt_files(config) -> tuple[str, str]:
    """<workdir>/data/prompts/{train,eval}.jsonl from the toy world (config.toy.{train,eval}_per_category, -1 =
    all), written once; every process writes its own copy if missing (deterministic, atomic), so a host-local
    workdir works."""
    out = paths.join(config.workdir, "data")
    files = {s: paths.join(out, "prompts", f"{s}.jsonl") for s in ("train", "eval")}
    if not all(paths.exists(p) for p in files.values()):
        per = [None if n < 0 else n for n in (config.toy.train_per_category, config.toy.eval_per_category)]
        files = write_prompt_files(out, per[0], per[1], config.seed)
    return files["train"], files["eval"]
