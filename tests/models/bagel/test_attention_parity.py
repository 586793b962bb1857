"""The kernel paths inside the real model against the upstream goldens (fp32): the text prefill (golden a,
CacheMask causal; the 29-token prompt padded to a 128-token block) and the packed training forward (golden h,
PackedMask with full / causal / noise splits; 53 tokens padded to 256, run under the 8-device mesh rules),
with attention = "splash_interpret" (Pallas interpret mode) and "cudnn_xla" (the cuDNN argument mapping on
XLA). Measured max abs error vs the goldens: ~1.5e-6 for both, as for jnp (asserted < FP32_ATOL = 5e-5)."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel import attention as attn
from alphagrpo_jax.models.bagel import packed_forward
from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import KVCache, Routing
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from tests.models.bagel.parity_utils import FP32_ATOL, golden, load_model
from tests.models.bagel.test_packed_parity import golden_batch

IMPLS = ["splash_interpret", "cudnn_xla"]


def _with_attention(m, impl: str):
    """A copy of model `m` (same arrays) whose LLM runs attention implementation `impl`."""
    graphdef, state = nnx.split(m)
    out = nnx.merge(graphdef, state)
    out.language_model.cfg = out.language_model.cfg.replace(attention=impl)
    return out


def _pad_rows(x, length: int, value=0):
    x = jnp.asarray(x)
    pad = [(0, 0), (0, length - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, pad, constant_values=value)


@pytest.fixture
def no_fallback(monkeypatch, caplog):
    """Fails the test if any attention call fell back to jnp."""
    monkeypatch.setattr(attn, "_reported", set())
    with caplog.at_level(logging.WARNING, logger=attn.__name__):
        yield
    assert not [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]


@pytest.mark.parametrize("impl", IMPLS)
def test_text_prefill(impl, no_fallback):
    _, base = load_model("fp32")
    m = _with_attention(base, impl)
    a = golden("a_text_prefill.npz")
    n, block = len(a["input_ids"]), 128
    ids = _pad_rows(jnp.asarray(a["input_ids"])[None], block)
    pos = _pad_rows(jnp.asarray(a["position_ids"])[None], block)
    cache = KVCache.zeros(m.cfg, 1, 192)
    mask = CacheMask(cache.length, jnp.full((1,), n, jnp.int32), True)
    h, cache, _ = m.language_model(m.embed_text(ids), pos, Routing.und(), mask, cache, write_cache=True)
    np.testing.assert_allclose(h[0, :n], a["hidden_final_fp32"], atol=FP32_ATOL)
    np.testing.assert_allclose(cache.k[:, 0, :n], a["k_cache_fp32"], atol=FP32_ATOL)
    assert int(cache.length[0]) == n


@pytest.mark.parametrize("impl", IMPLS)
def test_packed_training_forward(impl, no_fallback):
    h = golden("h_train_loss.npz")
    cfg, base = load_model("fp32")
    m = _with_attention(base, impl)
    b = golden_batch(h, cfg)
    n, length = int(h["sequence_length"]), 256
    fill = dict(ce_labels=-1)
    b = b.replace(**{f: _pad_rows(getattr(b, f), length, fill.get(f, 0))
                     for f in ("kind", "text_ids", "positions", "segment_ids", "split_ids", "modes", "ce_labels",
                               "vit_index", "latent_x0", "latent_pos", "timestep", "noise", "mse_mask")})
    with rules_lib.use_rules(mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})):
        out = jax.jit(lambda batch: packed_forward.forward_packed(m, batch, return_hidden=True))(b)
    np.testing.assert_allclose(out["hidden"][0, :n], h["dense_last_hidden_fp32"], atol=FP32_ATOL)
    np.testing.assert_allclose(packed_forward.losses(out)["loss"], h["dense_loss_fp32"], atol=FP32_ATOL)
