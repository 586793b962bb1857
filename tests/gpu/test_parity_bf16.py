"""The tiny BAGEL in bf16 on a GPU against the upstream bf16 goldens (text prefill, generation velocity, ViT
prefill): within 2x the measured fp32-vs-bf16 gap of each array, the bound the CPU bf16 tests use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel.attention import CacheMask
from alphagrpo_jax.models.bagel.llm import Routing
from tests.gpu.gpu_utils import load_model, on_gpu, require_gpu
from tests.models.bagel.parity_utils import bf16_tol, golden, prefill

require_gpu()

S = "_bf16asis"


def _close(got, want, key):
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=bf16_tol(key), rtol=0, err_msg=key)


def test_weights_and_activations_live_on_the_gpu():
    _, m = load_model("bf16")
    params = jax.tree.leaves(nnx.state(m, nnx.Param))
    assert params and all(on_gpu(p) for p in params)
    a = golden("a_text_prefill.npz")
    h, cache, _ = prefill(m, a["input_ids"], a["position_ids"])
    assert on_gpu(h) and on_gpu(cache.k) and h.dtype == jnp.bfloat16


def test_text_prefill():
    _, m = load_model("bf16")
    a = golden("a_text_prefill.npz")
    h, cache, layers = prefill(m, a["input_ids"], a["position_ids"])
    n = len(a["input_ids"])
    _close(layers[:, 0], a["layer_out" + S], "a.layer_out")
    _close(h[0], a["hidden_final" + S], "a.hidden_final")
    _close(m.logits(h[0]), a["logits" + S], "a.logits")
    _close(cache.k[:, 0, :n], a["k_cache" + S], "a.k_cache")
    _close(cache.v[:, 0, :n], a["v_cache" + S], "a.v_cache")


@pytest.mark.parametrize("case", ["c1_velocity.npz", "c2_velocity.npz"])
def test_gen_velocity_against_text_cache(case):
    _, m = load_model("bf16")
    a, c, k = golden("a_text_prefill.npz"), golden(case), case.split("_")[0]
    _, cache, _ = prefill(m, a["input_ids"], a["position_ids"])
    x = jnp.asarray(c["x_t"])[None]
    n = x.shape[1]
    q = m.image_block(m.embed_latents(x, jnp.full((1,), c["t"]), jnp.asarray(c["latent_pos_ids"])[None]))
    h, _, layers = m.language_model(q, jnp.asarray(c["position_ids"])[None], Routing.block(1, n + 1),
                                    CacheMask(cache.length, jnp.full((1,), n + 2, jnp.int32), False), cache,
                                    return_layer_outputs=True)
    _close(q[0], c["query_embeddings" + S], f"{k}.query_embeddings")
    _close(layers[:, 0], c["layer_out" + S], f"{k}.layer_out")
    _close(m.velocity(h[:, 1:-1])[0], c["velocity" + S], f"{k}.velocity")


def test_vit_prefill_and_understanding():
    _, m = load_model("bf16")
    e, u = golden("e_vit.npz"), golden("u_understanding.npz")
    n = e["vit_patches"].shape[0]
    x = m.image_block(m.embed_vit(jnp.asarray(e["vit_patches"])[None], jnp.asarray(e["vit_pos_ids"])[None],
                                  jnp.ones((1, n), bool)))
    _close(x[0], e["llm_input" + S], "e.llm_input")
    h, cache, _ = prefill(m, None, e["position_ids"], causal=False, embeds=x)
    _close(h[0], e["hidden_final" + S], "e.hidden_final")
    h, cache, _ = prefill(m, u["input_ids"], u["position_ids"], cache=cache)
    _close(m.logits(h[0]), u["logits" + S], "u.logits")
