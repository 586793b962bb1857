"""Self-Reflective Refinement (SRR) GRPO on the toy world (CPU, minutes).

    python -m alphagrpo_jax.train --config configs/toy_srr.py
    python -m alphagrpo_jax.train --config configs/toy_srr.py:mixed   # RT2I and SRR rounds alternate

Per SRR round: stage 1 draws `stage1_images` ODE images per prompt without think and keeps each prompt's worst;
stage 2 (trained) reflects on it and redraws G times with the SDE sampler and edit CFG; rewards are floored at
the stage-1 reward. The held-out eval adds `eval_srr/*` (rl/tasks/srr.py: stage-1 draw -> one ODE redraw).

Numbers. From the reference's SRR recipe (JunyiWuCode/AlphaGRPO@1f604ff config/bagel.py:_synthesis_reflect_base,
spec 4 and 2.4): stage 1 and stage 2 share one schedule; a short SDE window early in the schedule (reference: 5
of 39 transitions, start in [0, 10], so within the first 15/39; here 3 of 9, start in [0, 1], within the first
4/9); image CFG 2 on the whole interval with text_channel renorm; reward = the image reward only (reference
reward_fn = {"dvreward": 1}); text loss weight 1 / window (one reflection weighs like one image step x window = 1).
Toy choices: edit text CFG 2, not 4: the toy base is sampled with text CFG 2, and at 4 redraws got much worse than
the first draws (docs/results/2026-11-30-toy-srr.md). CPU sizes: P=4 prompts x G=8, 2 stage-1 images per prompt, one
round per step, 10-point schedules; LoRA r8, lr 3e-4, clip eps 1e-3, 64 think tokens, 32 px are configs/toy_rt2i.py's,
which this extends. `:mixed` is toy_rt2i.py's run (G = 16, 2 rounds per step, 40 steps, cosine lr, the
think-format reward for the RT2I rounds; SRR rounds ignore text-only reward components, rl/tasks/srr.py) with
every second round an SRR round. Each round weighs its text as its own task's recipe: RT2I rounds by
`loss.text_loss_weight`, SRR rounds by `task.srr.text_loss_weight`.
"""
from configs import toy_rt2i


def get_config(arg=None):
    if arg not in (None, "", "mixed"):
        raise ValueError(f"toy_srr.py: unknown variant {arg!r} ('' | mixed)")
    c = toy_rt2i.get_config()
    c.task.srr.update(dict(stage1_images=2, stage1_timesteps=10, selection="worst", transforms="toy",
                           num_timesteps=10, sde_window=3, sde_window_range=(0, 4)))
    c.task.srr.cfg.update(dict(text_scale=2.0, img_scale=2.0, interval=(0.0, 1.0), renorm_type="text_channel"))
    c.task.srr.text_loss_weight = 1.0 / c.task.srr.sde_window  # RT2I rounds (:mixed) keep loss.text_loss_weight
    c.rollout.cache_size = 256  # [system 5][image: 64 VAE + 4 ViT + 4 markers][reflection ~50][think <= 64]
    c.eval.update(dict(every=10, num_prompts=56, batch_size=28, temperature=0.3, num_timesteps=16))  # 51 exist
    if arg == "mixed":  # toy_rt2i.py's run (steps, G, rounds, lr schedule, rewards) with every second round SRR
        c.workdir = "workdir/toy_srr_mixed"
        c.task.kinds = ("rt2i", "srr")
        return c
    c.workdir = "workdir/toy_srr"
    c.task.kinds = ("srr",)
    c.total_steps = 30
    c.optim.schedule = "constant"  # SRR-only runs: a constant lr (docs/results/2026-11-30-toy-srr.md)
    c.rollout.rounds_per_step = 1
    c.rollout.group_size = 8  # SRR-only runs: G = 8 (toy_rt2i, and so :mixed, uses 16)
    c.reward.weights = dict(dvreward=0.0, think_format=0.0, toy_dvreward=1.0)
    return c
