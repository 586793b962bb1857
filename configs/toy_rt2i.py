"""RT2I GRPO on the toy world (the project's embedded default; CPU, minutes).

    python -m alphagrpo_jax.train --config configs/toy_rt2i.py
    python -m alphagrpo_jax.train --config configs/toy_rt2i.py:image_only   # ablation: only image steps train
    python -m alphagrpo_jax.train --config configs/toy_rt2i.py:text_only    # ablation: only the think text trains

The base model is the shipped toy release (assets/toy_base, made by `python -m alphagrpo_jax.sft --config
configs/toy_sft.py`); the reward is the exact toy DVReward computed in process (the same answers as the
OpenAI-compatible `python -m alphagrpo_jax.toy.serve`) plus the think-format reward. The toy world is a plug-in
(alphagrpo_jax/toy/plugin.py): it registers the `toy_dvreward` component, the "toy" prompt source (prompt files
written into the workdir, `toy.*_per_category` prompts per category, -1 = all) and the "toy" image transforms.
"""
import ml_collections

from configs.grpo_base import rt2i_base


def get_config(arg=None):
    c = rt2i_base()
    c.plugins = ("alphagrpo_jax.toy.plugin",)
    c.workdir = "workdir/toy_rt2i"
    c.total_steps = 40
    c.model.release = "assets/toy_base"
    c.model.param_dtype = c.model.dtype = "float32"
    # The backward recomputes the layers' per-token expert functions: on CPU cheaper than writing and reading
    # their activation stacks (models/layers.py REMAT_POLICIES).
    c.model.remat = "experts"
    c.train.lora_rank, c.train.lora_alpha = 8, 16.0
    # G = 16 with a 2-step SDE window: 128 samples per step for about the train time of 64 with a 5-step window
    # (the learner's cost is per sample x (window + 1)), and each trained step carries a larger share of its
    # sample's image noise (docs/results/2026-11-30-toy-rt2i.md).
    c.rollout.update(dict(prompts_per_round=4, group_size=16, rounds_per_step=2, cache_size=256, height=32,
                          width=32))
    c.rollout.text.update(dict(max_new_tokens=64, temperature=1.0, top_p=0.9))
    c.rollout.image.update(dict(num_timesteps=12, shift=3.0, sde_window=2, sde_window_range=(0, 7), eta=0.7))
    c.rollout.cfg.text_scale = 2.0  # the toy base is sampled with text CFG 2 (configs/toy_sft.py eval)
    c.loss.image_clip_eps = 1e-3
    # This project's own update rules, not the reference's (configs/grpo_base.py's defaults; docs/training.md):
    # the mean of the rounds' losses, skipped rounds left out, advantages over each round (population 0), LoRA A
    # std fan_in^-1/2. The toy results in docs/results/ were measured with them.
    c.loss.grad_normalization = "round_mean"
    c.train.update(dict(skipped_rounds="drop", lora_init="fan_in"))
    c.advantage.population = 0
    # Cosine to 0 over the run (decay_steps 0 = total_steps): at a constant 3e-4 the think policy overshoots
    # after ~30 steps (docs/results/2026-11-30-toy-rt2i.md).
    c.optim.update(dict(lr=3e-4, weight_decay=0.0, schedule="cosine", decay_steps=0))
    c.reward.weights = dict(dvreward=0.0, think_format=0.2, toy_dvreward=1.0)
    c.reward.image_format = "png"
    c.data.prompt_source = "toy"
    c.toy = ml_collections.ConfigDict(dict(train_per_category=-1, eval_per_category=8))
    c.eval.update(dict(every=10, num_prompts=56, batch_size=28, temperature=0.3, num_timesteps=25))
    c.log.grid_size = 16
    c.checkpoint.update(dict(every=10, keep=2))
    if arg == "image_only":
        c.workdir, c.loss.train_text = "workdir/toy_rt2i_image_only", False
    elif arg == "text_only":
        c.workdir, c.loss.train_image = "workdir/toy_rt2i_text_only", False
    elif arg:
        raise ValueError(f"toy_rt2i.py: unknown variant {arg!r} (image_only | text_only)")
    return c
