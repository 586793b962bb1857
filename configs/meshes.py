"""Mesh presets for common slices, sized so that BAGEL-7B-MoT RT2I GRPO (configs/bagel_7b_rt2i.py) fits.

    python -m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py:v5p-128 ...
    python -m alphagrpo_jax.tools.compile_check --config configs/bagel_7b_rt2i.py:v5p-128   # AOT memory table

Each preset: `mesh` (ICI axis sizes inside a slice), `mesh_dcn` (across slices), `chips` (all slices), `slices`,
`hbm_gib` (usable memory per chip/GPU), `topology` (libtpu name for ahead-of-time compiles), `platform`,
`rollout` (prompts per round x rounds per step), `remat`, optionally `attention` (else the config's) and a
one-line `why`.

Sizing rules. The batch of a round (B = P prompts x G = 14 samples) is split over data x fsdp, so data x fsdp must
divide B; a dimension a mesh axis does not divide is replicated instead (every chip then rolls out every sample).
Tensor parallelism is at most 4 (a larger tensor axis replicates the 7B's 4 KV heads). Every preset keeps the
reference's 32 prompts per update (P x rounds = 32), trading rounds for a larger batch per round on larger slices,
at 7 (TPU) or 7-14 (GPU) samples per batch shard. The update does not depend on the preset: advantages are
normalised over `advantage.population` = 8 prompts (the reference's round; a 16- or 32-prompt round holds 2 or 4
populations, 4-prompt rounds pair up), and the gradient is normalised per reference round (`loss.grad_normalization`
"reference": 32 / 8 = 4 rounds x (window + 1) backward calls), so P only changes the batching (rl/accumulation.py).
The per-device memory of every program: the AOT check above.
"""
import ml_collections

PROMPTS_PER_UPDATE = 32

MESHES: dict[str, dict] = {
    "v5p-64": dict(
        chips=32, slices=1, hbm_gib=95.0, topology="v5p:4x4x2", platform="tpu",
        mesh=dict(data=1, fsdp=16, tensor=2), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=8, rounds_per_step=4), remat="full",
        why="the reference recipe as is: B = 8 x 14 = 112 over 16 batch shards; tensor 2 halves attention temps"),
    "v5p-128": dict(
        chips=64, slices=1, hbm_gib=95.0, topology="v5p:4x4x4", platform="tpu",
        mesh=dict(data=1, fsdp=32, tensor=2), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=16, rounds_per_step=2), remat="full",
        why="twice v5p-64: 16 prompts per round (B = 224 over 32 batch shards), 2 rounds per update"),
    "v5e-256": dict(
        chips=256, slices=1, hbm_gib=16.0, topology="v5e:16x16", platform="tpu",
        mesh=dict(data=1, fsdp=64, tensor=4), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=32, rounds_per_step=1), remat="full", attention="splash",
        why="16 GiB chips: tensor 4 (the most that still shards the 4 KV heads), full remat and splash attention (no "
            "materialised scores; with jnp attention the learner needs 16.1 GiB); all 32 prompts in one round "
            "(B = 448 over 64 batch shards)"),
    "v6e-64": dict(
        chips=64, slices=1, hbm_gib=32.0, topology="v6e:8x8", platform="tpu",
        mesh=dict(data=1, fsdp=16, tensor=4), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=8, rounds_per_step=4), remat="full",
        why="32 GiB chips: tensor 4 keeps attention/MLP temps at a quarter; B = 112 over 16 batch shards"),
    "v5p-64x2": dict(
        chips=64, slices=2, hbm_gib=95.0, topology="v5p:4x4x2", platform="tpu",
        mesh=dict(data=1, fsdp=16, tensor=2), mesh_dcn=dict(data=2, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=16, rounds_per_step=2), remat="full",
        why="two v5p-64 slices: data parallel over DCN (only gradient all-reduces cross it), each slice as v5p-64 "
            "with 8 of a round's 16 prompts"),
    # GPU: no libtpu topology exists; the AOT check compiles the same 8-device mesh for v5p:2x2x2 as a proxy
    # (the TPU compiler's buffer assignment, not the GPU one). hbm_gib = 0.9 x the GPU's memory, the
    # XLA_PYTHON_CLIENT_MEM_FRACTION that launch/gpu_single_host.sh sets.
    "gpu-8xh100": dict(
        chips=8, slices=1, hbm_gib=67.0, topology="v5p:2x2x2", platform="gpu",
        mesh=dict(data=1, fsdp=8, tensor=1), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=4, rounds_per_step=8), remat="full",
        why="one host, NVLink: fsdp over the 8 GPUs; 4 prompts per round keep 7 samples per 80 GB GPU"),
    "gpu-8xh200": dict(
        chips=8, slices=1, hbm_gib=118.0, topology="v5p:2x2x2", platform="gpu",
        mesh=dict(data=1, fsdp=8, tensor=1), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=8, rounds_per_step=4), remat="full",
        why="one host, NVLink: fsdp over the 8 GPUs; the reference's 8 prompts per round (14 samples per "
            "141 GB GPU)"),
    # Not hardware to train on: 8 (simulated) CPU devices in v5p-64's axis shape (data 1, fsdp, tensor 2), for the
    # dress rehearsal of the 7B configs on a tiny release (tests/dress_rehearsal.py). 4 prompts per round, so
    # an advantage population (advantage.population = 8 prompts) spans two rounds.
    "cpu-8": dict(
        chips=8, slices=1, hbm_gib=0.0, topology="v5p:2x2x2", platform="cpu",
        mesh=dict(data=1, fsdp=4, tensor=2), mesh_dcn=dict(data=1, fsdp=1, tensor=1),
        rollout=dict(prompts_per_round=4, rounds_per_step=8), remat="full",
        why="tests: v5p-64's axis shape on 8 simulated CPU devices; B = 4 x 14 = 56 over 4 batch shards"),
}


