"""One query per row against a cache (attention_rows.py), the form a CPU decode step takes: the reference's
values and gradients, without the reference's copies of the cache."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel.attention import AppendMask, CacheMask, PackedMask
from tests.models.bagel.test_attention import random_qkv

S, D = 24, 16


def _mask(kind: str, b: int):
    kv_len = jnp.asarray([S, 0, 7, 13][:b], jnp.int32)  # full, empty and partly filled caches
    if kind == "append":
        ones = jnp.ones((b, 1), jnp.int32)
        return AppendMask(kv_len, PackedMask(ones, ones, jnp.zeros((b, 1), jnp.int32)))
    return CacheMask(kv_len, jnp.ones((b,), jnp.int32), causal=kind == "causal")


def _reference(q, k, v, mask, ck, cv):
    keys, values = attn.keys_and_values(k, v, mask, ck, cv)
    return attn.dot_product_attention(q, keys, values, attn.dense_mask(mask, ck.shape[1], q.shape[1]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("heads", [(6, 2), (4, 4), (3, 1)])
@pytest.mark.parametrize("kind", ["causal", "full", "append"])
def test_values_are_the_reference(kind, heads, dtype):
    hq, hk = heads
    q, k, v, ck, cv = random_qkv(4, 1, hq, hk, D, cache=S, dtype=dtype)
    mask = _mask(kind, 4)
    got = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]))(q, k, v, ck, cv)
    want = jax.jit(lambda *a: _reference(a[0], a[1], a[2], mask, *a[3:]))(q, k, v, ck, cv)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-6 if dtype == "float32" else 2 ** -7  # bf16: one rounding of the output, at most
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=tol, atol=tol)


def test_gradients_are_the_reference():
    q, k, v, ck, cv = random_qkv(3, 1, 6, 2, D, cache=S)
    mask = _mask("causal", 3)
    w = jax.random.normal(jax.random.key(3), q.shape)

    def grads(f):
        return jax.jit(jax.grad(lambda *a: jnp.sum(f(a[0], a[1], a[2], mask, *a[3:]) * w), argnums=range(5)))(
            q, k, v, ck, cv)

    for g, h in zip(grads(attn.attention), grads(_reference)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-5, atol=1e-6)


def _shapes(fn, *args) -> set[tuple[int, ...]]:
    """Every array shape an instruction of fn's optimized program outputs."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    return {tuple(int(n) for n in m.split(",") if n) for m in re.findall(r"= [a-z0-9]+\[([0-9,]*)\]", text)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_cache_is_read_in_place(dtype):
    """The reference builds [cache ; own] keys and transposes them to [B, Hk, D, S+1] and [B, Hk, S+1, D];
    the one-row form makes none of these copies (only free reshapes of the cache)."""
    b, hq, hk = 2, 6, 2
    q, k, v, ck, cv = random_qkv(b, 1, hq, hk, D, cache=S, dtype=dtype)
    mask = _mask("causal", b)
    copies = {(b, S + 1, hk, D), (b, hk, D, S + 1), (b, hk, S + 1, D)}
    assert copies & _shapes(lambda *a: _reference(a[0], a[1], a[2], mask, *a[3:]), q, k, v, ck, cv)
    assert not copies & _shapes(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]), q, k, v, ck, cv)


def test_more_than_one_query_keeps_the_reference():
    q, k, v, ck, cv = random_qkv(2, 3, 6, 2, D, cache=S)
    mask = CacheMask(jnp.asarray([S, 5], jnp.int32), jnp.asarray([3, 2], jnp.int32), causal=True)
    got = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]))(q, k, v, ck, cv)
    want = jax.jit(lambda *a: _reference(a[0], a[1], a[2], mask, *a[3:]))(q, k, v, ck, cv)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
