"""Load a BAGEL release folder as a whole: config, LLM/ViT weights, autoencoder, tokenizer.

    ema.safetensors, llm_config.json, vit_config.json, [bagel_config.json], ae.safetensors (FLUX kind),
    tokenizer files (vocab.json, merges.txt, tokenizer_config.json or tokenizer.json)

Without tokenizer files the release still loads for image-only work: its `tokenizer` is a MissingTokenizer
that raises the one-line TokenizerError on first text use.

The folder may be local or on gs:// (alphagrpo_jax/paths.py): weights are read tensor by tensor either way.
"""
from __future__ import annotations

import dataclasses

from flax import nnx
from jax.sharding import Mesh

from alphagrpo_jax import paths
from alphagrpo_jax import hub
from alphagrpo_jax.models.bagel import checkpoint, config as config_lib, model as model_lib, vae as vae_lib
from alphagrpo_jax.models.bagel.pixel_ae import PixelAutoEncoder
from alphagrpo_jax.models.bagel.tokenizer import MissingTokenizer, load_tokenizer, missing_files
from alphagrpo_jax.models.bagel.vae import AutoEncoder
from alphagrpo_jax.parallel import rules as rules_lib


@dataclasses.dataclass
class Release:
    cfg: config_lib.BagelConfig
    model: model_lib.Bagel
    vae: nnx.Module
    tokenizer: object


def make_autoencoder(cfg: config_lib.BagelConfig, rngs: nnx.Rngs | None = None):
    """The configured autoencoder module (random init for FLUX; the pixel kind has no parameters)."""
    if cfg.vae.kind == "pixel":
        return PixelAutoEncoder(cfg.vae)
    return AutoEncoder(cfg.vae, rngs=rngs or nnx.Rngs(0))


def load_autoencoder(path: str, cfg: config_lib.BagelConfig, mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    if cfg.vae.kind == "pixel":
        return make_autoencoder(cfg)
    graphdef, state = checkpoint.load_state(lambda: make_autoencoder(cfg), vae_lib.weight_map(cfg.vae),
                                            paths.join(path, "ae.safetensors"), mesh, rules,
                                            key=("autoencoder", cfg.vae))
    return nnx.merge(graphdef, state)


def load_release(path: str, mesh: Mesh, rules=rules_lib.DEFAULT_RULES, **overrides) -> Release:
    """Everything in a release folder, sharded on `mesh`. `overrides` replace BagelConfig fields (e.g.
    param_dtype="float32", attention="splash"). `path` may be a Hugging Face Hub id (alphagrpo_jax/hub.py)."""
    path = hub.resolve(path, "release")
    if not paths.isdir(path):
        raise checkpoint.CheckpointError(f"{path}: release folder not found")
    cfg = config_lib.from_release_dir(path, **overrides)
    graphdef, state = checkpoint.load_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), model_lib.weight_map(cfg),
                                            paths.join(path, "ema.safetensors"), mesh, rules, key=("bagel", cfg))
    model = nnx.merge(graphdef, state)
    missing = missing_files(path)
    tokenizer = MissingTokenizer(missing) if missing is not None else load_tokenizer(path, cfg.tokens)
    return Release(cfg, model, load_autoencoder(path, cfg, mesh, rules), tokenizer)
