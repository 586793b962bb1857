"""The splash path compiles for TPU: ahead-of-time for a v5p:2x2x2 topology (mesh fsdp=4 x tensor=2) from this
CPU host, through libtpu's compiler (Mosaic for the kernels). Needs libtpu, which the `test` extra installs;
without it the module fails to import with a message saying so."""
import importlib.util
import logging

import pytest

if importlib.util.find_spec("libtpu") is None:  # a test dependency: missing is an error, not a skip
    raise ImportError("libtpu is not importable, so nothing can be compiled for TPU here; install the test extra "
                      "(pip install -c constraints.txt -e '.[test]')")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from alphagrpo_jax.models.bagel import attention as attn  # noqa: E402
from alphagrpo_jax.models.bagel import config  # noqa: E402
from alphagrpo_jax.parallel import mesh as mesh_lib  # noqa: E402
from alphagrpo_jax.parallel import rules as rules_lib  # noqa: E402
from alphagrpo_jax.tools import compile_check  # noqa: E402


@pytest.fixture(scope="module")
def tpu_mesh():
    return mesh_lib.make_mesh({"fsdp": 4, "tensor": 2}, devices=compile_check.topology_devices("v5p:2x2x2"))


@pytest.fixture
def fallbacks(monkeypatch, caplog):
    """The fallback warnings logged during the test."""
    monkeypatch.setattr(attn, "_reported", set())
    with caplog.at_level(logging.WARNING, logger=attn.__name__):
        yield lambda: [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]


def test_tiny_bagel_prefill_and_gen_step(tpu_mesh, fallbacks):
    cfg = config.tiny_a(attention="splash")
    # 256-token prefill into a 512 cache; a 256-token image block (254 latents + markers): both use splash.
    out = compile_check.compile_programs(cfg, tpu_mesh, batch=4, prefill_len=256, cache_len=512,
                                         latent_tokens=254, programs=["und_prefill", "gen_step"])
    assert [p.name for p in out] == ["und_prefill", "gen_step"]
    assert fallbacks() == []


def test_every_mask_compiles_forward_and_backward(tpu_mesh, fallbacks):
    """value_and_grad of attend under the mesh: forward, dq and dkv Mosaic kernels for each mask family."""
    b, n, hq, hk, d, s = 4, 256, 8, 2, 128, 128

    def sds(shape, dtype, spec):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(tpu_mesh, spec))

    act, row = P(("data", "fsdp"), None, "tensor", None), P(("data", "fsdp"))
    q, kv, cache = sds((b, n, hq, d), jnp.bfloat16, act), sds((b, n, hk, d), jnp.bfloat16, act), \
        sds((b, s, hk, d), jnp.bfloat16, act)
    ids, lens = sds((b, n), jnp.int32, row), sds((b,), jnp.int32, row)
    masks = {
        "cache_causal": lambda m: attn.CacheMask(m[0], m[1], True),
        "cache_full": lambda m: attn.CacheMask(m[0], m[1], False),
        "packed": lambda m: attn.PackedMask(m[2], m[2], m[2]),
        "append": lambda m: attn.AppendMask(m[0], attn.PackedMask(m[2], m[2], m[2])),
    }
    for name, make in masks.items():
        def step(q, k, v, ck, cv, kv_len, q_len, ids):
            mask = make((kv_len, q_len, ids))
            c = (None, None) if isinstance(mask, attn.PackedMask) else (ck, cv)
            f = lambda q, k, v: jnp.sum(attn.attend(q, k, v, mask, *c, impl="splash").astype(jnp.float32))  # noqa
            return jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v)

        with rules_lib.use_rules(tpu_mesh):
            text = jax.jit(step).lower(q, kv, kv, cache, cache, lens, lens, ids).compile().as_text()
        assert text.count("tpu_custom_call") >= 3, name
    assert fallbacks() == []
