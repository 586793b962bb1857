"""LoRA on BAGEL's LLM projections (q/k/v/o and the SwiGLU MLP of both experts), as the reference trains.

`add_lora` turns a loaded base model into one with adapters, reusing the base arrays (no copy) and creating
only the adapters, directly in their shardings, in the model's param dtype (the learner keeps fp32 masters of
them, rl/learner.py). A's init (`LORA_INITS`): "gaussian" (default, the reference's peft
`init_lora_weights="gaussian"`: std 1/rank) or "fan_in" (std fan_in^-1/2, this project's earlier default).
The reference policy is the same network with the adapters disabled (`keep_experts` / `disable_lora`: lora_b = 0,
exact; component_eval switches one expert's adapters off the same way).
`merge_lora` folds W + scale * A @ B into the base weights for export in the release layout.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from alphagrpo_jax.models.bagel import model as model_lib
from alphagrpo_jax.models.bagel.llm import GEN, UND, ExpertDense
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.parallel import state as state_lib


# name -> std of A's Gaussian init given (rank, fan_in)
LORA_INITS = {"gaussian": lambda rank, fan_in: 1.0 / rank, "fan_in": lambda rank, fan_in: fan_in ** -0.5}


def add_lora(base: model_lib.Bagel, rank: int, alpha: float, targets: tuple[str, ...], mesh: Mesh,
             key: jax.Array, rules=rules_lib.DEFAULT_RULES, init: str = "gaussian") -> model_lib.Bagel:
    """A Bagel with LoRA adapters (A ~ N(0, std^2) with std from LORA_INITS[init], B = 0) whose base params are
    `base`'s arrays."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if init not in LORA_INITS:
        raise ValueError(f"train.lora_init must be one of {sorted(LORA_INITS)}, got {init!r}")
    a_std = LORA_INITS[init]
    cfg = base.cfg.replace(lora_rank=rank, lora_alpha=alpha, lora_targets=tuple(targets))
    graphdef, state = state_lib.abstract_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), key=("bagel", cfg))
    abstract = nnx.merge(graphdef, state)
    shardings = dict(nnx.to_flat_state(rules_lib.state_shardings(state, mesh, rules)))
    base_flat = dict(nnx.to_flat_state(nnx.state(base)))
    fan_in = {path: int(np.prod(m.in_shape)) for path, m in nnx.iter_modules(abstract) if isinstance(m, ExpertDense)}
    adapters = {}  # flat index -> (variable, shape, dtype, std of A or None for B, sharding)
    for i, (path, var) in enumerate(nnx.to_flat_state(state)):
        if path in base_flat:
            var.set_value(base_flat[path].get_value())
            continue
        if path[-1] not in ("lora_a", "lora_b"):
            raise ValueError(f"{'/'.join(map(str, path))}: not in the base model and not a LoRA adapter")
        v = var.get_value()
        sharding = shardings[path] if not hasattr(shardings[path], "get_value") else shardings[path].get_value()
        std = a_std(rank, fan_in[path[:-1]]) if path[-1] == "lora_a" else None
        adapters[i] = (var, tuple(v.shape), jnp.dtype(v.dtype), std, sharding)
    specs = tuple((i, shape, dtype, std) for i, (_, shape, dtype, std, _) in adapters.items())
    values = _adapter_init(specs, tuple(sh for *_, sh in adapters.values()))(key)
    for (var, *_), value in zip(adapters.values(), values):
        var.set_value(value)
    return nnx.merge(graphdef, state)


@functools.lru_cache(maxsize=8)
def _adapter_init(specs: tuple, shardings: tuple):
    """One jitted program: key -> the adapters of `specs` ((flat index, shape, dtype, std of A or None for B = 0)),
    each in its sharding. A's entries are N(0, std^2) drawn with fold_in(key, flat index). Cached by the model's
    structure: rebuilding the same model (a resumed or repeated run in one process) traces nothing."""
    def init(key):
        return tuple(jnp.zeros(shape, dtype) if std is None else
                     (jax.random.normal(jax.random.fold_in(key, i), shape, jnp.float32) * std).astype(dtype)
                     for i, shape, dtype, std in specs)
    return jax.jit(init, out_shardings=shardings)


def keep_experts(state, experts: tuple[int, ...] = ()):
    """`state` (a tree of nnx Variables: a model's state or the learner's trainable) with the LoRA adapters of
    every MoT expert not in `experts` (llm.UND, llm.GEN) switched off: those lora_b slices set to 0, which gives
    exactly the base model's output there. () (default) switches every adapter off: the base model."""
    def f(path, var):
        if str(getattr(path[-1], "key", path[-1])) != "lora_b":
            return var
        value = var.get_value()
        if not experts:
            return var.replace(jnp.zeros_like(value))
        axes = tuple(var.get_metadata().get("axes") or ())
        if "expert" not in axes:
            raise ValueError(f"keep_experts: {jax.tree_util.keystr(path)} has no 'expert' axis: {axes}")
        shape = [1] * value.ndim
        shape[axes.index("expert")] = 2
        keep = jnp.array([e in experts for e in (UND, GEN)]).reshape(shape)
        return var.replace(jnp.where(keep, value, jnp.zeros((), value.dtype)))
    return jax.tree_util.tree_map_with_path(f, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def disable_lora(model: model_lib.Bagel) -> model_lib.Bagel:
    """The same network with every adapter's B zeroed: exactly the base model (the KL reference)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, keep_experts(jax.tree.map(lambda x: x, state)))


def merge_lora(model: model_lib.Bagel) -> model_lib.Bagel:
    """A LoRA-free Bagel with W + scale * A @ B folded into every adapted kernel (for export)."""
    cfg = model.cfg.replace(lora_rank=0, lora_alpha=0.0)
    graphdef, state = state_lib.abstract_state(lambda: model_lib.Bagel(cfg, nnx.Rngs(0)), key=("bagel", cfg))
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    scale = model.cfg.lora_scale
    for path, var in nnx.to_flat_state(state):
        w = flat[path].get_value()
        if path[-1] == "kernel" and path[:-1] + ("lora_a",) in flat:
            a = flat[path[:-1] + ("lora_a",)].get_value().astype(jnp.float32)
            b = flat[path[:-1] + ("lora_b",)].get_value().astype(jnp.float32)
            # a [L, 2, *in, r], b [L, 2, r, *out] -> delta [L, 2, *in, *out]
            n_in = a.ndim - 3
            ins = "mnop"[:n_in]
            outs = "stuv"[: b.ndim - 3]
            delta = jnp.einsum(f"le{ins}z,lez{outs}->le{ins}{outs}", a, b)
            w = (w.astype(jnp.float32) + scale * delta).astype(w.dtype)
        var.set_value(w)
    return nnx.merge(graphdef, state)


def trainable_filter(mode: str):
    """The nnx filter of trained variables: "lora" (adapters only) or "full" (every Param)."""
    if mode == "lora":
        return nnx.LoRAParam
    if mode == "full":
        return nnx.Param
    raise ValueError(f"train.params must be 'lora' or 'full', got {mode!r}")
