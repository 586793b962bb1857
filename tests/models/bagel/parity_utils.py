"""Shared helpers for the golden parity tests: load the tiny checkpoint through the real loader, tolerances."""
from __future__ import annotations

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alphagrpo_jax.models.bagel import checkpoint, config, model as model_lib
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.parallel import mesh as mesh_lib

GOLDENS = pathlib.Path(__file__).parents[2] / "goldens" / "bagel_tiny_a"
# fp32 port vs the fp32 goldens: the goldens sit within 1.1e-5 of a float64 reference; we reach ~3e-6.
FP32_ATOL = 5e-5


@functools.lru_cache(maxsize=None)
def load_model(precision: str = "fp32", **overrides):
    """The golden checkpoint as a Bagel on a 4 x 2 (fsdp, tensor) mesh; `overrides`: BagelConfig fields."""
    dt = "float32" if precision == "fp32" else "bfloat16"
    cfg = config.from_release_dir(str(GOLDENS), param_dtype=dt, dtype=dt, **overrides)
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    graphdef, state = checkpoint.load_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), model_lib.weight_map(cfg),
                                            str(GOLDENS / "ema.safetensors"), mesh)
    return cfg, nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=None)
def golden(name: str):
    return dict(np.load(GOLDENS / name))


@functools.lru_cache(maxsize=None)
def _tolerances():
    return json.loads((GOLDENS / "tolerances.json").read_text())


def bf16_tol(key: str, factor: float = 2.0) -> float:
    """A bf16 port vs the bf16asis goldens: `factor` x the measured fp32-vs-bf16asis gap of that array."""
    return factor * max(_tolerances()["max_abs_fp32_vs_bf16asis"][key], 1e-3)


def suffix(precision: str) -> str:
    return "_fp32" if precision == "fp32" else "_bf16asis"


def prefill(m, ids, positions, cache_size=192, causal=True, cache=None, routing=None, embeds=None):
    """Prefills one block (batch 1) into a (new) cache; returns (hidden, cache, layer_outputs)."""
    cfg = m.cfg
    if cache is None:
        cache = KVCache.zeros(cfg, 1, cache_size)
    x = m.embed_text(jnp.asarray(ids)[None]) if embeds is None else embeds
    n = x.shape[1]
    mask = CacheMask(cache.length, jnp.full((1,), n, jnp.int32), causal)
    return m.language_model(x, jnp.asarray(positions)[None], routing or Routing.und(), mask, cache,
                            write_cache=True, return_layer_outputs=True)


def greedy(m, cache, start_token, start_pos, steps):
    """Naive greedy decoding with the KV cache (the real decoder lives in sampling/); returns (ids, logits)."""

    @jax.jit
    def step(m, cache, tok, pos):
        h, cache, _ = m.language_model(m.embed_text(tok[None, None]), pos[None, None], Routing.und(),
                                       CacheMask(cache.length, jnp.ones((1,), jnp.int32), True), cache,
                                       write_cache=True)
        return m.logits(h[0, 0]), cache

    toks, logits = [int(start_token)], []
    for s in range(steps):
        lg, cache = step(m, cache, jnp.int32(toks[-1]), jnp.int32(start_pos + s))
        logits.append(np.asarray(lg))
        toks.append(int(np.argmax(logits[-1])))
    return toks, np.stack(logits)


@functools.lru_cache(maxsize=None)
def load_vae():
    from alphagrpo_jax.models.bagel import vae as vae_lib

    cfg = config.from_release_dir(str(GOLDENS))
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    graphdef, state = checkpoint.load_state(lambda: vae_lib.AutoEncoder(cfg.vae, rngs=nnx.Rngs(0)),
                                            vae_lib.weight_map(cfg.vae), str(GOLDENS / "ae.safetensors"), mesh)
    return nnx.merge(graphdef, state)
