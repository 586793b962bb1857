"""Logical axis names -> mesh axes: one rules table, used for every param and key activation.

Params carry their logical names in the Variable metadata key `axes` (see `axes_of`), e.g.
`nnx.Param(w, axes=("embed", "mlp"))`. We do not use Flax's `out_sharding` metadata because Flax then
shards eagerly at construction, before a mesh and our rules are known.

Activations are annotated with `constrain(x, ("batch", "length", "act_embed"))`, which applies a sharding
constraint whenever a rules context (`use_rules`) is active, on every platform (CPU tests see real
shardings).

A param dimension that its rule's mesh axes do not divide (ViT heads 3 over tensor 2; BAGEL-7B's 4 KV heads
over tensor 8) is replicated instead, as activations are (`constrain`), with one logged note per (rule,
reason), not one per array.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("alphagrpo_jax.parallel.rules")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Batch over (data, fsdp); weights' embed dim over fsdp (ZeRO-3 style), heads/mlp/vocab over tensor.
# Activation names start with `act_`: their embed dim must not reuse `fsdp`, which the batch already uses.
DEFAULT_RULES: Rules = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("kv_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_latent", None),
    # LLM params
    ("layers", None),
    ("expert", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("latent", None),
    ("freq", None),
    ("table", None),
    # vision tower
    ("vit_embed", "fsdp"),
    ("vit_heads", "tensor"),
    ("vit_mlp", "tensor"),
    ("vit_patch", None),
    # autoencoder (small; replicated)
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", None),
    # LoRA
    ("lora_rank", None),
)


class ShardingRulesError(ValueError):
    """A logical name or mesh axis in the rules does not fit the mesh or the array."""


def merge_rules(base: Rules, overrides: Mapping[str, object] | Iterable | None) -> Rules:
    """Returns `base` with entries replaced (or added) by `overrides` (name -> axis / tuple / None)."""
    if not overrides:
        return tuple(base)
    over = dict(overrides.items() if isinstance(overrides, Mapping) else overrides)
    out = [(n, over.pop(n)) if n in over else (n, a) for n, a in base]
    out += list(over.items())
    return tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in out)


def validate_rules(rules: Rules, mesh: Mesh) -> None:
    """Every mesh axis named by the rules must exist in the mesh."""
    bad = []
    for name, target in rules:
        for axis in _as_tuple(target):
            if axis not in mesh.axis_names:
                bad.append(f"{name!r} -> {axis!r}")
    if bad:
        raise ShardingRulesError(
            f"rules map logical names to mesh axes that do not exist: {', '.join(bad)}; "
            f"mesh axes are {mesh.axis_names}")


def _as_tuple(target) -> tuple[str, ...]:
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def shard_count(entry, mesh: Mesh) -> int:
    """How many shards a PartitionSpec entry (None, an axis name or a tuple of them) cuts a dimension into."""
    n = 1
    for a in _as_tuple(entry):
        n *= mesh.shape[a]
    return n


def logical_to_spec(names: Sequence[str | None], rules: Rules, mesh: Mesh) -> PartitionSpec:
    """Maps logical dimension names to a PartitionSpec; `None` names stay unsharded."""
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in names:
        if name is None:
            out.append(None)
            continue
        if name not in table:
            raise ShardingRulesError(f"logical axis {name!r} is not in the rules table")
        axes = tuple(a for a in _as_tuple(table[name]) if mesh.shape.get(a, None) is not None)
        missing = [a for a in _as_tuple(table[name]) if a not in mesh.axis_names]
        if missing:
            raise ShardingRulesError(f"rule {name!r} -> {missing} names axes missing from mesh {mesh.axis_names}")
        if used & set(axes):
            raise ShardingRulesError(f"mesh axis {sorted(used & set(axes))} used twice in {tuple(names)}")
        used |= set(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def axes_of(var: nnx.Variable) -> tuple[str | None, ...] | None:
    return var.get_metadata().get("axes", None)


def divisible_spec(shape: Sequence[int], names: Sequence[str | None], spec: PartitionSpec, mesh: Mesh,
                   notes: dict | None = None) -> PartitionSpec:
    """`spec` with every dimension that its mesh axes do not divide replicated instead. `notes` collects
    {(rule, reason): number of dimensions} for the log."""
    out = list(spec)
    for d, (size, entry) in enumerate(zip(shape, spec)):
        n = shard_count(entry, mesh)
        if size % n:
            out[d] = None
            if notes is not None:
                key = (names[d], f"size {size} is not divisible by {'x'.join(_as_tuple(entry))} ({n})")
                notes[key] = notes.get(key, 0) + 1
    return PartitionSpec(*out)


def state_shardings(state, mesh: Mesh, rules: Rules):
    """NamedSharding for every Variable of an (abstract) nnx.State, from its `axes` metadata.

    Every array Variable must carry `axes` of its rank (all problems are reported together). A dimension that
    its rule's mesh axes do not divide is replicated (`divisible_spec`), logged once per (rule, reason).
    """
    validate_rules(rules, mesh)
    problems: list[str] = []
    notes: dict = {}

    def one(path, var):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        shape = getattr(var.get_value(), "shape", ())
        axes = axes_of(var)
        if axes is None:
            if len(shape) == 0:
                return NamedSharding(mesh, PartitionSpec())
            problems.append(f"{name}: no `axes` metadata (shape {tuple(shape)})")
            return NamedSharding(mesh, PartitionSpec())
        if len(axes) != len(shape):
            problems.append(f"{name}: axes {axes} do not match rank of shape {tuple(shape)}")
            return NamedSharding(mesh, PartitionSpec())
        try:
            spec = logical_to_spec(axes, rules, mesh)
        except ShardingRulesError as e:
            problems.append(f"{name}: {e}")
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, divisible_spec(shape, axes, spec, mesh, notes))

    out = jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    if problems:
        raise ShardingRulesError("cannot shard parameters:\n  " + "\n  ".join(problems))
    for (rule, reason), count in sorted(notes.items()):
        log.warning("sharding rule %r: %s on mesh %s; that dimension is replicated instead (%d arrays)", rule,
                    reason, dict(mesh.shape), count)
    return out


# ----------------------------------------------------------------------------------------------------------
# Activation constraints

_CTX: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar("alphagrpo_rules", default=None)


@contextlib.contextmanager
def use_rules(mesh: Mesh, rules: Rules = DEFAULT_RULES):
    """Activates `constrain` (and makes `mesh` the current mesh) for code traced inside the block."""
    validate_rules(rules, mesh)
    token = _CTX.set((mesh, tuple(rules)))
    try:
        with jax.set_mesh(mesh):
            yield
    finally:
        _CTX.reset(token)


def current() -> tuple[Mesh, Rules] | None:
    return _CTX.get()


def named_sharding(names: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for logical `names` under the active rules context (required)."""
    ctx = _CTX.get()
    if ctx is None:
        raise ShardingRulesError("named_sharding() needs an active `use_rules(mesh, rules)` context")
    mesh, rules = ctx
    return NamedSharding(mesh, logical_to_spec(names, rules, mesh))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; identity when no rules context is active.

    Dimensions that the mapped mesh axes do not divide are left unsharded (activations such as a batch of 1
    must still run), as for params.
    """
    ctx = _CTX.get()
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(x, activation_sharding(x.shape, names, *ctx))


def activation_sharding(shape: Sequence[int], names: Sequence[str | None], mesh: Mesh,
                        rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """The sharding `constrain` gives an activation of `shape`: dimensions the mapped mesh axes do not divide
    stay unsharded. Also what ahead-of-time compiles use for abstract activations (caches, rollouts)."""
    if len(names) != len(shape):
        raise ShardingRulesError(f"constrain: names {tuple(names)} do not match rank {len(shape)} of {tuple(shape)}")
    return NamedSharding(mesh, divisible_spec(shape, names, logical_to_spec(names, rules, mesh), mesh))


def replicated_fraction(state, shardings, min_size: int = 1 << 20) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of arrays with at least `min_size` elements that are fully replicated."""
    out = []
    leaves = jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    shard_leaves = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    for (path, var), sh in zip(leaves, shard_leaves):
        shape = tuple(getattr(var.get_value() if isinstance(var, nnx.Variable) else var, "shape", ()))
        size = 1
        for s in shape:
            size *= s
        if size >= min_size and all(e is None for e in sh.spec):
            out.append(("/".join(str(getattr(p, "key", p)) for p in path), shape))
    return out
