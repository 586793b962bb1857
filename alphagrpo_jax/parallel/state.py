"""Creating NNX state already sharded, and helpers for stacked (scanned) parameters."""
from __future__ import annotations

import collections
from collections.abc import Callable, Hashable

import jax
from flax import nnx
from jax.sharding import Mesh

from alphagrpo_jax.parallel import rules as rules_lib


def param(value, axes: tuple[str | None, ...], **metadata) -> nnx.Param:
    """An `nnx.Param` with logical axis names (checked against the value's rank)."""
    if hasattr(value, "ndim") and value.ndim != len(axes):
        raise ValueError(f"axes {axes} do not match the rank of a value of shape {value.shape}")
    return nnx.Param(value, axes=tuple(axes), **metadata)


def prepend_axis(tree, name: str):
    """Adds logical name `name` in front of every Variable's `axes` (for params stacked by vmap/scan)."""
    for _, var in nnx.iter_graph(tree) if isinstance(tree, nnx.Module) else []:
        if isinstance(var, nnx.Variable) and rules_lib.axes_of(var) is not None:
            var.set_metadata("axes", (name,) + tuple(rules_lib.axes_of(var)))
    return tree


_ABSTRACT: collections.OrderedDict = collections.OrderedDict()  # key -> (graphdef, abstract State)
_ABSTRACT_SIZE = 16


def abstract_state(make_module: Callable[[], nnx.Module], key: Hashable | None = None):
    """(graphdef, abstract State) without allocating anything. `key`: hashable and equal exactly when
    `make_module` builds the same structure (e.g. ("bagel", its config)); the traced construction is then kept
    and reused (loading a release again traces nothing), and each call still gets Variables of its own."""
    if key is None:
        return nnx.split(nnx.eval_shape(make_module))
    if key not in _ABSTRACT:
        _ABSTRACT[key] = nnx.split(nnx.eval_shape(make_module))
        if len(_ABSTRACT) > _ABSTRACT_SIZE:
            _ABSTRACT.popitem(last=False)
    _ABSTRACT.move_to_end(key)
    graphdef, state = _ABSTRACT[key]
    return graphdef, jax.tree.map(lambda x: x, state)  # new Variables around the same ShapeDtypeStructs


def create_sharded(make_module: Callable[[], nnx.Module], mesh: Mesh, rules=rules_lib.DEFAULT_RULES):
    """Builds the module's state directly into its shardings (never on one device first).

    Returns (graphdef, state, shardings); `nnx.merge(graphdef, state)` gives the module.
    """
    graphdef, abs_state = abstract_state(make_module)
    shardings = rules_lib.state_shardings(abs_state, mesh, rules)

    def init():
        return nnx.split(make_module())[1]

    with rules_lib.use_rules(mesh, rules):
        state = jax.jit(init, out_shardings=shardings)()
    return graphdef, state, shardings
