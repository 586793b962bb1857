"""The model under evaluation: a release folder, or a training run's checkpoint with LoRA merged (as export
does). The one place evaluation touches the trainer's checkpoint code."""
from __future__ import annotations

import dataclasses

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError


def check_source(release: str, workdir: str, step: int) -> str:
    """What will be loaded, in words; UsageError (before any model loads) when the folder is not there."""
    from alphagrpo_jax import checks

    if bool(release) == bool(workdir):
        raise UsageError("config.release / config.workdir: give exactly one (a release folder, or a training run's "
                         f"workdir with config.step), got release={release!r} workdir={workdir!r}")
    if release:
        checks.release_folder(release, "config.release")
        return release
    if not paths.exists(paths.join(workdir, "config.yaml")):
        raise UsageError(f"config.workdir: {workdir}: no config.yaml; expected a training run's workdir")
    if not paths.isdir(paths.join(workdir, "checkpoints")):
        raise UsageError(f"config.workdir: {workdir}: no checkpoints/ folder; expected a run that saved a checkpoint")
    return f"{workdir} step {step if step >= 0 else 'latest'}"


def load(release: str, workdir: str, step: int, dtype: str = ""):
    """(Release, step or None): the release's weights, or `workdir`'s checkpoint `step` (-1 = latest) merged.
    The model lives on this process's devices only: each process of a multi-process evaluation draws its own
    prompts with its own copy (a run's checkpoint is read as the run's mesh has it: export it first to evaluate
    on more processes than the run had)."""
    import jax

    from alphagrpo_jax.models.bagel import release as release_lib
    from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib

    overrides = dict(param_dtype=dtype, dtype=dtype) if dtype else {}
    if release:
        mesh = mesh_lib.make_mesh({"fsdp": -1}, devices=jax.local_devices())
        return release_lib.load_release(release, mesh, **overrides), None
    from alphagrpo_jax import run_config
    from alphagrpo_jax.rl import lora
    from alphagrpo_jax.rl.trainer_state import build, restore_checkpoint

    config = run_config.resolve(workdir, None)
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    with rules_lib.use_rules(mesh, rules):
        rel, _, learner, _ = build(config, mesh)
        state, extras = restore_checkpoint(config, learner, None if step < 0 else step)
        learner.trainable = state["params"]
        model = learner.model()
        if config.train.params == "lora":
            model = lora.merge_lora(model)
    return dataclasses.replace(rel, model=model), int(extras["step"])
