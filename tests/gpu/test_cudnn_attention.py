"""cuDNN attention (`cfg.attention="cudnn"`) against the jnp reference on a GPU: the kernel alone on packed
training masks, KV-cache masks (causal and full) and appended blocks, with GQA and lengths that need padding;
then the whole tiny model. Every case first checks that cuDNN really runs: shorter query blocks, other dtypes
or a non-GPU program would send `attend` to the jnp reference, and the comparison would prove nothing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import attention as attn_lib
from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL, NOISE, AppendMask, CacheMask, PackedMask
from alphagrpo_jax.models.bagel.llm import Routing
from alphagrpo_jax.sampling.image import grid_positions
from tests.gpu.gpu_utils import load_model, on_gpu, require_gpu
from tests.models.bagel.parity_utils import bf16_tol, prefill

require_gpu()

B, HQ, HK, D = 2, 8, 2, 64  # 4 query heads per KV head
ATOL = RTOL = 2e-2  # bf16 outputs: a few ulps of |out| ~ 1; a wrong mask moves them by O(0.1 .. 1)


def _qkv(seed, lq, cache):
    ks = jax.random.split(jax.random.key(seed), 5)
    q, k, v = (jax.random.normal(kk, (B, lq, h, D), jnp.bfloat16) for kk, h in zip(ks[:3], (HQ, HK, HK)))
    ck, cv = (jax.random.normal(kk, (B, cache, HK, D), jnp.bfloat16) for kk in ks[3:])
    return q, k, v, ck, cv


def _packed(rows, length):
    """PackedMask from rows of documents, each a list of (mode, n_tokens) splits; the rest of a row pads."""
    seg, split, mode = (np.zeros((len(rows), length), np.int32) for _ in range(3))
    for r, docs in enumerate(rows):
        pos, sid = 0, 1
        for doc, splits in enumerate(docs, 1):
            for m, n in splits:
                seg[r, pos:pos + n], split[r, pos:pos + n], mode[r, pos:pos + n] = doc, sid, m
                pos, sid = pos + n, sid + 1
        split[r, pos:] = sid
    return PackedMask(jnp.asarray(seg), jnp.asarray(split), jnp.asarray(mode))


def _compare(mask, q, k, v, valid_q, cache_k=None, cache_v=None):
    assert attn_lib.resolve("cudnn", q, k, v, mask, cache_k) == ("cudnn", None)

    def run(impl):
        f = jax.jit(functools.partial(attn_lib.attend, impl=impl))
        return np.asarray(f(q, k, v, mask, cache_k, cache_v), np.float32)

    got, want = run("cudnn"), run("jnp")
    valid = np.asarray(valid_q)  # [B, Lq]: padded query rows are unused, and kernels may fill them differently
    assert np.isfinite(got[valid]).all()
    np.testing.assert_allclose(got[valid], want[valid], atol=ATOL, rtol=RTOL)


def test_packed_training_mask():
    rows = [[[(CAUSAL, 60), (FULL, 64), (CAUSAL, 20)], [(NOISE, 64), (CAUSAL, 30)]],  # two documents
            [[(CAUSAL, 21), (NOISE, 100), (CAUSAL, 77)]]]  # one document, then padding
    mask = _packed(rows, 250)
    q, k, v, _, _ = _qkv(0, 250, 1)
    _compare(mask, q, k, v, mask.segment_ids != 0)


@pytest.mark.parametrize("causal", [True, False])
def test_kv_cache_mask(causal):
    mask = CacheMask(jnp.asarray([97, 40], jnp.int32), jnp.asarray([131, 128], jnp.int32), causal)
    q, k, v, ck, cv = _qkv(1, 131, 100)
    _compare(mask, q, k, v, np.arange(131)[None] < np.asarray(mask.q_len)[:, None], ck, cv)


def test_append_mask():
    own = _packed([[[(CAUSAL, 6), (FULL, 100), (CAUSAL, 30)]], [[(NOISE, 64), (CAUSAL, 66)]]], 136)
    mask = AppendMask(jnp.asarray([60, 9], jnp.int32), own)
    q, k, v, ck, cv = _qkv(2, 136, 64)
    _compare(mask, q, k, v, own.segment_ids != 0, ck, cv)


def test_model_with_cudnn_matches_jnp():
    """A 160-token text prefill (causal) and a 12x12-latent generation step (a full block against that cache):
    both long enough for the cuDNN path in every layer of the tiny model."""
    _, ref = load_model("bf16", "jnp")
    cfg, fast = load_model("bf16", "cudnn")
    assert cfg.attention == "cudnn"
    n_text, side = 160, 12
    ids = np.asarray(jax.random.randint(jax.random.key(5), (n_text,), 0, cfg.llm.vocab_size))
    x = jax.random.normal(jax.random.key(6), (1, side * side, cfg.patch_latent_dim), jnp.float32)
    c = cfg.llm
    for lq, causal in ((n_text, True), (side * side + 2, False)):
        q = jnp.zeros((1, lq, c.num_heads, c.head_dim), jnp.bfloat16)
        kv = jnp.zeros((1, lq, c.num_kv_heads, c.head_dim), jnp.bfloat16)
        mask = CacheMask(jnp.zeros((1,), jnp.int32), jnp.full((1,), lq, jnp.int32), causal)
        assert attn_lib.resolve("cudnn", q, kv, kv, mask, jnp.zeros((1, 320) + kv.shape[2:], kv.dtype)) == (
            "cudnn", None)

    def run(m):
        h, cache, _ = prefill(m, ids, np.arange(n_text), cache_size=320)
        q = m.image_block(m.embed_latents(x, jnp.full((1,), 0.6), grid_positions(side, side, cfg.max_latent_size, 1)))
        n = x.shape[1]
        hg, _, _ = m.language_model(q, jnp.full((1, n + 2), n_text, jnp.int32), Routing.block(1, n + 1),
                                    CacheMask(cache.length, jnp.full((1,), n + 2, jnp.int32), False), cache)
        return m.logits(h[0]), m.velocity(hg[:, 1:-1])[0]

    (logits, vel), (logits_ref, vel_ref) = run(fast), run(ref)
    assert on_gpu(logits) and on_gpu(vel)
    np.testing.assert_allclose(np.asarray(logits, np.float32), np.asarray(logits_ref, np.float32),
                               atol=bf16_tol("a.logits"), rtol=0)
    np.testing.assert_allclose(np.asarray(vel, np.float32), np.asarray(vel_ref, np.float32),
                               atol=bf16_tol("c1.velocity"), rtol=0)
