"""Benchmark evaluation: the one source of the harness's defaults (docs/evaluation.md).

    python -m alphagrpo_jax.evaluate --benchmark toy --release assets/toy_base --out eval/toy_base
    python -m alphagrpo_jax.evaluate --config configs/eval_base.py:geneval --config.data=PATH --config.release=DIR \
        --config.out=gs://bucket/eval/geneval

`get_config(benchmark)` sets the benchmark's paper defaults (the AlphaGRPO tables: 512 px; GenEval 4 images per
prompt; TIIF short and long descriptions; WISE verified). The flags of `python -m alphagrpo_jax.evaluate`
(--benchmark, --release, ...) set the keys of the same names.
"""
import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.benchmark = arg or "toy"
    c.variant = ""            # "" = the benchmark's first: tiif testmini | test[_short|_long]; wise verified | legacy
    c.data = ""               # the user's copy of the official prompt files (the toy benchmark: "" = built in)
    c.release = ""            # a BAGEL release folder, or:
    c.workdir = ""            # a training run's workdir (LoRA merged on the fly) at
    c.step = -1               # checkpoint step (-1: the latest)
    c.out = ""                # output folder (local or gs://)
    c.model_name = "alphagrpo"  # the model folder of TIIF / GEdit layouts
    c.plugins = ()            # plug-in modules to import (the toy benchmark: "alphagrpo_jax.toy.plugin")
    c.limit = 0               # only the first N prompts (0 = all); scores then are not comparable
    c.compare = ""            # other evaluations' --out folders (comma-separated): report tables side by side
    c.scores_from = ""        # GenEval: its detector's results.jsonl, summarised into scores.json
    c.transform = ""          # input-image resize rules: "" = the benchmark's; "bagel" | "toy" (32 px)
    c.dtype = ""              # override the release's param/activation dtype, e.g. "float32"
    c.cache_size = 4096       # KV cache slots per sample
    c.generation = ml_collections.ConfigDict(dict(
        height=512, width=512, images_per_prompt=0, num_timesteps=50, cfg_text=4.0, cfg_img=0.0,
        cfg_interval=(0.4, 1.0), shift=3.0, think=False, think_tokens=1024, think_temperature=0.3, batch_size=4,
        seed=0))
    c.records = ""            # DVReward question sets of the prompts (JSONL, matched by prompt text): for refinement
    #                           gates and the DVReward score (the toy benchmark derives its own)
    c.dvreward = ml_collections.ConfigDict(dict(  # DVReward as a score for any benchmark (endpoint "" = off)
        endpoint="", model="Qwen/Qwen3-VL-30B-A3B-Instruct", api_key_env="OPENAI_API_KEY", image_format="jpeg"))
    c.refine = ml_collections.ConfigDict(dict(
        rounds=0, gate="self", threshold=0.9, reflection="", verifier_endpoint="",
        verifier_model="Qwen/Qwen3-VL-30B-A3B-Instruct"))
    c.judge = ml_collections.ConfigDict(dict(
        endpoint="", model="", api_key_env="OPENAI_API_KEY", concurrency=8, max_retries=5, timeout_s=300.0,
        temperature=0.0,
        templates=ml_collections.ConfigDict({k: "" for k in ("tiif_yes_no", "wise_legacy", "wise_verified",
                                                               "gedit_sc", "gedit_pq")})))
    if c.benchmark == "toy":  # the toy world: 32 px, the toy base's sampling settings (configs/toy_sft.py eval)
        c.plugins = ("alphagrpo_jax.toy.plugin",)
        c.generation.update(dict(height=32, width=32, num_timesteps=25, cfg_text=2.0, think_tokens=64, batch_size=8))
        c.cache_size = 256
    return c
