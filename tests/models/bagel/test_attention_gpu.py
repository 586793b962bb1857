"""The cuDNN path's argument mapping (attention_gpu.py) equals the jnp reference when the same
jax.nn.dot_product_attention call runs with implementation="xla" on CPU ("cudnn_xla"): the PADDING layout
(own keys moved after the valid cache slots) for full CacheMask, the dense mask for causal CacheMask, PackedMask
and AppendMask, with odd lengths padded. The cuDNN kernel itself needs a GPU and is not run here."""
import jax
import jax.numpy as jnp
import pytest

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel.attention import AppendMask, CacheMask, PackedMask
from tests.models.bagel.test_attention import max_err, packed_mask, random_qkv

IMPL = "cudnn_xla"
TOL = 1e-5


def _run(impl, q, k, v, mask, ck=None, cv=None):
    return jax.jit(lambda q, k, v, ck, cv: attn.attend(q, k, v, mask, ck, cv, impl=impl))(q, k, v, ck, cv)


@pytest.mark.parametrize("causal", [True, False])
def test_cache_mask(causal):
    q, k, v, ck, cv = random_qkv(3, 131, 4, 2, 32, cache=97)
    mask = CacheMask(jnp.array([97, 0, 40]), jnp.array([131, 130, 1]), causal)
    assert attn.resolve(IMPL, q, k, v, mask, ck) == (IMPL, None)
    got = _run(IMPL, q, k, v, mask, ck, cv)
    assert got.shape == q.shape and bool(jnp.all(jnp.isfinite(got)))
    assert max_err(got, _run("jnp", q, k, v, mask, ck, cv), jnp.arange(131)[None] < mask.q_len[:, None]) < TOL


def test_packed_and_append_masks():
    mask = packed_mask(250)
    q, k, v, ck, cv = random_qkv(2, 250, 4, 2, 32, cache=60, seed=3)
    valid = mask.segment_ids != 0
    assert max_err(_run(IMPL, q, k, v, mask), _run("jnp", q, k, v, mask), valid) < TOL
    own = PackedMask(jnp.minimum(mask.segment_ids, 1), mask.split_ids, mask.modes)
    app = AppendMask(jnp.array([60, 9]), own)
    assert max_err(_run(IMPL, q, k, v, app, ck, cv), _run("jnp", q, k, v, app, ck, cv), valid) < TOL


def test_gradients_through_the_padding_layout():
    q, k, v, ck, cv = random_qkv(2, 128, 4, 2, 32, cache=64, seed=4)
    mask = CacheMask(jnp.array([10, 64]), jnp.array([128, 90]), False)
    valid = jnp.arange(128)[None] < mask.q_len[:, None]
    w = jax.random.normal(jax.random.key(5), q.shape) * valid[:, :, None, None]

    def loss(impl):
        return lambda q, k, v, ck: jnp.sum(attn.attend(q, k, v, mask, ck, cv, impl=impl) * w)

    got = jax.jit(jax.grad(loss(IMPL), argnums=(0, 1, 2, 3)))(q, k, v, ck)
    want = jax.jit(jax.grad(loss("jnp"), argnums=(0, 1, 2, 3)))(q, k, v, ck)
    for name, a, b in zip(("q", "k", "v", "cache_k"), got, want):
        assert float(jnp.max(jnp.abs(a - b))) < 2e-5, name
