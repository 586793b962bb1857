"""Which policy improved? Held-out eval of a LoRA checkpoint with its adapters on each MoT expert separately.

    python -m alphagrpo_jax.component_eval --workdir workdir/toy_rt2i [--step N] [--keys K] [--variants both]
    python -m alphagrpo_jax.component_eval --workdir RUN --config configs/toy_rt2i.py --config.eval.num_prompts=32

`--workdir RUN` evaluates with the config the run recorded (`RUN/config.yaml`); `--config` as well: that config,
checked against the run's (export's rules).

In BAGEL's Mixture-of-Transformers the und expert processes every text token (the prompt context and the think
text) and the gen expert every latent token, so a LoRA run's adapters split into a *text policy* (und
adapters) and an *image policy* (gen adapters). This evaluates the run's held-out set four times with the same
keys and the same protocol as the trainer's eval: base (no adapters), text policy only, image policy only, both.
Switching an expert's adapters off is exact (its lora_b set to 0). Writes `component_eval_step<N>.json` into the
workdir and prints a table. One run gives per-component evidence that separate ablation runs would otherwise
need (they also differ: an ablation's image policy trains on the base's think texts, not the trained ones).
With SRR in `task.kinds` each variant also gets the SRR eval (`eval_srr/*`, rl/tasks/srr.py: the variant refines
its own first draws) and `eval_srr_base_draws/*` (it refines the base's first draws, the same images for every
variant: refinement skill without the change in first draws).

One eval draws one sample per prompt, so a small difference between variants can be one draw's luck. `--keys K`
repeats everything with K eval keys (key k = the trainer's eval key + k; k = 0 is the trainer's) and reports the
mean over keys and, per variant, the paired difference to the base: mean +- standard error over keys.
`--variants` evaluates only the named variants besides the base (e.g. `both`: trained vs base at half the cost).
"""
from __future__ import annotations

import json
import logging

import jax
import numpy as np
from absl import flags

from alphagrpo_jax import cli, metrics as metrics_lib, paths, plugins
from alphagrpo_jax.data.prompts import PromptRecords
from alphagrpo_jax.data.sources import prompt_files
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel.llm import GEN, UND
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.reward.service import build_reward_fn
from alphagrpo_jax.rl import tasks as tasks_lib
from alphagrpo_jax.rl.lora import keep_experts
from alphagrpo_jax.rl.tasks import held_out_eval
from alphagrpo_jax.rl.trainer_state import build, restore_checkpoint
from alphagrpo_jax.rl.validate import check_train_config

log = logging.getLogger("alphagrpo_jax.component_eval")

VARIANTS = {"base": (), "text_policy": (UND,), "image_policy": (GEN,), "both": (UND, GEN)}


def paired_differences(per_key: dict[str, list[dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """{variant: {metric: (mean, standard error) over keys of variant - base}} (SE 0 with one key)."""
    out = {}
    for name, runs in per_key.items():
        if name == "base":
            continue
        out[name] = {}
        for k in runs[0]:
            d = np.array([r[k] - b[k] for r, b in zip(runs, per_key["base"])], np.float64)
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
            out[name][k] = (float(d.mean()), se)
    return out


def component_eval(config, step: int | None = None, keys: int = 1, variants=tuple(VARIANTS)) -> dict:
    """For the checkpoint `step` (default: latest) of `config.workdir`: {variant: eval metrics (mean over
    `keys` eval keys)} for the base and `variants`, plus "per_key" ({variant: [metrics of each key]}),
    "paired" (paired_differences) and "step", "keys"."""
    if config.train.params != "lora":
        raise UsageError("component_eval needs a LoRA run (config.train.params == 'lora')")
    plugins.load(config)  # the config's reward components and prompt sources
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    if keys < 1:
        raise UsageError(f"--keys: expected >= 1, got {keys}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise UsageError(f"--variants: unknown variants {unknown}; expected some of {list(VARIANTS)}")
    chosen = {name: e for name, e in VARIANTS.items() if name == "base" or name in variants}
    per_key: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    with rules_lib.use_rules(mesh, rules):
        log.info("loading %s with the run's adapters (checkpoint %s of %s)", config.model.release,
                 "latest" if step is None else step, config.workdir)
        rel, rollout, learner, _ = build(config, mesh)
        state, extras = restore_checkpoint(config, learner, step)
        step = int(extras["step"])
        _, eval_path = prompt_files(config)
        if not eval_path:
            raise UsageError("component_eval needs held-out prompts (config.data.eval_prompts, or a prompt source "
                             "that writes them)")
        records = list(PromptRecords(eval_path))[: config.eval.num_prompts]
        reward_fn = build_reward_fn(config.reward)
        tasks = tasks_lib.from_config(config, rollout)
        log.info("evaluating %d variant(s) x %d key(s) on %d prompts; the first eval compiles its programs",
                 len(chosen), keys, len(records))
        bar = metrics_lib.progress(keys * len(chosen), "component_eval", unit="eval")
        try:
            learner.trainable = keep_experts(state["params"], VARIANTS["base"])
            base_model = learner.model()
            for k in range(keys):
                for name, experts in chosen.items():
                    learner.trainable = keep_experts(state["params"], experts)
                    model = learner.model()
                    # The base refining the base's draws is its own SRR eval (base_model is model: a copy).
                    m = held_out_eval(config, model, rel, records, reward_fn, tasks, k,
                                      base_model=model if name == "base" else base_model).metrics
                    per_key[name].append(m)
                    log.info("key %d, %s: %s", k, name, m.get("eval/reward"))
                    bar.update(1)
        finally:
            bar.close()
            reward_fn.close()
    out = {name: {m: float(np.mean([r[m] for r in runs])) for m in runs[0]} for name, runs in per_key.items()}
    out.update(step=step, keys=keys, per_key=per_key, paired=paired_differences(per_key))
    if jax.process_index() == 0:
        paths.write_text(paths.join(config.workdir, f"component_eval_step{step}.json"), json.dumps(out, indent=1))
    return out


def main(config) -> None:
    check_train_config(config)  # before any model loads: a UsageError is one line, exit code 2
    res = component_eval(config, flags.FLAGS.step, flags.FLAGS.keys, tuple(flags.FLAGS.variants))
    metrics = sorted(k for k in res["base"] if k.startswith(("eval/", "eval_srr")))
    print(f"held-out eval of step {res['step']} ({config.workdir}), mean over {res['keys']} eval key(s); "
          f"in brackets: variant - base, mean +- standard error over keys")
    shown = [v for v in VARIANTS if v in res]
    print(f"{'metric':40s}" + "".join(f"{v:>28s}" for v in shown))
    for m in metrics:
        cells = [f"{res['base'][m]:28.4f}"]
        for v in shown[1:]:
            d, se = res["paired"][v][m]
            cells.append(f"{res[v][m]:8.4f} ({d:+.4f} +- {se:.4f})".rjust(28))
        print(f"{m:40s}" + "".join(cells))


if __name__ == "__main__":
    # Defined here, not at import: alphagrpo_jax.export defines its own --step, and both may be imported.
    flags.DEFINE_integer("step", None, "checkpoint step to evaluate (default: the latest)")
    flags.DEFINE_integer("keys", 1, "eval keys (one sample per prompt each); K > 1 adds standard errors")
    flags.DEFINE_list("variants", list(VARIANTS)[1:], "variants to evaluate besides the base")
    cli.run_on_workdir(main)
