"""Text decoding: greedy parity with upstream (goldens b, u), the appended segment equals a prefill of the same
ids, batched mixed-length prompts equal single runs, sampling semantics (top-k / top-p / log-probs)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import text as text_lib
from tests.models.bagel.parity_utils import golden, load_model

GREEDY = text_lib.TextSamplerConfig(max_new_tokens=8, greedy=True)


def _prompt_ctx(m, prompts, size=96):
    return ctx_lib.build(m, None, [[ctx_lib.Text(tuple(p))] for p in prompts], cache_size=size)


def test_greedy_matches_upstream_and_closes_segment():
    _, m = load_model("fp32")
    a, b = golden("a_text_prefill.npz"), golden("b_greedy.npz")
    prompt = a["input_ids"][1:-1].tolist()
    ctx, out = text_lib.decode(m, _prompt_ctx(m, [prompt]), jax.random.split(jax.random.key(0), 1), GREEDY)
    # Upstream returns the fed <|im_start|> followed by the 8 greedy tokens (none of them is EOS).
    assert np.asarray(out.tokens[0]).tolist() == b["tokens_fp32"][1:].tolist()
    assert int(out.lengths[0]) == 8 and bool(out.truncated[0])
    # The context now holds [prompt][im_start, 8 tokens, forced im_end]: equal to prefilling that segment.
    ref = _prompt_ctx(m, [prompt])
    ref = ctx_lib.build(m, None, [[ctx_lib.Text(tuple(np.asarray(out.tokens[0]).tolist()))]], 0, ctx=ref)
    n = int(ref.cache.length[0])
    assert int(ctx.cache.length[0]) == n == len(a["input_ids"]) + 10 and int(ctx.rope[0]) == int(ref.rope[0])
    np.testing.assert_allclose(ctx.cache.k[:, 0, :n], ref.cache.k[:, 0, :n], atol=2e-5)
    np.testing.assert_allclose(ctx.cache.v[:, 0, :n], ref.cache.v[:, 0, :n], atol=2e-5)


def test_mixed_length_batch_equals_single_runs():
    _, m = load_model("fp32")
    prompts = [[40, 50, 60], [70, 80, 90, 100, 110, 120, 130], [33]]
    cfg = text_lib.TextSamplerConfig(max_new_tokens=6, temperature=1.0, top_p=0.9)
    keys = jax.random.split(jax.random.key(3), len(prompts))
    ctx, out = text_lib.decode(m, _prompt_ctx(m, prompts), keys, cfg)
    for i, p in enumerate(prompts):
        # Same key for the row, so the row sampled alone must give the same tokens and log-probs.
        c1, o1 = text_lib.decode(m, _prompt_ctx(m, [p]), keys[i:i + 1], cfg)
        n = int(o1.lengths[0])
        assert int(out.lengths[i]) == n
        assert np.asarray(out.tokens[i, :n]).tolist() == np.asarray(o1.tokens[0, :n]).tolist()
        np.testing.assert_allclose(out.log_probs[i, :n], o1.log_probs[0, :n], atol=1e-5)
        assert int(ctx.rope[i]) == int(c1.rope[0])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("prompts", [[[40, 50, 60]], [[40, 50, 60], [70, 80, 90, 100, 110, 120, 130], [33]]])
def test_layers_one_by_one_decode_the_same(monkeypatch, prompts, precision):
    """With each layer's weights copied out once (`layers.presliced`, here below its size threshold), the decode
    loop carries the cache as per-layer buffers (KVCache.per_layer: one row -> raw-bit writes, several -> a
    select per layer) and returns it stacked: the same tokens, log-probs and cache as the scanned layers."""
    from alphagrpo_jax.models import layers
    from alphagrpo_jax.models.bagel import llm

    _, m = load_model(precision)
    cfg = text_lib.TextSamplerConfig(max_new_tokens=6, temperature=1.0, top_p=0.9)
    keys = jax.random.split(jax.random.key(3), len(prompts))
    want_ctx, want = text_lib.decode(m, _prompt_ctx(m, prompts), keys, cfg)
    calls = []
    per_layer = llm.KVCache.per_layer
    monkeypatch.setattr(llm.KVCache, "per_layer", lambda c: calls.append(1) or per_layer(c))
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 0)
    # decode is jitted, and JAX keeps its trace per Python function: a new function is traced again under the new
    # threshold (jax.clear_caches() would make every later test of this worker trace its programs again).
    def fresh(model, ctx, keys, cfg):
        return text_lib.decode.__wrapped__(model, ctx, keys, cfg)

    got_ctx, got = jax.jit(fresh, static_argnames=("cfg",), donate_argnums=(1,))(m, _prompt_ctx(m, prompts), keys, cfg)
    assert calls and isinstance(got_ctx.cache.k, jax.Array) and got_ctx.cache.k.shape == want_ctx.cache.k.shape
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    tol = 1e-5 if precision == "fp32" else 2e-2
    np.testing.assert_allclose(got.log_probs, want.log_probs, atol=tol)
    np.testing.assert_array_equal(got_ctx.cache.length, want_ctx.cache.length)
    for a, b in ((got_ctx.cache.k, want_ctx.cache.k), (got_ctx.cache.v, want_ctx.cache.v)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2 * tol)


def test_eos_stops_and_is_an_action():
    _, m = load_model("fp32")
    a, b = golden("a_text_prefill.npz"), golden("b_greedy.npz")
    # Declare the 2nd greedy token (67) to be EOS: decoding must stop right after sampling it.
    stop = int(b["tokens_fp32"][2])
    m2 = jax.tree.map(lambda x: x, m)
    m2.cfg = m.cfg.replace(tokens=dataclasses.replace(m.cfg.tokens, eos=stop))
    ctx0 = _prompt_ctx(m, [a["input_ids"][1:-1].tolist()])
    rope0, len0 = int(ctx0.rope[0]), int(ctx0.cache.length[0])
    ctx, out = text_lib.decode(m2, ctx0, jax.random.split(jax.random.key(0), 1), GREEDY)
    assert np.asarray(out.tokens[0, :2]).tolist() == b["tokens_fp32"][1:3].tolist()
    assert int(out.lengths[0]) == 2 and not bool(out.truncated[0])
    assert np.asarray(out.tokens[0, 2:]).tolist() == [0] * 6
    # Segment = im_start + 2 sampled tokens (the last is the EOS): 3 cache slots and RoPE ids.
    assert int(ctx.rope[0]) == rope0 + 3 and int(ctx.cache.length[0]) == len0 + 3


def test_sampler_log_probs_are_untruncated_and_filters_hold():
    logits = jnp.asarray([[3.0, 2.0, 1.0, 0.0, -1.0]] * 4000)
    cfg = text_lib.TextSamplerConfig(temperature=0.5, top_p=0.7, top_k=3)
    tok, lp = text_lib.sample_token(logits, jax.random.split(jax.random.key(0), 4000), cfg)
    tok = np.asarray(tok)
    full = np.asarray(jax.nn.log_softmax(logits[0] / 0.5))
    np.testing.assert_allclose(np.asarray(lp), full[tok], rtol=1e-6)
    # softmax(logits / 0.5) = [.865, .117, .016, ...]: the nucleus 0.7 keeps only the first token.
    assert set(tok.tolist()) == {0}
    cfg = text_lib.TextSamplerConfig(temperature=2.0, top_k=2)
    tok, _ = text_lib.sample_token(logits, jax.random.split(jax.random.key(1), 4000), cfg)
    counts = np.bincount(np.asarray(tok), minlength=5)
    assert counts[2:].sum() == 0 and counts[0] > counts[1] > 0


@pytest.mark.parametrize("bad", [dict(temperature=0.0), dict(top_p=0.0), dict(max_new_tokens=0)])
def test_bad_sampler_config(bad):
    with pytest.raises(ValueError):
        text_lib.TextSamplerConfig(**bad)
