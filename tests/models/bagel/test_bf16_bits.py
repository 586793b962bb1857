"""Fast paths on CPU: the layer scan slices 16-bit stacks from its carry (no f32 copy of the stack), static slices
of weights are taken as raw bits (`layers.take`), a decode loop runs on layer copies made once
(`layers.presliced`), the KV cache is written once per call, and projections run as 2-D dots; values and
gradients equal the plain formulations. Release folders without tokenizer files."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import attention, release
from alphagrpo_jax.models.bagel.tokenizer import TokenizerError
from alphagrpo_jax.parallel import mesh as mesh_lib
from tests.models.bagel.parity_utils import GOLDENS


class Block(nnx.Module):
    def __init__(self, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (2, 8, 8), jnp.bfloat16))
        self.scale = nnx.Param(jnp.ones((8,), jnp.float32))


def test_scan_layers_values_and_grads_equal_a_plain_scan():
    stacked = layers.create_stacked(Block, 3, nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8), jnp.bfloat16)
    xs = jax.random.normal(jax.random.key(2), (3, 4, 8), jnp.bfloat16)

    def body(layer, h, x):
        h = layers.matmul(h + x, layer.w[1], "bi,io->bo").astype(jnp.bfloat16) * layer.scale[...].astype(h.dtype)
        return h, h

    def ours(state, xs):
        return layers.scan_layers(nnx.merge(graphdef, state), body, x, xs)

    def plain(state, xs):
        return jax.lax.scan(lambda c, inp: body(nnx.merge(layer_def, inp[0]), c, inp[1]), x, (state, xs))

    graphdef, state = nnx.split(stacked)
    layer_def = nnx.graphdef(jax.tree.map(lambda a: a[0], stacked))
    for a, b in zip(jax.tree.leaves(jax.jit(ours)(state, xs)), jax.tree.leaves(jax.jit(plain)(state, xs))):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    loss = lambda f: lambda s, xs: jnp.sum(f(s, xs)[0].astype(jnp.float32) ** 2)  # noqa: E731
    g1 = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(state, xs)
    g2 = jax.jit(jax.grad(loss(plain), argnums=(0, 1)))(state, xs)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        assert a.dtype == b.dtype and np.any(np.asarray(b, np.float32) != 0)
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "int32"])
def test_take_values_and_grads_equal_indexing(dtype, monkeypatch):
    monkeypatch.setattr(layers, "RAW_TAKE_MIN_BYTES", 0)  # the raw-bits slice for these small arrays too
    a = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)) * 4, dtype)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a: layers.take(a, 1))(a)), np.asarray(a[1]))
    if dtype != "int32":
        loss = lambda f: lambda a: jnp.sum(f(a).astype(jnp.float32) ** 2)  # noqa: E731
        g1 = jax.jit(jax.grad(loss(lambda a: layers.take(a, 1))))(a)
        g2 = jax.jit(jax.grad(loss(lambda a: a[1])))(a)
        assert g1.dtype == g2.dtype and np.any(np.asarray(g2, np.float32) != 0)
        np.testing.assert_array_equal(np.asarray(g1, np.float32), np.asarray(g2, np.float32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_presliced_layers_in_a_loop_equal_the_scan(dtype, monkeypatch):
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 0)  # these layers are far below the sizes that get copies
    monkeypatch.setattr(layers, "RAW_TAKE_MIN_BYTES", 0)
    stacked = layers.create_stacked(Block, 3, nnx.Rngs(0))
    graphdef, state = nnx.split(stacked)
    state = jax.tree.map(lambda a: a.astype(dtype), state)
    x = jax.random.normal(jax.random.key(1), (4, 8), dtype)
    xs = jax.random.normal(jax.random.key(2), (3, 4, 8), dtype)

    def body(layer, h, x):
        h = layers.matmul(h + x, layers.take(layer.w[...], 1), "bi,io->bo").astype(dtype) * layer.scale[...]
        return h.astype(dtype), h.astype(dtype)

    def run(state, xs, presliced):
        m = nnx.merge(graphdef, state)

        def step(_, carry):
            h, _ = layers.scan_layers(m, body, carry[0], xs)
            return h, carry[1] + 1

        if not presliced:
            return jax.lax.fori_loop(0, 3, step, (x, 0))
        with layers.presliced(m):
            assert [e[0] for e in layers._PRESLICED.get()] == [m]  # the loop below runs on the copies
            return jax.lax.fori_loop(0, 3, step, (x, 0))

    got = jax.jit(lambda s, xs: run(s, xs, True))(state, xs)
    want = jax.jit(lambda s, xs: run(s, xs, False))(state, xs)
    assert got[0].dtype == want[0].dtype and np.any(np.asarray(want[0], np.float32) != 0)
    np.testing.assert_array_equal(np.asarray(got[0], np.float32), np.asarray(want[0], np.float32))
    assert layers._PRESLICED.get() == ()  # outside the block the module scans again
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 4 << 20)
    with layers.presliced(nnx.merge(graphdef, state)):  # layers under the threshold are not copied
        assert layers._PRESLICED.get() == ()


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("batch,lq", [(1, 3), (3, 1), (3, 2)])
def test_write_cache_layers_equals_per_layer_writes(dtype, batch, lq):
    rng = np.random.default_rng(0)
    cache = jnp.asarray(rng.normal(size=(2, batch, 6, 2, 4)), dtype)
    new = jnp.asarray(rng.normal(size=(2, batch, lq, 2, 4)), dtype)
    offsets = jnp.asarray(rng.integers(0, 6 - lq + 1, batch), jnp.int32)
    want = jnp.stack([attention.write_cache(cache[i], new[i], offsets) for i in range(2)])
    got = jax.jit(attention.write_cache_layers)(cache, new, offsets)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    weights = jnp.asarray(rng.normal(size=cache.shape), jnp.float32)

    def loss(write):
        return lambda c, n: jnp.sum(write(c, n).astype(jnp.float32) * weights)

    g1 = jax.grad(loss(lambda c, n: attention.write_cache_layers(c, n, offsets)), argnums=(0, 1))(cache, new)
    g2 = jax.grad(loss(lambda c, n: jnp.stack([attention.write_cache(c[i], n[i], offsets) for i in range(2)])),
                  argnums=(0, 1))(cache, new)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_release_without_tokenizer_loads_for_image_work_and_text_use_fails_in_one_line(tmp_path):
    for name in os.listdir(GOLDENS):
        if not name.endswith((".npz", ".png")) and name not in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            os.symlink(GOLDENS / name, tmp_path / name)
    rel = release.load_release(str(tmp_path), mesh_lib.make_mesh({"fsdp": -1}), param_dtype="float32",
                               dtype="float32")
    c = rel.cfg
    z = jnp.zeros((1, 4, 4, c.vae.z_channels))
    assert np.isfinite(np.asarray(rel.vae.decode(z))).all()
    with pytest.raises(TokenizerError, match=rf"^{tmp_path}: missing vocab.json and merges.txt; expected") as e:
        rel.tokenizer.encode("a red cube")
    assert "\n" not in str(e.value)
    with pytest.raises(TokenizerError):
        len(rel.tokenizer)


@pytest.mark.parametrize("spec, x_shape, w_shape", [("...i,io->...o", (1, 1, 16), (16, 24)),
                                                     ("...hd,hdo->...o", (1, 1, 4, 4), (4, 4, 24)),
                                                     ("...i,io->...o", (3, 1, 16), (16, 24))])
def test_one_row_matmul_equals_the_einsum(spec, x_shape, w_shape, monkeypatch):
    """The two-row form of a one-row bf16 matmul on CPU (YNNPACK reads bf16) gives the einsum's values."""
    monkeypatch.setattr(layers, "RAW_TAKE_MIN_BYTES", 0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=w_shape), jnp.bfloat16)
    got = jax.jit(lambda x, w: layers.matmul(x, w, spec, dtype=jnp.float32))(x, w)
    want = np.einsum(spec, np.asarray(x, np.float64), np.asarray(w, np.float64))
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert layers.matmul(x, w, spec).dtype == jnp.bfloat16  # default output dtype: x's


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("spec, x_shape, w_shape", [("...i,io->...o", (3, 5, 16), (16, 24)),
                                                     ("...i,iho->...ho", (3, 5, 16), (16, 4, 6)),
                                                     ("...hd,hdo->...o", (2, 3, 5, 4, 4), (4, 4, 24))])
def test_projection_as_one_2d_dot_equals_the_einsum(spec, x_shape, w_shape, dtype):
    """On CPU a projection runs as one [rows, in] x [in, out] dot: the einsum's values and gradients (fp32 to
    rounding, bf16 within 2 ulps of the largest value)."""
    rng = np.random.default_rng(1)
    x, w = (jnp.asarray(rng.normal(size=s), dtype) for s in (x_shape, w_shape))

    def einsum(x, w):
        return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)

    def f(fn):
        out = jax.jit(lambda x, w: fn(x, w).astype(jnp.float32))(x, w)
        cot = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
        grads = jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w).astype(jnp.float32) * cot), argnums=(0, 1)))(x, w)
        return [np.asarray(a, np.float32) for a in (out, *grads)]

    rng_state = rng.bit_generator.state
    want = f(einsum)
    rng.bit_generator.state = rng_state
    got = f(lambda x, w: layers.matmul(x, w, spec, dtype=jnp.float32))
    assert layers._is_projection(spec) and not layers._is_projection("...hd,hod->...o")
    for a, b in zip(got, want):
        tol = 1e-5 if dtype == jnp.float32 else 2 * 2 ** -8
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())
