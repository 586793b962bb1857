"""Content checksums and finiteness of pytrees of arrays (checkpoints, restored and loaded params, gradients).

    digests, bad = integrity.inspect(state)     # {leaf name: "16 hex digits"}, [names of non-finite leaves]
    integrity.nonfinite_leaves(grads)           # just the finiteness part

A leaf's digest is two 32-bit sums over its elements of murmur3's finaliser applied to (bits XOR a position
key), with two different seeds. It is computed on the device over the GLOBAL array, and integer addition is
exact and order-free, so the digest does not depend on the sharding, the mesh or the number of hosts: a
checkpoint saved on one topology verifies after a restore onto another. Any change of one element changes it;
random damage goes unnoticed with probability ~2^-64. (Not a cryptographic hash: it guards against storage
faults, not against an adversary.) Leaf names are the '/'-joined key paths (e.g. `params/layers/0/w`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from alphagrpo_jax.parallel import hostdata

_SEEDS = (0x9E3779B9, 0x7F4A7C15)


class NonFiniteError(FloatingPointError):
    """Non-finite values where training needs finite ones (the message names the step and the leaves)."""


def leaf_names(tree) -> list[str]:
    """'/'-joined key paths of `tree`'s leaves, in `jax.tree.leaves` order."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in flat]


def _fmix(h):
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _words(x) -> jax.Array:
    """The bits of `x` as a flat uint32 vector (one word per element of <= 4 bytes; 8-byte elements give 2)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    size = x.dtype.itemsize
    if size >= 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    small = jnp.uint16 if size == 2 else jnp.uint8
    return jax.lax.bitcast_convert_type(x, small).reshape(-1).astype(jnp.uint32)


@jax.jit
def _inspect(leaves):
    """uint32[n, 2] digests and bool[n] all-finite flags of `leaves`."""
    digests, finite = [], []
    for x in leaves:
        w = _words(x)
        pos = jnp.arange(w.shape[0], dtype=jnp.uint32)
        digests.append(jnp.stack([jnp.sum(_fmix(w ^ (pos * jnp.uint32(0x85EBCA77) + jnp.uint32(s))),
                                          dtype=jnp.uint32) for s in _SEEDS]))
        finite.append(jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True))
    return jnp.stack(digests) if digests else jnp.zeros((0, 2), jnp.uint32), jnp.stack(finite) if finite else \
        jnp.zeros((0,), jnp.bool_)


@jax.jit
def _finite(leaves):
    flags = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.stack(flags) if flags else jnp.zeros((0,), jnp.bool_)


def inspect(tree) -> tuple[dict[str, str], list[str]]:
    """({leaf name: digest as 16 hex digits}, [names of leaves holding a NaN or an infinity]) in one device pass."""
    names, leaves = leaf_names(tree), [jnp.asarray(x) for x in jax.tree.leaves(tree)]
    digests, finite = (hostdata.to_host(a) for a in _inspect(leaves))
    return ({n: f"{int(d[0]):08x}{int(d[1]):08x}" for n, d in zip(names, digests)},
            [n for n, ok in zip(names, finite) if not ok])


def nonfinite_leaves(tree) -> list[str]:
    """Names of the floating-point leaves of `tree` that hold a NaN or an infinity (in leaf order)."""
    named = [(n, jnp.asarray(x)) for n, x in zip(leaf_names(tree), jax.tree.leaves(tree))]
    named = [(n, x) for n, x in named if jnp.issubdtype(x.dtype, jnp.inexact)]
    finite = hostdata.to_host(_finite([x for _, x in named]))
    return [n for (n, _), ok in zip(named, finite) if not ok]


def describe(names: list[str], limit: int = 3) -> str:
    """`a, b, c (+4 more)`: a short list of leaf names for an error message."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
