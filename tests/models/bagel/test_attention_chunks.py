"""attention.py's CPU forms: batch chunks (how many, and that chunked attention is the same function: every mask
kind, forward and gradients, unsharded and with the batch sharded over 8 devices), and (row, KV head) pairs as
unrolled 2-D dots (the same function as the batched form)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel.attention import AppendMask, CacheMask
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from tests.models.bagel.test_attention import packed_mask, random_qkv

B = 8


def _chunks(monkeypatch, logit_bytes):
    monkeypatch.setattr(attn, "CPU_CHUNK_LOGIT_BYTES", logit_bytes)


def test_chunk_count(monkeypatch):
    """Chunks hold about CPU_CHUNK_LOGIT_BYTES of fp32 logits, divide each device's rows, and exist only when
    the whole batch's logits exceed twice that; none on TPU/GPU programs."""
    q = jnp.zeros((12, 10, 4, 8))                 # a row: 4 heads x 10 queries x 50 keys x 4 B = 8000 B
    _chunks(monkeypatch, 16000)                   # 2 rows per chunk
    assert attn.cpu_batch_chunks(q, 50) == 6
    _chunks(monkeypatch, 40000)                   # 5 rows fit; the largest divisor of 12 under that is 4
    assert attn.cpu_batch_chunks(q, 50) == 3
    _chunks(monkeypatch, 48000)                   # 12 x 8000 = 2 x 48000: not worth splitting
    assert attn.cpu_batch_chunks(q, 50) == 1
    _chunks(monkeypatch, 1000)                    # a row over the budget: one row per chunk
    assert attn.cpu_batch_chunks(q, 50) == 12
    with rules_lib.use_rules(mesh_lib.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})):
        assert attn.cpu_batch_chunks(jnp.zeros((16, 10, 4, 8)), 50) == 2    # 2 rows per device, 1 per chunk
        assert attn.cpu_batch_chunks(q, 50) == 12                          # 8 does not divide 12: whole batch
    with rules_lib.use_rules(mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})):
        assert attn.cpu_batch_chunks(q, 50) == 3   # the batch is split 4 ways (not over tensor): 3 rows each
    monkeypatch.setattr(attn, "program_platform", lambda: "tpu")
    assert attn.cpu_batch_chunks(q, 50) == 1


def _cases():
    q, k, v, ck, cv = random_qkv(B, 24, 4, 2, 16, cache=40, seed=3)
    kv_len, q_len = jnp.array([40, 13, 0, 7, 40, 1, 22, 39]), jnp.array([24, 9, 24, 1, 3, 24, 12, 20])
    own = packed_mask(24, [[[(10, attn.CAUSAL), (8, attn.NOISE)]], [[(24, attn.FULL)]]] * 4)
    pq, pk, pv = random_qkv(B, 24, 4, 2, 16, seed=4)
    return {
        "cache causal": (q, k, v, CacheMask(kv_len, q_len, True), ck, cv),
        "cache full": (q, k, v, CacheMask(kv_len, q_len, False), ck, cv),
        "append": (q, k, v, AppendMask(kv_len, own), ck, cv),
        "packed": (pq, pk, pv, own, None, None),
    }


@pytest.mark.parametrize("case", ["cache causal", "cache full", "append", "packed"])
def test_chunked_attention_is_the_same_function(monkeypatch, case):
    """Forward bit for bit; gradients of q, k, v and the cache to fp32 rounding (their sums run per chunk)."""
    monkeypatch.setattr(attn, "CPU_UNROLL_PAIRS", 0)  # the batched form in both (a chunk has few pairs)
    q, k, v, mask, ck, cv = _cases()[case]
    valid = jnp.any(attn.dense_mask(mask, 0 if ck is None else ck.shape[1], q.shape[1]), -1)[:, :, None, None]
    w = jax.random.normal(jax.random.key(5), q.shape) * valid

    def run():
        f = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]))
        args = (q, k, v) if ck is None else (q, k, v, ck, cv)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=tuple(range(len(args)))))(*args)
        return np.asarray(f(*args) * valid), [np.asarray(g) for g in grads]

    _chunks(monkeypatch, 1 << 40)
    want, want_grads = run()
    _chunks(monkeypatch, 4 * 24 * 64 * 4)  # one row per chunk
    assert attn.cpu_batch_chunks(q, 64) == B
    got, got_grads = run()
    np.testing.assert_array_equal(got, want)
    for g, h in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, h, rtol=0, atol=1e-6 * np.abs(h).max())


def test_chunks_under_a_sharded_batch(monkeypatch):
    """Batch over data x fsdp (8 devices), 2 rows per device, 1 row per chunk: same values, and the output keeps
    the batch sharding (chunks split each device's block, they do not gather rows across devices)."""
    monkeypatch.setattr(attn, "CPU_UNROLL_PAIRS", 0)  # the batched form in both (a chunk has few pairs)
    q, k, v, mask, ck, cv = _cases()["cache full"]
    q, k, v, ck, cv = (jnp.concatenate([x, x]) for x in (q, k, v, ck, cv))
    mask = CacheMask(jnp.concatenate([mask.kv_len] * 2), jnp.concatenate([mask.q_len] * 2), False)
    want = np.asarray(jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]))(q, k, v, ck, cv))
    mesh = mesh_lib.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    _chunks(monkeypatch, 4 * 24 * 64 * 4)
    with rules_lib.use_rules(mesh):
        assert attn.cpu_batch_chunks(q, 64) == 2
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        args = [jax.device_put(x, sharding) for x in (q, k, v, ck, cv)]
        out = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]), out_shardings=sharding)(*args)
        hlo = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:])).lower(*args).compile().as_text()
    np.testing.assert_array_equal(np.asarray(out), want)
    assert "all-gather" not in hlo and "all-to-all" not in hlo


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["cache causal", "packed"])
def test_pairs_are_the_batched_attention(monkeypatch, case, dtype):
    """Up to CPU_UNROLL_PAIRS (row, KV head) pairs run as 2-D dots in an undifferentiated program: the forward
    equals the batched form's to fp32 rounding (2-D and batched dots may take different kernels), in bf16 to
    bf16 rounding (the batched dot runs on f32 copies of the bf16 operands). Gradients take the batched forward
    and the flash backward either way."""
    q, k, v, mask, ck, cv = _cases()[case]
    args = tuple(x.astype(dtype) for x in ((q, k, v) if ck is None else (q, k, v, ck, cv)))
    valid = jnp.any(attn.dense_mask(mask, 0 if ck is None else ck.shape[1], q.shape[1]), -1)[:, :, None, None]
    w = jax.random.normal(jax.random.key(5), q.shape) * valid
    _chunks(monkeypatch, 1 << 40)

    def run():
        f = jax.jit(lambda *a: attn.attention(a[0], a[1], a[2], mask, *a[3:]))
        loss = lambda *a: jnp.sum(f(*a).astype(jnp.float32) * w)  # noqa: E731
        grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
        return np.asarray(f(*args).astype(jnp.float32) * valid), [np.asarray(g.astype(jnp.float32)) for g in grads]

    assert B * k.shape[2] == 16
    monkeypatch.setattr(attn, "CPU_PAIR_MIN_LOGIT_BYTES", 0)  # these pairs are small
    monkeypatch.setattr(attn, "CPU_UNROLL_PAIRS", 0)
    want, want_grads = run()
    monkeypatch.setattr(attn, "CPU_UNROLL_PAIRS", 16)
    got, got_grads = run()
    tol = 1e-6 if dtype == "float32" else 2 ** -6
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
    for g, h in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, h, rtol=0, atol=2 * tol * np.abs(h).max())
