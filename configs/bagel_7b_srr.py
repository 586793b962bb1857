"""AlphaGRPO Self-Reflective Refinement (SRR) with BAGEL-7B-MoT: the reference recipe, sized for a TPU pod.

    python -m alphagrpo_jax.train --config configs/bagel_7b_srr.py \
        --config.model.release=/path/to/BAGEL-7B-MoT --config.data.train_prompts=gs://.../train.jsonl \
        --config.reward.endpoints='("http://reward-host:30000/v1",)' --config.workdir=gs://bucket/run
    python -m alphagrpo_jax.train --config configs/bagel_7b_srr.py:mixed   # RT2I and SRR rounds alternate
    python -m alphagrpo_jax.train --config configs/bagel_7b_srr.py:mixed,v5p-64   # with a mesh preset

Model, LoRA, optimizer, mesh, reward endpoint and data are configs/bagel_7b_rt2i.py's. The SRR numbers are the
reference's (JunyiWuCode/AlphaGRPO@1f604ff, config/bagel.py:_synthesis_reflect_base / alphagrpo_reflect; spec 4,
2.3, 2.4): stage 1 = 7 ODE images per prompt (ceil(56 GPUs / 8 prompts)), 40 steps, no think, T2I CFG (text 4
on sigma in (0.4, 1], global renorm), keep each prompt's worst; stage 2 = G 14 reflect-and-redraw samples per
prompt, 40-point schedule with a 5-step SDE window starting in [0, 10] (range (0, 15)), eta 0.7, edit CFG text 4
+ image 2 on [0, 1] with text_channel renorm; 32 prompts per update (4 rounds of 8); reward = DVReward only
(reward_fn = {"dvreward": 1}; the format rewards feed only the unused text_avg), floored at the stage-1 reward
(clamp_no_improve_reward); text_loss_weight 1/5 (num_train_timesteps 5); lr 5e-5, no KL. The reference's total
step count is not published (its eval scripts load checkpoint 379, as configs/grpo_base.py's 380). `:mixed` is
alphagrpo_reflect_mix_t2i in spirit: RT2I rounds (with their think-format reward) alternate with SRR rounds.
"""
from configs import bagel_7b_rt2i, meshes


def get_config(arg=None):
    """`arg`: "", "mixed", a mesh preset of configs/meshes.py, or "mixed,<preset>"."""
    parts = [p for p in (arg or "").split(",") if p]
    presets = [p for p in parts if p != "mixed"]
    if len(presets) > 1 or any(p not in meshes.MESHES for p in presets):
        raise ValueError(f"bagel_7b_srr.py: unknown variant {arg!r}; expected '', 'mixed', a mesh preset of "
                         f"configs/meshes.py ({sorted(meshes.MESHES)}) or 'mixed,<preset>'")
    c = bagel_7b_rt2i.get_config()
    c.workdir = "gs://YOUR_BUCKET/alphagrpo/bagel_7b_srr"
    c.task.kinds = ("srr",)
    c.task.srr.update(dict(stage1_images=7, stage1_timesteps=40, selection="worst", transforms="bagel",
                           num_timesteps=40, sde_window=5, sde_window_range=(0, 15)))
    c.task.srr.cfg.update(dict(text_scale=4.0, img_scale=2.0, interval=(0.0, 1.0), renorm_type="text_channel",
                               renorm_min=0.0))
    c.rollout.update(dict(prompts_per_round=8, group_size=14, rounds_per_step=4))
    # [system ~50][image: 1024 VAE + 1369 ViT (518 px) tokens + markers][reflection prompt ~80][think <= 1024]
    c.rollout.cache_size = 4096
    c.task.srr.text_loss_weight = 1.0 / c.task.srr.sde_window  # RT2I rounds (:mixed) keep loss.text_loss_weight
    c.reward.weights = dict(dvreward=1.0, think_format=0.0)
    c.eval.update(dict(every=10, temperature=0.3, num_timesteps=40))
    if "mixed" in parts:
        c.workdir = "gs://YOUR_BUCKET/alphagrpo/bagel_7b_srr_mixed"
        c.task.kinds = ("rt2i", "srr")
        c.reward.weights.think_format = 1.0
    if presets:
        meshes.apply(c, presets[0])
    return c
