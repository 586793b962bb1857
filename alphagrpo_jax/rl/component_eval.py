"""Which policy improved? Held-out eval of a LoRA checkpoint with its adapters on each MoT expert separately.

    python -m alphagrpo_jax.rl.component_eval --config configs/toy_rt2i.py [--step N]

In BAGEL's Mixture-of-Transformers the und expert processes every text token (the prompt context and the think
text) and the gen expert every latent token, so a LoRA run's adapters split into a *text policy* (und
adapters) and an *image policy* (gen adapters). This evaluates the run's held-out set four times with the same
keys and the same protocol as the trainer's eval: base (no adapters), text policy only, image policy only, both.
Switching an expert's adapters off is exact (its lora_b set to 0). Writes `component_eval_step<N>.json` into the
workdir and prints a table. One run gives per-component evidence that separate ablation runs would otherwise
need (they also differ: an ablation's image policy trains on the base's think texts, not the trained ones).
"""
from __future__ import annotations

import json
import logging
import os

import jax
import jax.numpy as jnp
from absl import flags
from flax import nnx

from alphagrpo_jax import cli
from alphagrpo_jax.models.bagel.llm import GEN, UND
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib

log = logging.getLogger("alphagrpo_jax.rl.component_eval")

VARIANTS = {"base": (), "text_policy": (UND,), "image_policy": (GEN,), "both": (UND, GEN)}


def keep_experts(trainable, experts: tuple[int, ...]):
    """The LoRA state with the adapters of every expert not in `experts` switched off (lora_b = 0)."""
    def f(path, var):
        if str(getattr(path[-1], "key", path[-1])) != "lora_b":
            return var
        axes = tuple(var.get_metadata().get("axes") or ())
        if "expert" not in axes:
            raise ValueError(f"component_eval: {jax.tree_util.keystr(path)} has no 'expert' axis: {axes}")
        ax = axes.index("expert")
        keep = jnp.array([e in experts for e in (UND, GEN)], var.get_value().dtype)
        shape = [1] * var.get_value().ndim
        shape[ax] = 2
        return var.replace(var.get_value() * keep.reshape(shape))
    return jax.tree_util.tree_map_with_path(f, trainable, is_leaf=lambda x: isinstance(x, nnx.Variable))


def component_eval(config, step: int | None = None) -> dict[str, dict[str, float]]:
    """{variant: eval metrics} for the checkpoint `step` (default: latest) of `config.workdir`."""
    from alphagrpo_jax.data.prompts import PromptRecords
    from alphagrpo_jax.reward.service import build_reward_fn
    from alphagrpo_jax.rl.evaluate import evaluate
    from alphagrpo_jax.train import build, prompt_files, restore_checkpoint

    if config.train.params != "lora":
        raise SystemExit("component_eval needs a LoRA run (config.train.params == 'lora')")
    if "toy_dvreward" in dict(config.reward.weights):
        import alphagrpo_jax.toy.reward  # noqa: F401  (registers the in-process toy verifier)
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    out: dict[str, dict[str, float]] = {}
    with rules_lib.use_rules(mesh, rules):
        rel, rcfg, learner, _ = build(config, mesh)
        state, extras = restore_checkpoint(config, learner, step)
        step = int(extras["step"])
        _, eval_path = prompt_files(config)
        if not eval_path:
            raise SystemExit("component_eval needs held-out prompts (config.data.eval_prompts or toy prompts)")
        records = list(PromptRecords(eval_path))[: config.eval.num_prompts]
        reward_fn = build_reward_fn(config.reward)
        try:
            for name, experts in VARIANTS.items():
                learner.trainable = keep_experts(state["params"], experts)
                ev = evaluate(learner.model(), rel.vae, rel.tokenizer, records, reward_fn, rcfg,
                              jax.random.key(config.seed + 1), batch_size=config.eval.batch_size,
                              temperature=config.eval.temperature, greedy=config.eval.greedy,
                              num_timesteps=config.eval.num_timesteps or None)
                out[name] = ev.metrics
                log.info("%s: %s", name, ev.metrics.get("eval/reward"))
        finally:
            reward_fn.close()
    if jax.process_index() == 0:
        with open(os.path.join(config.workdir, f"component_eval_step{step}.json"), "w") as f:
            json.dump({"step": step, **out}, f, indent=1)
    return {"step": step, **out}


def main(config) -> None:
    res = component_eval(config, flags.FLAGS.step)
    keys = sorted(k for k in res["base"] if k.startswith("eval/"))
    print(f"held-out eval of step {res['step']} ({config.workdir})")
    print(f"{'metric':40s}" + "".join(f"{v:>14s}" for v in VARIANTS))
    for k in keys:
        print(f"{k:40s}" + "".join(f"{res[v][k]:14.4f}" for v in VARIANTS))


if __name__ == "__main__":
    # Defined here, not at import: alphagrpo_jax.export defines its own --step, and both may be imported.
    flags.DEFINE_integer("step", None, "checkpoint step to evaluate (default: the latest)")
    cli.run(main)
