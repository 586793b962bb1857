"""sampling/context.py: `live_size` buckets the live cache slots, `trim` keeps exactly those slots."""
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax.models.bagel import config as config_lib
from alphagrpo_jax.models.bagel.llm import KVCache
from alphagrpo_jax.sampling import context as ctx_lib


def _ctx(lengths, size=1024):
    cfg = config_lib.toy()
    c = ctx_lib.Context.empty(cfg, len(lengths), size)
    k = jnp.arange(c.cache.k.size, dtype=c.cache.k.dtype).reshape(c.cache.k.shape)
    return ctx_lib.Context(KVCache(k, -k, jnp.asarray(lengths, jnp.int32)), jnp.asarray(lengths, jnp.int32) + 3)


def test_live_size_is_a_power_of_two_bucket_of_the_longest_row():
    assert ctx_lib.live_size([_ctx([5, 0])]) == 64
    assert ctx_lib.live_size([_ctx([64, 3])]) == 64
    assert ctx_lib.live_size([_ctx([65, 3])]) == 128
    assert ctx_lib.live_size([_ctx([128, 3])]) == 128
    assert ctx_lib.live_size([_ctx([129, 3])]) == 256
    assert ctx_lib.live_size([_ctx([7]), _ctx([300])]) == 512       # the longest row of every context
    assert ctx_lib.live_size([_ctx([600], size=640)]) == 640        # never more than the caches hold
    assert ctx_lib.live_size([_ctx([70], size=96)]) == 96
    assert ctx_lib.live_size([_ctx([20])], smallest=16) == 32


def test_trim_keeps_the_first_slots_lengths_and_rope():
    ctx = _ctx([100, 7])
    cut = ctx_lib.trim(ctx, 128)
    assert cut.cache.size == 128
    np.testing.assert_array_equal(cut.cache.k, ctx.cache.k[:, :, :128])
    np.testing.assert_array_equal(cut.cache.v, ctx.cache.v[:, :, :128])
    np.testing.assert_array_equal(cut.cache.length, [100, 7])
    np.testing.assert_array_equal(cut.rope, [103, 10])
    assert ctx_lib.trim(ctx, 1024) is ctx and ctx_lib.trim(ctx, 2048) is ctx
