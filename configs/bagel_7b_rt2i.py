"""AlphaGRPO RT2I with BAGEL-7B-MoT: the reference recipe, sized for a TPU pod.

    python -m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py \
        --config.model.release=/path/to/BAGEL-7B-MoT --config.data.train_prompts=gs://.../train.jsonl \
        --config.reward.endpoints='("http://reward-host:30000/v1",)' --config.workdir=gs://bucket/run

Reference recipe (JunyiWuCode/AlphaGRPO@1f604ff, config/bagel.py:alphagrpo_t2iThink): LoRA r32/alpha64 on
q/k/v/o + MLP of both experts, AdamW lr 5e-5 (0.9, 0.999, eps 1e-8, wd 1e-4), clip 1.0; G = 14 samples per
prompt, 32 prompts per update (4 rounds of 8); 16-point schedule (shift 3) with a 10-step SDE window starting
in [0, 1], eta 0.7; text CFG 4 on sigma in (0.4, 1] with global renorm; think T = 1.0, top-p 0.8, <= 1024
tokens; reward = DVReward (Qwen3-VL-30B-A3B-Instruct over an OpenAI-compatible endpoint) + think format.
Mesh: without a variant, fsdp over all devices (a round's 112 samples are replicated where fsdp does not divide
them, e.g. on 32 chips). A slice preset from configs/meshes.py sets mesh, remat and the round batching for that
slice (and records it for the AOT memory check):

    python -m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py:v5p-128 ...
    python -m alphagrpo_jax.tools.compile_check --config configs/bagel_7b_rt2i.py:v5p-128
"""
from configs import meshes
from configs.grpo_base import rt2i_base


def get_config(arg=None):
    c = rt2i_base()
    c.workdir = "gs://YOUR_BUCKET/alphagrpo/bagel_7b_rt2i"
    c.model.release = "BAGEL-7B-MoT"
    c.model.remat = "full"
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1))
    c.rollout.update(dict(prompts_per_round=8, group_size=14, rounds_per_step=4, cache_size=2048, height=512,
                          width=512))
    c.reward.endpoints = ("http://127.0.0.1:30000/v1",)
    c.reward.model = "Qwen/Qwen3-VL-30B-A3B-Instruct"
    c.reward.weights = dict(dvreward=1.0, think_format=1.0)
    c.data.train_prompts = "data/alphagrpo20k/train.jsonl"
    c.data.eval_prompts = "data/alphagrpo20k/test.jsonl"
    c.eval.update(dict(every=10, num_prompts=64, temperature=0.3))
    if arg:
        if arg not in meshes.MESHES:
            raise ValueError(f"bagel_7b_rt2i.py: unknown variant {arg!r}; the variants are the mesh presets of "
                             f"configs/meshes.py: {sorted(meshes.MESHES)}")
        meshes.apply(c, arg)
    return c
