"""Shared by the GPU-only tests: the "is there a GPU" gate and the tiny golden checkpoint loaded onto one GPU.

Run them on a GPU host with `python -m pytest tests/gpu --confcutdir=tests/gpu` (launch/gpu_check.sh does):
tests/conftest.py pins the CPU platform (8 simulated devices) for the CPU suite, so under it these tests skip.
"""
from __future__ import annotations

import functools
import os

import jax
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel import checkpoint, config, model as model_lib
from alphagrpo_jax.parallel import mesh as mesh_lib
from tests.models.bagel.parity_utils import GOLDENS


def gpus() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # "Unknown backend: 'gpu' requested, but no platforms ... are present"
        return []


def require_gpu() -> None:
    """Skips the calling module when jax sees no GPU; with ALPHAGRPO_REQUIRE_GPU=1 (set by
    launch/gpu_check.sh) a missing GPU fails instead, so a broken CUDA install cannot pass as "all skipped"."""
    if gpus():
        return
    reason = (f"needs a CUDA GPU: jax.devices('gpu') found none (platforms: "
              f"{sorted({d.platform for d in jax.devices()})}, JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS')!r}); "
              "run `launch/gpu_check.sh` on a GPU host")
    if os.environ.get("ALPHAGRPO_REQUIRE_GPU") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def on_gpu(x: jax.Array) -> bool:
    return all(d.platform == "gpu" for d in x.devices())


@functools.lru_cache(maxsize=None)
def load_model(precision: str = "bf16", attention: str = "jnp"):
    """(cfg, model) of tests/goldens/bagel_tiny_a on one GPU (parity is about numerics, not sharding)."""
    dt = "float32" if precision == "fp32" else "bfloat16"
    cfg = config.from_release_dir(str(GOLDENS), param_dtype=dt, dtype=dt, attention=attention)
    mesh = mesh_lib.make_mesh({"fsdp": 1}, devices=gpus()[:1])
    graphdef, state = checkpoint.load_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), model_lib.weight_map(cfg),
                                            str(GOLDENS / "ema.safetensors"), mesh)
    return cfg, nnx.merge(graphdef, state)
