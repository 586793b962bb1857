"""Pieces shared by the training configs (imported by the config files in this folder)."""
import ml_collections

from alphagrpo_jax.reward.service import reward_config


def rt2i_base() -> ml_collections.ConfigDict:
    """Every key the GRPO trainer reads, with the reference's RT2I values where it fixes them."""
    c = ml_collections.ConfigDict()
    # Modules imported at program start that register names the config selects (alphagrpo_jax/plugins.py).
    c.plugins = ()
    c.workdir = "workdir/rt2i"
    c.seed = 0
    c.total_steps = 380
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.mesh_dcn = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1))
    c.rules = ml_collections.ConfigDict()  # logical-axis rule overrides, e.g. {"mlp": "fsdp"}
    c.model = ml_collections.ConfigDict(dict(release="", param_dtype="bfloat16", dtype="bfloat16",
                                             attention="jnp", remat="none"))
    # lora_init: "gaussian" (the reference's peft init, A std 1/rank) | "fan_in" (std fan_in^-1/2). Skipped rounds
    # (all advantages 0; SRR: nothing improved): "redraw" (the reference: replaced by new rounds, at most
    # max_extra_rounds per step) | "drop" (left out). rl/accumulation.py.
    c.train = ml_collections.ConfigDict(dict(
        params="lora", lora_rank=32, lora_alpha=64.0, lora_init="gaussian",
        lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        skipped_rounds="redraw", max_extra_rounds=8,
        max_nonfinite_steps=3))  # the run stops at the 3rd step in a row with a non-finite loss/grad (rl/guards.py)
    c.rollout = ml_collections.ConfigDict(dict(
        prompts_per_round=8, group_size=14, rounds_per_step=4, think=True, cache_size=2048, height=512, width=512,
        text=dict(max_new_tokens=1024, temperature=1.0, top_p=0.8, top_k=0),
        image=dict(num_timesteps=16, shift=3.0, sde_window=10, sde_window_range=(0, 11), eta=0.7),
        cfg=dict(text_scale=4.0, img_scale=1.0, interval=(0.4, 1.0), renorm_type="global", renorm_min=0.0)))
    # Tasks cycled over rounds: ("rt2i",), ("srr",) or a mix such as ("rt2i", "srr").
    c.task = ml_collections.ConfigDict(dict(
        kinds=("rt2i",),
        srr=dict(stage1_images=7, stage1_timesteps=40, selection="worst", selection_temperature=0.1,
                 transforms="bagel", num_timesteps=40, sde_window=5, sde_window_range=(0, 15),
                 text_loss_weight=0.2,  # SRR rounds' (loss.text_loss_weight is RT2I's): 1 / window, the reference
                 cfg=dict(text_scale=4.0, img_scale=2.0, interval=(0.0, 1.0), renorm_type="text_channel",
                          renorm_min=0.0))))
    # population: prompts per advantage population (std over population x G rewards): the reference's round of 8,
    # whatever rollout.prompts_per_round a mesh preset sets (0: each round, so mesh-dependent).
    c.advantage = ml_collections.ConfigDict(dict(name="grpo", std="global", eps=1e-4, population=8))
    # grad_normalization: "reference" (each reference round's loss / the update's backward-call count,
    # rounds x (window + 1)) | "round_mean" (the mean of the rounds' losses). rl/accumulation.py.
    c.loss = ml_collections.ConfigDict(dict(
        image_loss="flow_grpo", text_loss="gspo", image_clip_eps=1e-5, adv_clip=5.0, text_clip=(0.2, 0.28),
        text_loss_weight=1.0, train_image=True, train_text=True, image_kl_beta=0.0, text_kl_beta=0.0,
        max_log_ratio=20.0, grad_normalization="reference"))
    c.optim = ml_collections.ConfigDict(dict(lr=5e-5, warmup_steps=0, schedule="constant", decay_steps=0,
                                             min_lr=0.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                             clip_norm=1.0))
    # Texts that steer the model (docs/prompts.md): the text or file:PATH; "" = the default. think_system: the
    # release's recorded prompt, else ours; reflection: ours (a template, `{prompt}` = the request).
    c.prompts = ml_collections.ConfigDict(dict(think_system="", reflection=""))
    c.reward = reward_config()
    c.reward.weights = ml_collections.ConfigDict(dict(dvreward=1.0, think_format=1.0))
    # prompt_source (data/sources.py): "files" = train_prompts / eval_prompts, or a plug-in's source.
    c.data = ml_collections.ConfigDict(dict(prompt_source="files", train_prompts="", eval_prompts=""))
    # Held-out eval: ODE; num_timesteps 0 = the rollout's (the reference evaluates with 40).
    c.eval = ml_collections.ConfigDict(dict(every=10, num_prompts=64, batch_size=16, temperature=0.3, greedy=False,
                                            num_timesteps=40))
    # tensorboard: <workdir>/tensorboard/ (scalars, sample grids, think texts, config, hparams); wandb: a Weights &
    # Biases project name to log the same to ("" = off; needs `pip install wandb`).
    c.log = ml_collections.ConfigDict(dict(tensorboard=True, grid_size=16, wandb=""))
    c.checkpoint = ml_collections.ConfigDict(dict(every=20, keep=3))
    return c
