"""LoRA: starts as the base model, disabling gives the base exactly, merging folds W + s A B for export, and
only the adapters are created (the base arrays are reused)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel import checkpoint, model as model_lib, safetensors_io
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.rl import lora
from tests.models.bagel.parity_utils import GOLDENS, load_model


def _logits(m):
    x = m.embed_text(jnp.asarray([[5, 6, 7, 8]]))
    from alphagrpo_jax.models.bagel.attention import PackedMask
    from alphagrpo_jax.models.bagel.llm import Routing
    ones = jnp.ones((1, 4), jnp.int32)
    h, _, _ = m.language_model(x, jnp.arange(4)[None], Routing.und(), PackedMask(ones, ones * 0, ones * 0))
    return np.asarray(m.logits(h))


def test_lora_lifecycle(tmp_path):
    cfg, base = load_model("fp32")
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    m = lora.add_lora(base, rank=4, alpha=8.0, targets=cfg.lora_targets, mesh=mesh, key=jax.random.key(0))
    q = m.language_model.layers.q_proj
    assert q.lora_a.shape == (2, 2, 64, 4) and q.lora_b.shape == (2, 2, 4, 4, 16)
    assert q.kernel.get_value() is base.language_model.layers.q_proj.kernel.get_value()  # reused, not copied
    np.testing.assert_allclose(_logits(m), _logits(base), atol=1e-6)  # B = 0 at start
    # Perturb the adapters: the output moves; disabling them gives the base back exactly.
    for mod in (m.language_model.layers.q_proj, m.language_model.layers.down_proj):
        mod.lora_b.set_value(jax.random.normal(jax.random.key(1), mod.lora_b.shape) * 0.3)
    assert np.abs(_logits(m) - _logits(base)).max() > 1e-2
    np.testing.assert_allclose(_logits(lora.disable_lora(m)), _logits(base), atol=1e-6)
    merged = lora.merge_lora(m)
    assert merged.cfg.lora_rank == 0
    np.testing.assert_allclose(_logits(merged), _logits(m), atol=1e-4)
    # Export of the merged model in the release layout, and load back through the real loader.
    out = tmp_path / "ema.safetensors"
    checkpoint.export_state(nnx.state(merged), model_lib.weight_map(merged.cfg), str(out), dtype=None)
    f = safetensors_io.SafetensorsFile(str(out))
    assert sorted(f.keys()) == sorted(safetensors_io.SafetensorsFile(str(GOLDENS / "ema.safetensors")).keys())
    g, st = checkpoint.load_state(lambda: model_lib.Bagel(merged.cfg, nnx.Rngs(0)), model_lib.weight_map(merged.cfg),
                                  str(out), mesh)
    np.testing.assert_allclose(_logits(nnx.merge(g, st)), _logits(m), atol=1e-4)


def test_trainable_filter():
    assert lora.trainable_filter("lora") is nnx.LoRAParam and lora.trainable_filter("full") is nnx.Param


def test_lora_a_init():
    """"gaussian" (default, the reference's peft init): A std 1/rank; "fan_in": std fan_in^-1/2; B = 0."""
    cfg, base = load_model("fp32")
    mesh = mesh_lib.make_mesh({"fsdp": 4, "tensor": 2})
    rank = 4
    for init in ("gaussian", "fan_in"):
        m = lora.add_lora(base, rank=rank, alpha=8.0, targets=cfg.lora_targets, mesh=mesh, key=jax.random.key(0),
                          init=init)
        for name in ("q_proj", "down_proj"):
            mod = getattr(m.language_model.layers, name)
            a = np.asarray(mod.lora_a.get_value())
            want = 1.0 / rank if init == "gaussian" else float(np.prod(a.shape[2:-1])) ** -0.5
            assert abs(a.std() / want - 1) < 0.1, (init, name, a.std(), want)
            assert not np.any(np.asarray(mod.lora_b.get_value()))
    with pytest.raises(ValueError, match="train.lora_init must be one of"):
        lora.add_lora(base, rank=rank, alpha=8.0, targets=cfg.lora_targets, mesh=mesh, key=jax.random.key(0),
                      init="kaiming")
