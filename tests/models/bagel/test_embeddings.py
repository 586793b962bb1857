"""Timestep embedder and 2-D sin-cos tables vs the tiny_a goldens (case g) and their defining formulas."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import config, embeddings
from alphagrpo_jax.models.bagel import weight_map as wm

CFG = config.tiny_a()
HIDDEN = CFG.llm.hidden_size


class Bridges(nnx.Module):
    def __init__(self, dtype=jnp.float32):
        self.time_embedder = embeddings.TimestepEmbedder(HIDDEN, rngs=nnx.Rngs(0), param_dtype=dtype, dtype=dtype)
        self.latent_pos_embed = embeddings.PositionTable(CFG.max_latent_size, HIDDEN, param_dtype=dtype)
        self.vit_pos_embed = embeddings.PositionTable(CFG.vit_max_num_patch_per_side, HIDDEN, param_dtype=dtype)


def maps():
    return embeddings.weight_map(HIDDEN, max_latent_size=CFG.max_latent_size,
                                 vit_max_per_side=CFG.vit_max_num_patch_per_side, prefix_time=("time_embedder",),
                                 prefix_latent_pos=("latent_pos_embed",), prefix_vit_pos=("vit_pos_embed",))


def load(ema_read, dtype):
    model = Bridges(dtype)
    state = nnx.state(model)
    wm.fill_state(state, maps(), ema_read)
    nnx.update(model, state)
    return model


@pytest.fixture(scope="module")
def golden(goldens_dir):
    return dict(np.load(goldens_dir / "g_embeddings.npz"))


def test_timestep_frequencies_match_golden_and_order(golden):
    freq = np.asarray(embeddings.timestep_frequencies(jnp.asarray(golden["t"])))
    np.testing.assert_allclose(freq, golden["time_freq_fp32"], atol=1e-6, rtol=1e-6)
    # cos half first, t not scaled by 1000: at t = 0 the first 128 dims are 1 and the last 128 are 0.
    zero = np.asarray(embeddings.timestep_frequencies(jnp.zeros(())))
    np.testing.assert_array_equal(zero[:128], 1.0)
    np.testing.assert_array_equal(zero[128:], 0.0)
    half = np.asarray(embeddings.timestep_frequencies(jnp.asarray([[0.5]])))
    assert half.shape == (1, 1, 256)
    np.testing.assert_allclose(half[0, 0, [0, 128, 1]], [np.cos(0.5), np.sin(0.5), np.cos(0.5 * 1e4 ** (-1 / 128))],
                               rtol=1e-6)


def test_time_embedder_fp32_and_bf16(ema_read, golden, goldens_dir):
    t = jnp.asarray(golden["t"])
    fp32 = np.asarray(nnx.jit(lambda m, t: m.time_embedder(t))(load(ema_read, jnp.float32), t))
    np.testing.assert_allclose(fp32, golden["time_emb_fp32"], atol=1e-5, rtol=1e-5)
    bf16 = load(ema_read, jnp.bfloat16).time_embedder(t)
    assert bf16.dtype == jnp.bfloat16
    # 2x upstream's own fp32-vs-bf16asis difference (ours is a different emulation of the same bf16 rounding),
    # plus one bf16 ulp (2^-8 relative): both results are rounded to bf16 last and may land on neighbours.
    tol = 2 * json.loads((goldens_dir / "tolerances.json").read_text())["max_abs_fp32_vs_bf16asis"]["g.time_emb"]
    np.testing.assert_allclose(np.asarray(bf16.astype(jnp.float32)), golden["time_emb_bf16asis"], atol=tol,
                               rtol=2 ** -8)


def test_sincos_tables_match_fresh_goldens(golden):
    latent = embeddings.sincos_2d_table(HIDDEN, CFG.max_latent_size)
    assert latent.dtype == np.float32 and latent.shape == (64, HIDDEN)
    np.testing.assert_allclose(latent, golden["latent_pos_table_fresh_fp32"], atol=1e-7, rtol=0)
    vit_rows = embeddings.sincos_2d_table(HIDDEN, CFG.vit_max_num_patch_per_side)[golden["vit_table_rows"]]
    np.testing.assert_allclose(vit_rows, golden["vit_pos_rows_fresh_fp32"], atol=1e-7, rtol=0)


def test_sincos_layout_column_first_sin_then_cos():
    dim, s = 16, 5
    table = embeddings.sincos_2d_table(dim, s)
    w = 1e4 ** (-np.arange(4) / 4)
    row, col = 3, 2
    np.testing.assert_allclose(table[row * s + col],
                               np.concatenate([np.sin(col * w), np.cos(col * w), np.sin(row * w), np.cos(row * w)]),
                               rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="multiple of 4"):
        embeddings.sincos_2d_table(18, 4)


def test_position_tables_load_checkpoint_values(ema_read, golden):
    model = load(ema_read, jnp.float32)
    np.testing.assert_array_equal(np.asarray(model.latent_pos_embed.pos_embed[...]),
                                  golden["latent_pos_table_ckpt_fp32"])
    rows = model.vit_pos_embed(jnp.asarray(golden["vit_table_rows"], jnp.int32))
    np.testing.assert_array_equal(np.asarray(rows), golden["vit_pos_rows_ckpt_fp32"])
    assert np.all(np.isnan(np.asarray(model.latent_pos_embed(jnp.asarray([64])))))  # 8x8 table: id 64 is off it
    # The stored tables are the sin-cos tables rounded to bf16 (not something else).
    fresh = embeddings.sincos_2d_table(HIDDEN, CFG.max_latent_size)
    np.testing.assert_array_equal(golden["latent_pos_table_ckpt_fp32"],
                                  np.asarray(jnp.asarray(fresh, jnp.bfloat16).astype(jnp.float32)))
    assert isinstance(model.vit_pos_embed.pos_embed, layers.Frozen)
    assert model.vit_pos_embed.pos_embed.get_metadata()["axes"] == ("table", "embed")
    trainable = [path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert ("vit_pos_embed", "pos_embed") not in trainable and ("time_embedder", "fc_in", "kernel") in trainable


def test_weight_map_round_trip_and_shape_errors(ema_read):
    for m in maps():
        key = str(m.keys[()])
        np.testing.assert_array_equal(m.to_torch(m.to_ours(ema_read(key))), ema_read(key), err_msg=key)
    bad = embeddings.position_table_weight_map("latent_pos_embed.pos_embed", 7, HIDDEN, ("t",))[0]
    with pytest.raises(wm.WeightMapError, match=r"latent_pos_embed.pos_embed: release tensor has shape "
                                                r"\(64, 64\), expected \(49, 64\)"):
        bad.to_ours(ema_read("latent_pos_embed.pos_embed"))
