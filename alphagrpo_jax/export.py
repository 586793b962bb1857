"""Export a GRPO checkpoint as a BAGEL release folder (LoRA merged into the base weights).

    python -m alphagrpo_jax.export --workdir workdir/toy_rt2i --out exported/toy_rt2i [--step N]
    python -m alphagrpo_jax.generate --plugin alphagrpo_jax.toy.plugin --checkpoint exported/toy_rt2i --prompt "..." \
        --out x.png --transform toy

`--workdir RUN` uses the config the run recorded (`RUN/config.yaml`, run_config.py): no overrides to retype. With
`--config` (and overrides) instead or as well, its structure keys (release, LoRA rank/alpha/targets, ...) must
match the run's: a mismatch is a one-line error, exit code 2. The output folder is the base
release with `ema.safetensors` replaced: every tensor under its release name and shape, so the exported model
loads with `models/bagel/release.load_release` and with the upstream PyTorch code. Tensors are written in the
base release's dtype (bf16 for BAGEL-7B, fp32 for the toy model).
"""
from __future__ import annotations

import json
import logging
import os

from absl import flags
from flax import nnx

from alphagrpo_jax import cli, paths, plugins
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel import checkpoint as ckpt_lib, model as model_lib, safetensors_io
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.rl import lora
from alphagrpo_jax.rl.trainer_state import build, restore_checkpoint
from alphagrpo_jax.rl.validate import check_train_config

_OUT = flags.DEFINE_string("out", None, "output release folder (created; must not hold an ema.safetensors)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step to export (default: the latest)")

log = logging.getLogger("alphagrpo_jax.export")


def release_dtype(path: str) -> str:
    """The dtype of the release's first floating tensor (what the exported file is written in)."""
    f = safetensors_io.SafetensorsFile(paths.join(path, "ema.safetensors"))
    for key in f.keys():
        if "float" in str(f.dtype(key)):  # float32, bfloat16, float16
            return str(f.dtype(key))
    raise ValueError(f"{path}/ema.safetensors: no floating-point tensor")


def export(config, out: str, step: int | None = None) -> str:
    """Restores `step` of `config.workdir`'s checkpoints, merges LoRA, writes the release to `out`."""
    plugins.load(config)
    src = config.model.release
    if paths.exists(paths.join(out, "ema.safetensors")):
        raise FileExistsError(f"--out {out}: already holds an ema.safetensors; choose a new folder")
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    with rules_lib.use_rules(mesh, rules):
        _, _, learner, _ = build(config, mesh)
        state, extras = restore_checkpoint(config, learner, step)
        learner.trainable = state["params"]
        model = learner.model()
        if config.train.params == "lora":
            model = lora.merge_lora(model)
        paths.makedirs(out)
        for name in paths.listdir(src):
            # ema.safetensors and its .sha256 are written below (other checksum files travel with their file)
            if not name.startswith("ema.safetensors") and not paths.isdir(paths.join(src, name)):
                paths.copy(paths.join(src, name), paths.join(out, name))
        meta = {"exported_from": os.path.abspath(config.workdir) if "://" not in config.workdir else config.workdir,
                "step": str(extras["step"])}
        ckpt_lib.export_state(nnx.state(model), model_lib.weight_map(model.cfg), paths.join(out, "ema.safetensors"),
                              dtype=release_dtype(src), metadata=meta)
    paths.write_text(paths.join(out, "export.json"), json.dumps({**meta, "base_release": src}, indent=1))
    log.info("exported step %s of %s to %s", extras["step"], config.workdir, out)
    return out


def main(config) -> None:
    if not _OUT.value:
        raise UsageError("--out is required: the folder to write the release into")
    check_train_config(config, probe=False)  # the run's config, before any model loads (exit code 2)
    print(export(config, _OUT.value, _STEP.value))


if __name__ == "__main__":
    cli.run_on_workdir(main)
