"""The splash path (attention_splash.py) equals the jnp reference, run in Pallas interpret mode on CPU
("splash_interpret"): static masks + segment ids for CacheMask (causal and full, cache and block padding,
GQA), the dynamic-mask encoding for PackedMask / AppendMask (forward and gradients), bf16, and under the
8-device mesh through shard_map. Measured max abs error vs jnp (fp32): < 1e-6 forward, ~2e-6 gradients."""
import jax
import jax.numpy as jnp
import pytest

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel.attention import AppendMask, CacheMask, PackedMask
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from tests.models.bagel.test_attention import ROW_LAYOUTS, max_err, packed_mask, random_qkv

IMPL = "splash_interpret"
TOL = 1e-5
# Four rows (batch 4 splits over data x fsdp): the shared layouts, one causal document, a short row.
FOUR_ROWS = ROW_LAYOUTS + ([[(256, attn.CAUSAL)]], [[(16, attn.FULL), (16, attn.CAUSAL)]])


def _run(impl, q, k, v, mask, ck=None, cv=None):
    return jax.jit(lambda q, k, v, ck, cv: attn.attend(q, k, v, mask, ck, cv, impl=impl))(q, k, v, ck, cv)


@pytest.mark.parametrize("causal", [True, False])
def test_cache_mask(causal):
    # Lq 200 pads to 256 and S 130 is not a tile multiple; row 1 has an empty cache and 77 valid queries.
    q, k, v, ck, cv = random_qkv(2, 200, 4, 2, 64, cache=130)
    mask = CacheMask(jnp.array([100, 0]), jnp.array([200, 77]), causal)
    assert attn.resolve(IMPL, q, k, v, mask, ck) == (IMPL, None)
    got, want = _run(IMPL, q, k, v, mask, ck, cv), _run("jnp", q, k, v, mask, ck, cv)
    assert bool(jnp.all(jnp.isfinite(got)))
    assert max_err(got, want, jnp.arange(200)[None] < mask.q_len[:, None]) < TOL


def test_packed_mask_forward_and_gradients():
    # 384 tokens in 128-row tiles: rows hold <= 248 tokens, so the last tile is all padding (no visible key).
    mask = packed_mask(384)
    q, k, v = random_qkv(2, 384, 4, 2, 64)
    valid = mask.segment_ids != 0
    w = jax.random.normal(jax.random.key(7), q.shape) * valid[:, :, None, None]

    def loss(impl):
        return lambda q, k, v: jnp.sum(attn.attend(q, k, v, mask, impl=impl) * w)

    got, want = _run(IMPL, q, k, v, mask), _run("jnp", q, k, v, mask)
    assert bool(jnp.all(jnp.isfinite(got)))
    assert max_err(got, want, valid) < TOL
    g_got = jax.jit(jax.grad(loss(IMPL), argnums=(0, 1, 2)))(q, k, v)
    g_want = jax.jit(jax.grad(loss("jnp"), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", g_got, g_want):
        assert float(jnp.max(jnp.abs(a - b))) < 2e-5, name


def test_append_mask():
    base = packed_mask(200, ([[(120, attn.FULL), (30, attn.CAUSAL)]], [[(50, attn.CAUSAL), (64, attn.NOISE)]]))
    own = PackedMask(jnp.minimum(base.segment_ids, 1), base.split_ids, base.modes)
    mask = AppendMask(jnp.array([7, 130]), own)
    q, k, v, ck, cv = random_qkv(2, 200, 4, 2, 64, cache=130, seed=1)
    got, want = _run(IMPL, q, k, v, mask, ck, cv), _run("jnp", q, k, v, mask, ck, cv)
    assert max_err(got, want, own.segment_ids != 0) < TOL


def test_bf16_cache_mask():
    q, k, v, ck, cv = random_qkv(2, 128, 4, 2, 64, cache=128, dtype=jnp.bfloat16)
    mask = CacheMask(jnp.array([128, 5]), jnp.array([128, 100]), True)
    got = _run(IMPL, q, k, v, mask, ck, cv)
    f32 = [x.astype(jnp.float32) for x in (q, k, v, ck, cv)]
    want = _run("jnp", *f32[:3], mask, *f32[3:])
    assert got.dtype == jnp.bfloat16
    # bf16 q scaling and bf16 output rounding; the jnp bf16 path is as far from fp32.
    assert max_err(got, want, jnp.arange(128)[None] < mask.q_len[:, None]) < 3e-2


def test_sharded_under_mesh():
    """Batch over (data, fsdp) and heads over tensor: the kernel runs per shard inside shard_map."""
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    mask = packed_mask(256, FOUR_ROWS)
    q, k, v, ck, cv = random_qkv(4, 256, 4, 2, 64, cache=128, seed=2)
    cache_mask = CacheMask(jnp.array([128, 0, 64, 3]), jnp.array([256, 200, 1, 129]), True)
    with rules_lib.use_rules(mesh):
        f = jax.jit(lambda q, k, v: attn.attend(q, k, v, mask, impl=IMPL))
        assert "manual_computation" in f.lower(q, k, v).as_text()
        assert max_err(f(q, k, v), _run("jnp", q, k, v, mask), mask.segment_ids != 0) < TOL
        got = _run(IMPL, q, k, v, cache_mask, ck, cv)
    want = _run("jnp", q, k, v, cache_mask, ck, cv)
    assert max_err(got, want, jnp.arange(256)[None] < cache_mask.q_len[:, None]) < TOL

