"""Two-operand einsum of 16-bit floats whose backward pass multiplies 16-bit operands too.

`einsum16(spec, x, w)` is `jnp.einsum(spec, x, w, preferred_element_type=float32)`. When x and w share one
16-bit float dtype (bf16 weights and activations), its gradients first round the fp32 output cotangent g to
that dtype, then accumulate in fp32 and return each gradient in its operand's dtype:

    dx = einsum(g16, w) -> x.dtype        dw = einsum(x, g16) -> w.dtype

This is the reference's mixed precision (torch autocast: a bf16 linear's output, and so its gradient, is bf16).
JAX's own transpose of the dot multiplies the fp32 cotangent by the operand promoted to fp32 instead: an fp32
matmul plus a converted copy of every weight (on CPU at the fp32 rate, a quarter of AMX's bf16; on TPU, whose
default precision rounds fp32 matmul inputs to bf16 anyway, only the copies). Other dtypes, and specs where an
operand has a dimension that is neither contracted with the other nor kept in the output, take the plain
einsum and JAX's gradient.

Remat policies look for dot primitives, which a custom_vjp hides: the output is tagged with `checkpoint_name`
NAME (no batch dims) or BATCH_NAME, and layers.REMAT_POLICIES saves those names where it saves dots.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

_16BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_FREE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # letters for an expanded "..." (specs here use lower case)
NAME, BATCH_NAME = "einsum16", "einsum16_batch"


def einsum16(spec: str, x: jax.Array, w: jax.Array, cpu: bool = False) -> jax.Array:
    """jnp.einsum(spec, x, w) accumulated in fp32 (fp32 output), with 16-bit backward dots (module doc).
    `cpu`: the program is for XLA:CPU (see `_merged_einsum`)."""
    explicit = _explicit(spec, x.ndim, w.ndim) if x.dtype == w.dtype and is_16bit_float(x) else None
    if explicit is None:
        return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)
    xs, ws = explicit.partition("->")[0].split(",")
    batch = set(xs) & set(ws) & set(explicit.partition("->")[2])
    return checkpoint_name(_einsum16(explicit, cpu, x, w), BATCH_NAME if batch else NAME)


def is_16bit_float(a) -> bool:
    """a's dtype is bfloat16 or float16."""
    return jnp.dtype(a.dtype) in _16BIT


def _explicit(spec: str, x_ndim: int, w_ndim: int) -> str | None:
    """`spec` with "..." spelled out in capitals, or None if its gradients are not both einsums of it."""
    lhs, _, out = spec.replace(" ", "").partition("->")
    xs, _, ws = lhs.partition(",")
    if "..." in ws or not out or len(xs) - 3 * ("..." in xs) > x_ndim:
        return None
    if "..." in xs:
        free = _FREE[:x_ndim - (len(xs) - 3)]
        xs, out = xs.replace("...", free), out.replace("...", free)
    operands = (xs, ws, out)
    if "..." in out or len(ws) != w_ndim or any(len(set(s)) != len(s) for s in operands):
        return None
    for i, s in enumerate(operands):  # each letter must appear in one of the other two
        if not set(s) <= set(operands[i - 1]) | set(operands[i - 2]):
            return None
    return f"{xs},{ws}->{out}"


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _einsum16(spec, cpu, x, w):
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)


def _einsum16_fwd(spec, cpu, x, w):
    return _einsum16(spec, cpu, x, w), (x, w)


def _einsum16_bwd(spec, cpu, residuals, g):
    x, w = residuals
    lhs, _, out = spec.partition("->")
    xs, _, ws = lhs.partition(",")
    g = g.astype(x.dtype)
    dot = _merged_einsum if cpu else functools.partial(jnp.einsum, preferred_element_type=jnp.float32)
    return dot(f"{out},{ws}->{xs}", g, w).astype(x.dtype), dot(f"{xs},{out}->{ws}", x, g).astype(w.dtype)


def _merged_einsum(spec, a, b):
    """jnp.einsum(spec, a, b) in fp32 with every run of letters that moves as one block (adjacent, in the same
    order, in each term that has any of them) reshaped into one dimension first. XLA:CPU fails at run time
    ("Unsupported element type for DotThunk") on some bf16 x bf16 -> f32 dots whose operands it reshapes
    itself, e.g. "Am,Ano->mno"; given as "Am,AN->mN" they run (on YNNPACK). Other platforms take the plain
    einsum: a merge across sharded dimensions can force a reshard."""
    lhs, _, out = spec.partition("->")
    terms = (*lhs.split(","), out)

    def follows(c, d):  # d right after c in every term with c, and in no other
        return all((c in t) == (d in t) and (c not in t or t.index(d) == t.index(c) + 1) for t in terms)

    run_of = {}
    for t in terms:
        for i, c in enumerate(t):
            if c not in run_of:
                run_of[c] = c if i == 0 or not follows(t[i - 1], c) else run_of[t[i - 1]]
    size = {c: n for t, x in zip(terms, (a, b)) for c, n in zip(t, x.shape)}

    def merge(t, x=None):
        keep = "".join(c for c in t if run_of[c] == c)
        if x is None:
            return keep
        shape = [math.prod(size[d] for d in t if run_of[d] == c) for c in keep]
        return keep, x.reshape(shape)

    (ta, a), (tb, b) = merge(terms[0], a), merge(terms[1], b)
    y = jnp.einsum(f"{ta},{tb}->{merge(out)}", a, b, preferred_element_type=jnp.float32)
    return y.reshape([size[c] for c in out])


_einsum16.defvjp(_einsum16_fwd, _einsum16_bwd)
