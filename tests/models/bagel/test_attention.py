"""attention.py: BAGEL's mask rules on hand-checked examples, and the implementation registry's dispatch and
explicit fallback to the jnp reference. Helpers here (`packed_mask`, `random_qkv`, `max_err`) are shared by the
kernel tests (test_attention_splash.py, test_attention_gpu.py)."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL, NOISE, AppendMask, CacheMask, PackedMask
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib

# Two rows of 256 tokens: documents of causal text, full (ViT / clean VAE) and noise splits, then padding.
ROW_LAYOUTS = (
    [[(40, CAUSAL), (64, FULL), (20, CAUSAL), (64, NOISE), (10, CAUSAL)], [(30, CAUSAL), (20, FULL)]],
    [[(10, CAUSAL), (100, NOISE), (5, CAUSAL)], [(60, FULL), (30, CAUSAL)]],
)


def packed_mask(length: int = 256, layouts=ROW_LAYOUTS) -> PackedMask:
    """A PackedMask from per-row lists of documents, each a list of (split length, mode); the rest pads."""
    rows = []
    for docs in layouts:
        seg, split, mode = (np.zeros(length, np.int32) for _ in range(3))
        pos, sid = 0, 1
        for doc, splits in enumerate(docs, 1):
            for n, m in splits:
                seg[pos:pos + n], split[pos:pos + n], mode[pos:pos + n] = doc, sid, m
                pos, sid = pos + n, sid + 1
        split[pos:] = sid
        rows.append((seg, split, mode))
    return PackedMask(*(jnp.asarray(np.stack(a)) for a in zip(*rows)))


def random_qkv(b: int, lq: int, hq: int, hk: int, d: int, cache: int = 0, dtype=jnp.float32, seed: int = 0):
    """q [b, lq, hq, d], k/v [b, lq, hk, d] and, if `cache`, cache_k/cache_v [b, cache, hk, d]."""
    ks = jax.random.split(jax.random.key(seed), 5)
    q, k, v = (jax.random.normal(kk, (b, lq, h, d), dtype) for kk, h in zip(ks[:3], (hq, hk, hk)))
    if not cache:
        return q, k, v
    ck, cv = (jax.random.normal(kk, (b, cache, hk, d), dtype) for kk in ks[3:])
    return q, k, v, ck, cv


def max_err(got, want, valid_rows) -> float:
    """Max |got - want| over valid query rows ([B, Lq] bool); padding rows are unspecified."""
    diff = jnp.abs(got.astype(jnp.float32) - want.astype(jnp.float32))
    return float(jnp.max(jnp.where(valid_rows[:, :, None, None], diff, 0.0)))


def test_cache_mask_rule():
    """Cache slots < kv_len, then the own block: causal bottom-right aligned, or full; padding hidden."""
    m = CacheMask(jnp.array([2]), jnp.array([3]), causal=True).dense(3, 4)[0]
    want = np.array([[1, 1, 0, 1, 0, 0, 0],
                     [1, 1, 0, 1, 1, 0, 0],
                     [1, 1, 0, 1, 1, 1, 0],
                     [1, 1, 0, 1, 1, 1, 0]], bool)  # row 3 is padding (q_len 3): sees what valid rows see
    np.testing.assert_array_equal(m, want)
    full = CacheMask(jnp.array([2]), jnp.array([3]), causal=False).dense(3, 4)[0]
    np.testing.assert_array_equal(full, np.tile(np.array([1, 1, 0, 1, 1, 1, 0], bool), (4, 1)))


def test_packed_mask_rule():
    """Causal text sees earlier clean tokens; a full split sees itself whole; a noise split is hidden from
    every other split; documents are isolated; padding sees nothing."""
    seg = jnp.array([[1, 1, 1, 1, 1, 1, 1, 2, 2, 0]])
    split = jnp.array([[0, 0, 1, 1, 2, 2, 3, 4, 5, 6]])
    modes = jnp.array([[CAUSAL, CAUSAL, FULL, FULL, NOISE, NOISE, CAUSAL, FULL, CAUSAL, CAUSAL]])
    want = np.array([
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(PackedMask(seg, split, modes).dense()[0], want)
    append = AppendMask(jnp.array([1]), PackedMask(seg, split, modes)).dense(2, 10)[0]
    np.testing.assert_array_equal(append[:, :2], np.array([[1, 0]] * 9 + [[0, 0]], bool))
    np.testing.assert_array_equal(append[:, 2:], want)


def test_unknown_impl_and_mask_are_errors():
    q, k, v = random_qkv(1, 4, 2, 1, 8)
    pm = packed_mask(4, ([[(4, CAUSAL)]],))
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        attn.attend(q, k, v, pm, impl="flash")
    with pytest.raises(TypeError, match="unknown mask type"):
        attn.attend(q, k, v, jnp.ones((1, 4, 4), bool))
    with pytest.raises(ValueError, match="CacheMask needs cache_k"):
        attn.attend(q, k, v, CacheMask(jnp.array([0]), jnp.array([4])), impl="splash_interpret")


def _case(lq, hk=2, cache=130):
    q, k, v, ck, cv = random_qkv(2, lq, 4, hk, 16, cache=cache)
    return q, k, v, CacheMask(jnp.array([100, 0]), jnp.array([lq, lq - 1])), ck


@pytest.mark.parametrize("impl, lq, platform, reason", [
    ("jnp", 1, "cpu", None),
    ("splash", 128, "cpu", "TPU kernel"),
    ("splash", 128, "tpu", None),
    ("splash", 8, "tpu", "decoding"),
    ("splash_interpret", 8, "cpu", "decoding"),
    ("splash_interpret", 128, "cpu", None),
    ("cudnn", 128, "cpu", "NVIDIA GPU"),
    ("cudnn", 128, "gpu", "bf16 or all fp16"),  # fp32 inputs
    ("cudnn_xla", 128, "cpu", None),
    ("cudnn_xla", 1, "cpu", "decoding"),
])
def test_resolve(monkeypatch, impl, lq, platform, reason):
    monkeypatch.setattr(attn, "program_platform", lambda: platform)
    q, k, v, mask, ck = _case(lq)
    name, why = attn.resolve(impl, q, k, v, mask, ck)
    if reason is None:
        assert (name, why) == (impl, None)
    else:
        assert name == "jnp" and reason in why, why


def test_cudnn_shape_limits(monkeypatch):
    monkeypatch.setattr(attn, "program_platform", lambda: "gpu")
    q, k, v, mask, ck = _case(128)
    bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    assert attn.resolve("cudnn", *bf, mask, ck) == ("cudnn", None)
    odd = [jnp.zeros(x.shape[:-1] + (12,), jnp.bfloat16) for x in (q, k, v)]
    assert "multiple of 8" in attn.resolve("cudnn", *odd, mask, ck)[1]


def test_splash_needs_kv_heads_divisible_by_the_head_axis():
    q, k, v, mask, ck = _case(128, hk=1)
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    with rules_lib.use_rules(mesh):
        name, why = attn.resolve("splash_interpret", q, k, v, mask, ck)
    assert name == "jnp" and "do not divide 1 KV heads" in why


def test_fallback_computes_the_reference_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(attn, "_reported", set())
    q, k, v, mask, ck = _case(128)
    cv = ck * 0.5
    want = attn.attend(q, k, v, mask, ck, cv, impl="jnp")
    with caplog.at_level(logging.WARNING, logger=attn.__name__):
        got = attn.attend(q, k, v, mask, ck, cv, impl="splash")
        again = attn.attend(q, k, v, mask, ck, cv, impl="splash")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(again, want)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "'splash' falls back to 'jnp' for CacheMask" in msgs[0], msgs


def _softmax_attention(q, k, v, mask):
    """The textbook definition (autodiff backward), per query head: softmax in fp32, P cast to v's dtype."""
    g = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
    probs = jax.nn.softmax(jnp.where(mask[:, None], logits, -1e30), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(q.dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("kind", ["packed", "cache"])
def test_gradient_equals_autodiff_of_the_definition(dtype, kind):
    """`dot_product_attention`'s flash-style backward (probabilities recomputed from saved row statistics)
    gives autodiff's gradients of plain softmax attention: GQA, packed masks with fully padded query rows,
    and cache masks. fp32 to rounding; bf16 within 2 bf16 ulps of the largest gradient."""
    if kind == "packed":
        q, k, v = random_qkv(2, 256, 4, 2, 32, dtype=dtype)
        mask = packed_mask().dense()
    else:
        q, k, v, ck, cv = random_qkv(2, 24, 4, 2, 32, cache=40, dtype=dtype)
        mask = CacheMask(jnp.array([40, 13]), jnp.array([24, 9])).dense(40, 24)
        k, v = jnp.concatenate([ck, k], axis=1), jnp.concatenate([cv, v], axis=1)
    # A loss reads valid queries only: fully masked (padding) rows have an unspecified output.
    valid_q = jnp.any(mask, axis=-1)[:, :, None, None]
    w = jax.random.normal(jax.random.key(7), q.shape, jnp.float32) * valid_q

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v, mask).astype(jnp.float32) * w)

    out, ref = (np.asarray(f(q, k, v, mask) * valid_q, np.float32)
                for f in (attn.dot_product_attention, _softmax_attention))
    np.testing.assert_allclose(out, ref, atol=1e-5 if dtype == jnp.float32 else 2 ** -7, rtol=0)
    got = jax.jit(jax.grad(loss(attn.dot_product_attention), argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.grad(loss(_softmax_attention), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", got, want):
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        scale = np.abs(b).max()
        tol = 1e-5 * scale if dtype == jnp.float32 else 2 * 2 ** -8 * scale
        assert np.abs(a - b).max() <= tol, (name, np.abs(a - b).max(), scale)
