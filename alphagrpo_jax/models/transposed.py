"""Projection kernels held transposed, for the one-row products of a CPU decode loop.

A kernel [*in, *out] held as its transpose [*out, *in] (`Transposed`): a one- or few-row product then contracts
the minor dimension of both operands. On XLA:CPU that reads a bf16 weight about 1.8x faster than the [in, out]
layout (f32: no gain); at a hundred rows it is slower in bf16, so only the decode loop's copies
(`layers.presliced`) are made this way (docs/results/2026-12-07-bf16-backward.md). Values equal the [in, out]
product's (the same fp32-accumulated dot).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from alphagrpo_jax.models.einsum16 import is_16bit_float


@jax.tree_util.register_pytree_node_class
class Transposed:
    """`t` [*out, *in], the transpose of a kernel [*in, *out] with `n_in` input dims."""

    def __init__(self, t: jax.Array, n_in: int):
        self.t, self.n_in = t, n_in

    def tree_flatten(self):
        return (self.t,), self.n_in

    @classmethod
    def tree_unflatten(cls, n_in, children):
        return cls(children[0], n_in)

    @property
    def dtype(self):
        return self.t.dtype

    @property
    def shape(self) -> tuple[int, ...]:  # the kernel's, [*in, *out]
        k = self.t.ndim - self.n_in
        return tuple(self.t.shape[k:]) + tuple(self.t.shape[:k])

    @staticmethod
    def of(kernel: jax.Array, n_in: int) -> "Transposed":
        """The transpose of `kernel` [*in, *out] (a copy)."""
        return Transposed(jnp.transpose(kernel, tuple(range(n_in, kernel.ndim)) + tuple(range(n_in))), n_in)

    def matmul(self, x: jax.Array, out_dtype) -> jax.Array:
        """x [..., *in] @ kernel -> [..., *out] in `out_dtype`, accumulated in fp32 (one row as two: `two_rows`)."""
        k = self.t.ndim - self.n_in
        w_in, out_shape = math.prod(self.t.shape[k:]), self.t.shape[:k]
        t = self.t.reshape(-1, w_in)
        y = two_rows(lambda r: jnp.einsum("ab,cb->ac", r, t, preferred_element_type=jnp.float32),
                     x.reshape(-1, w_in).astype(self.t.dtype))
        return y.reshape(x.shape[:x.ndim - self.n_in] + out_shape).astype(out_dtype)


def two_rows(dot, x: jax.Array) -> jax.Array:
    """dot(x) for x [rows, ...], a single row computed as two and the first kept: XLA:CPU hands a one-row dot
    to its own kernel, which reads 16-bit weights as f32, and a two-row one to YNNPACK."""
    return dot(x) if x.shape[0] != 1 else dot(jnp.concatenate([x, x]))[:1]


def kernels(module, layer_state, split_cls):
    """`layer_state` (one layer of the stacked `module`) with each 16-bit projection kernel (a `kernel` of a
    module with `in_shape`: Dense, llm.ExpertDense) transposed; one per expert, as a `split_cls`
    (`layers.Split`) of them, where the kernel is a Split or has an expert axis."""
    out = []
    for path, var in nnx.to_flat_state(layer_state):
        owner = module
        for p in path[:-1]:
            owner = owner[p] if isinstance(p, int) else getattr(owner, p)
        v = var.get_value()
        if path[-1] == "kernel" and hasattr(owner, "in_shape") and is_16bit_float(v):
            n_in = len(owner.in_shape)
            if isinstance(v, split_cls) or v.ndim > n_in + len(owner.out_shape):  # per expert
                v = split_cls(Transposed.of(v[e], n_in) for e in range(v.shape[0]))
            else:
                v = Transposed.of(v, n_in)
            var = var.replace(v)
        out.append((path, var))
    return nnx.from_flat_state(out)


def stack_take(parts, i) -> Transposed:
    """parts[i] of a tuple of Transposed for a traced index i."""
    return Transposed(jnp.stack([p.t for p in parts])[i], parts[0].n_in)
