"""Transposed projection kernels of a CPU decode loop (`layers.presliced`): the product equals `layers.matmul`'s,
the loop's copies hold 16-bit kernels transposed (f32 ones as they are), and a step of the tiny release's LLM
inside `presliced` equals the scanned one."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models import layers, transposed
from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.models.transposed import Transposed
from alphagrpo_jax.parallel import mesh as mesh_lib
from tests.models.bagel.parity_utils import GOLDENS


@pytest.mark.parametrize("spec,x_shape,k_shape,n_in", [
    ("...m,mno->...no", (1, 1, 16), (16, 4, 8), 1),   # q_proj-like: [d] -> [heads, head_dim], one row
    ("...m,mno->...no", (3, 2, 16), (16, 4, 8), 1),   # several rows
    ("...mn,mno->...o", (1, 1, 4, 8), (4, 8, 16), 2),  # o_proj-like: [heads, head_dim] -> [d]
])
def test_product_equals_matmul(spec, x_shape, k_shape, n_in):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.bfloat16)
    k = jnp.asarray(rng.normal(size=k_shape), jnp.bfloat16)
    t = Transposed.of(k, n_in)
    assert t.shape == k.shape and t.dtype == k.dtype
    assert t.t.shape == k.shape[n_in:] + k.shape[:n_in]
    got = jax.jit(lambda x, t: layers.matmul(x, t, spec, dtype=jnp.float32))(x, t)
    want = jax.jit(lambda x, k: layers.matmul(x, k, spec, dtype=jnp.float32))(x, k)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_presliced_step_equals_the_scan(dtype, monkeypatch):
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 0)  # the tiny layers are far below the real threshold
    rel = release.load_release(str(GOLDENS), mesh_lib.make_mesh({"fsdp": -1}), param_dtype=dtype, dtype=dtype)
    graphdef, state = nnx.split(rel.model)
    c = rel.cfg.llm
    rng = np.random.default_rng(0)
    cache = KVCache.zeros(rel.cfg, 2, 8)
    cache = KVCache(jnp.asarray(rng.normal(size=cache.k.shape), dtype), jnp.asarray(rng.normal(size=cache.v.shape),
                    dtype), jnp.asarray([5, 3], jnp.int32))
    x = jnp.asarray(rng.normal(size=(2, 1, c.hidden_size)), dtype)
    seen = []

    @functools.partial(jax.jit, static_argnums=3)
    def step(state, cache, x, presliced):
        m = nnx.merge(graphdef, state)
        mask = CacheMask(cache.length, jnp.ones((2,), jnp.int32), True)
        run = lambda: m.language_model(x, cache.length[:, None], Routing.und(), mask, cache)[0]  # noqa: E731
        if not presliced:
            return run()
        with layers.presliced(m.language_model.layers):
            (_, _, copies), = layers._PRESLICED.get()
            seen.append(copies[0]["q_proj"]["kernel"].get_value())
            return run()

    got = step(state, cache, x, True)
    kernel = seen[0]
    # The reference: the scan in f32; in bf16 the same layer copies untransposed (the unrolled layers round
    # bf16 activations in other places than the scan's program: XLA's excess precision).
    with monkeypatch.context() as mp:
        if dtype == "bfloat16":
            mp.setattr(transposed, "kernels", lambda module, layer_state, split_cls: layer_state)
        want = jax.jit(step.__wrapped__, static_argnums=3)(state, cache, x, dtype == "bfloat16")
    if dtype == "bfloat16":  # per expert, transposed
        assert isinstance(kernel, layers.Split) and all(isinstance(p, Transposed) for p in kernel.parts)
    else:
        assert not isinstance(kernel, layers.Split) and kernel.shape[0] == 2
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), rtol=1e-6, atol=1e-6)
