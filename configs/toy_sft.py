"""SFT of the toy base model (the GRPO trainer's starting point): 2000 steps, under 10 minutes on 2 CPU cores.

    python -m alphagrpo_jax.sft --config configs/toy_sft.py --config.workdir=runs/toy_sft \
        --config.export_dir=assets/toy_base
    python -m alphagrpo_jax.sft --config configs/toy_sft.py:fast --config.workdir=runs/toy_sft_fast  # ~3.5 minutes
    python -m alphagrpo_jax.sft --config configs/toy_sft.py:tiny --config.workdir=/tmp/sft_tiny   # smoke run

Variants (`:arg`): "" = the shipped base model; "fast" = the same recipe in 900 steps (a
weaker model: scattered 4x4-pixel tokens rather than shapes, docs/results/2026-11-30-toy-sft-base.md); "tiny" = a 1-layer
model for tests and smoke runs.
"""
import ml_collections


def get_config(arg: str | None = None):
    c = ml_collections.ConfigDict()
    c.plugins = ("alphagrpo_jax.toy.plugin",)  # registers the "toy" SFT data source (toy/sft_source.py)
    c.data_source = "toy"
    c.seed = 0
    c.workdir = "runs/toy_sft"
    c.export_dir = ""                  # "" = <workdir>/release
    c.model = "toy"                    # models/bagel/config.py preset
    c.model_llm = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                       intermediate_size=384)  # LLMConfig fields over the preset's
    c.model_overrides = dict(remat="experts")  # BagelConfig fields over the preset's (remat: layers.py)
    c.total_steps = 2000
    c.grad_accum = 1
    c.log_every = 10
    c.tensorboard = False
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    # weights: draw probabilities of t2i, think, understand, refine (long kinds end rows more often, so the
    # realised mix is logged as examples/*)
    # A 5-token system prompt (the release records it; the pipeline and the rollouts read it from there): a long
    # one would be a loss-free quarter of all tokens. 5 rows of 320 tokens carry ~14 documents per step.
    c.data = dict(seq_len=320, rows=5, weights=(0.15, 0.6, 0.1, 0.15), p_wrong_plan=0.3, p_drop_text=0.1,
                  p_drop_image=0.3, max_vae_per_row=16, max_vit_per_row=8, fill_retries=0,
                  system_prompt="Think, then draw.")
    c.tokenizer = dict(corpus_examples=2000)
    c.init = dict(zero_residual=True, identity_velocity=True, vae2llm_scale=0.15)  # see sft.init_params
    c.loss = dict(ce_weight=1.0, mse_weight=1.0, timestep_shift=3.0)
    c.optim = dict(lr=2e-3, warmup_steps=50, schedule="cosine", decay_steps=1950, min_lr=1e-4, b1=0.9, b2=0.95,
                   eps=1e-8, weight_decay=0.0, clip_norm=1.0)
    c.checkpoint = dict(every=200, keep=2, async_save=True)
    c.eval = dict(every=0, final=True, per_category=16, num_timesteps=25, cfg_text=2.0, shift=3.0, think=True,
                  think_tokens=96, think_temperature=0.3, cache_size=256, grid_per_category=4, grid_scale=3)
    c.export = dict(dtype="float32")
    if arg == "fast":
        c.total_steps = 900
        c.optim.decay_steps = 850
    elif arg == "tiny":
        c.model_llm = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                           intermediate_size=64)
        c.init.identity_velocity = False  # hidden 32 < 48 latent dims: no room for an identity
        c.total_steps = 8
        c.log_every = 1
        c.data.update(seq_len=320, rows=8)
        c.tokenizer.corpus_examples = 200
        c.optim.update(warmup_steps=2, decay_steps=6)
        c.checkpoint.every = 4
        c.eval.update(per_category=2, num_timesteps=4, think_tokens=16, grid_per_category=1)
    elif arg:
        raise ValueError(f"configs/toy_sft.py: unknown variant {arg!r}; use '', 'fast' or 'tiny'")
    return c
