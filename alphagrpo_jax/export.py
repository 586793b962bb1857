"""Export a GRPO checkpoint as a BAGEL release folder (LoRA merged into the base weights).

    python -m alphagrpo_jax.export --workdir workdir/toy_rt2i --out exported/toy_rt2i [--step N]
    python -m alphagrpo_jax.generate --checkpoint exported/toy_rt2i --prompt "two red circles" --out x.png

`--workdir RUN` uses the config the run recorded (`RUN/config.yaml`, run_config.py): no overrides to retype. With
`--config` (and overrides) instead or as well, its structure keys (release, LoRA rank/alpha/targets, ...) must
match the run's: a mismatch is a one-line error, exit code 2. The output folder is the base
release with `ema.safetensors` replaced: every tensor under its release name and shape, so the exported model
loads with `models/bagel/release.load_release` and with the upstream PyTorch code. Tensors are written in the
base release's dtype (bf16 for BAGEL-7B, fp32 for the toy model). The folder also gets its own model card
(README.md: base release, run, step, config, held-out reward), the run's config (train_config.yaml), export.json
and generation_config.json (the base's, with the image size, steps, CFG and think settings the run sampled and
evaluated with), so `generate --checkpoint OUT` needs no sampling flags. The base's own card and eval files
(README.md, eval.json, eval.png) are not copied: they describe the base model.
"""
from __future__ import annotations

import json
import logging
import os

from absl import flags
from flax import nnx

from alphagrpo_jax import cli, hub, metrics, paths, plugins, run_config
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel import checkpoint as ckpt_lib, model as model_lib, safetensors_io
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.rl import lora
from alphagrpo_jax.rl.trainer_state import build, restore_checkpoint
from alphagrpo_jax.rl.validate import check_train_config
from alphagrpo_jax.sampling import generation_config

_OUT = flags.DEFINE_string("out", None, "output release folder (created; must not hold an ema.safetensors)")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step to export (default: the latest)")

log = logging.getLogger("alphagrpo_jax.export")

# Base-release files that describe the base model (or a previous export), not the exported one: not copied.
NOT_COPIED = ("ema.safetensors", "eval.", "README.md", "export.json", "train_config.yaml",
              generation_config.FILE)


def release_dtype(path: str) -> str:
    """The dtype of the release's first floating tensor (what the exported file is written in)."""
    f = safetensors_io.SafetensorsFile(paths.join(path, "ema.safetensors"))
    for key in f.keys():
        if "float" in str(f.dtype(key)):  # float32, bfloat16, float16
            return str(f.dtype(key))
    raise ValueError(f"{path}/ema.safetensors: no floating-point tensor")


def copy_base_files(src: str, out: str) -> list[str]:
    """Copies the base release's files that stay true of the exported model (configs, tokenizer, autoencoder,
    their checksum files) into `out`; returns their names. ema.safetensors and its .sha256 are written anew."""
    paths.makedirs(out)
    names = [n for n in paths.listdir(src) if not n.startswith(NOT_COPIED) and not paths.isdir(paths.join(src, n))]
    for name in names:
        paths.copy(paths.join(src, name), paths.join(out, name))
    return names


def export(config, out: str, step: int | None = None) -> str:
    """Restores `step` of `config.workdir`'s checkpoints, merges LoRA, writes the release to `out`."""
    plugins.load(config)
    src = hub.resolve(config.model.release, "config.model.release")  # a Hub id -> its downloaded snapshot
    if paths.exists(paths.join(out, "ema.safetensors")):
        raise FileExistsError(f"--out {out}: already holds an ema.safetensors; choose a new folder")
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    with rules_lib.use_rules(mesh, rules):
        log.info("loading the base release %s and building the model ...", src)
        _, _, learner, _ = build(config, mesh)
        log.info("restoring %s of %s ...", "the latest step" if step is None else f"step {step}", config.workdir)
        state, extras = restore_checkpoint(config, learner, step)
        learner.trainable = state["params"]
        model = learner.model()
        if config.train.params == "lora":
            model = lora.merge_lora(model)
        log.info("writing step %s to %s ...", extras["step"], out)
        copy_base_files(src, out)
        meta = {"exported_from": os.path.abspath(config.workdir) if "://" not in config.workdir else config.workdir,
                "step": str(extras["step"])}
        ckpt_lib.export_state(nnx.state(model), model_lib.weight_map(model.cfg), paths.join(out, "ema.safetensors"),
                              dtype=release_dtype(src), metadata=meta)
    paths.write_text(paths.join(out, "export.json"), json.dumps({**meta, "base_release": src}, indent=1))
    generation_config.write(out, generation_settings(config, src))
    paths.write_text(paths.join(out, "train_config.yaml"), run_config.to_yaml(config))
    paths.write_text(paths.join(out, "README.md"), model_card(config, src, out, int(extras["step"])))
    log.info("exported step %s of %s to %s", extras["step"], config.workdir, out)
    return out


def generation_settings(config, src: str) -> dict:
    """The base release's generation_config.json with the run's sampling settings on top (rollout size, CFG and
    think length; the held-out eval's timesteps and think temperature)."""
    r, ev = config.rollout, config.eval
    return {**generation_config.read(src), "height": r.height, "width": r.width,
            "num_timesteps": ev.get("num_timesteps") or r.image.num_timesteps, "shift": r.image.shift,
            "cfg_text": r.cfg.text_scale, "cfg_img": r.cfg.img_scale, "cfg_interval": list(r.cfg.interval),
            "think_tokens": r.text.max_new_tokens, "think_temperature": ev.temperature}


def held_out_reward(workdir: str, step: int, num_prompts: int) -> str:
    """eval/reward at the last (and first) held-out eval up to `step`, from the run's metrics.jsonl, or why not."""
    path = paths.join(workdir, "metrics.jsonl")
    rows = [r for r in metrics.read_metrics(path) if "eval/reward" in r and r["step"] <= step] \
        if paths.exists(path) else []
    if not rows:
        return "not measured (no held-out eval up to this step in the run's metrics.jsonl)"
    first, last = rows[0], rows[-1]
    return (f"{last['eval/reward']:.4f} at step {last['step']} (eval/reward on {num_prompts} held-out prompts; "
            f"{first['eval/reward']:.4f} at step {first['step']}, the first eval)")


def model_card(config, src: str, out: str, step: int) -> str:
    """README.md of an exported release: what it was trained from, how, for how long and how well."""
    t = config.train
    params = (f"LoRA rank {t.lora_rank}, alpha {t.lora_alpha}, targets {', '.join(t.lora_targets)} (merged)"
              if t.params == "lora" else t.params)
    return f"""# {paths.basename(out.rstrip("/"))}

A BAGEL release exported by `python -m alphagrpo_jax.export` from a GRPO run of alphagrpo_jax.

- Trained from: `{src}`
- Run: `{config.workdir}`, step {step} of {config.total_steps}
- Tasks: {", ".join(config.task.kinds)}; trained parameters: {params}
- Held-out reward: {held_out_reward(config.workdir, step, config.eval.num_prompts)}
- Configuration: `train_config.yaml` (the run's config); sampling defaults: `generation_config.json`

Use (DIR: this folder, wherever it is copied):

    python -m alphagrpo_jax.generate --checkpoint DIR --prompt "..." --out x.png
"""


def main(config) -> None:
    if not _OUT.value:
        raise UsageError("--out is required: the folder to write the release into")
    check_train_config(config, probe=False)  # the run's config, before any model loads (exit code 2)
    print(export(config, _OUT.value, _STEP.value))


if __name__ == "__main__":
    cli.run_on_workdir(main)