def get_config(name=None) -> ml_collections.ConfigDict:
    """The preset `name` (e.g. `configs/meshes.py:v5p-64`)."""
    if name not in MESHES:
        raise ValueError(f"configs/meshes.py: unknown mesh preset {name!r}; known: {sorted(MESHES)}")
    return ml_collections.ConfigDict(dict(name=name, **MESHES[name]))


def batch_shards(preset) -> int:
    """How many ways a round's batch is split: data x fsdp inside a slice times data x fsdp across slices."""
    from alphagrpo_jax.parallel import mesh as mesh_lib

    per_slice = preset.chips // preset.slices
    ici = mesh_lib.resolve_axis_sizes(dict(preset.mesh), per_slice, f"{preset.name} mesh")
    dcn = mesh_lib.resolve_axis_sizes(dict(preset.mesh_dcn), preset.slices, f"{preset.name} mesh_dcn")
    return ici[0] * ici[1] * dcn[0] * dcn[1]


def apply(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Sets `config`'s mesh, mesh_dcn, remat and rollout batching from preset `name`, and records the hardware
    under `config.hardware` (read by the AOT check). Errors if a round's batch does not split evenly."""
    p = get_config(name)
    config.mesh.update(dict(p.mesh))
    config.mesh_dcn.update(dict(p.mesh_dcn))
    config.model.remat = p.remat
    if "attention" in p:
        config.model.attention = p.attention
    config.rollout.update(dict(p.rollout))
    config.hardware = ml_collections.ConfigDict(
        {k: p[k] for k in ("name", "chips", "slices", "hbm_gib", "topology", "platform", "why")})
    b = config.rollout.prompts_per_round * config.rollout.group_size
    shards = batch_shards(p)
    if b % shards:
        raise ValueError(f"mesh preset {name}: a round's batch of {config.rollout.prompts_per_round} prompts x "
                         f"{config.rollout.group_size} samples = {b} does not split over data x fsdp = {shards}")
    return config
