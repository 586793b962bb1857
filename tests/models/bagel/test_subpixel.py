"""subpixel.upsample2x_conv3x3 against the reference form (nearest 2x upsampling, then a 3x3 conv with padding 1),
and vae.Resample's use of it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax.models.bagel import vae
from alphagrpo_jax.models.bagel.subpixel import upsample2x_conv3x3


def reference(x, w):
    u = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return jax.lax.conv_general_dilated(u, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=jnp.float32, precision=jax.lax.Precision.HIGHEST)


def _inputs(b, h, w, c, d, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.normal(size=(b, h, w, c)), jnp.float32),
            jnp.asarray(rng.normal(size=(3, 3, c, d)) * (9 * c) ** -0.5, jnp.float32))


@pytest.mark.parametrize("shape", [(1, 4, 4, 8, 8), (2, 3, 5, 4, 6), (1, 1, 2, 3, 2), (1, 6, 2, 16, 4)])
def test_values_are_the_reference(shape):
    x, w = _inputs(*shape)
    got, want = jax.jit(upsample2x_conv3x3)(x, w), jax.jit(reference)(x, w)
    assert got.shape == want.shape == (shape[0], 2 * shape[1], 2 * shape[2], shape[4]) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_gradients_are_the_reference():
    x, w = _inputs(2, 3, 4, 4, 6)
    ct = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 8, 6)), jnp.float32)
    loss = lambda f: lambda x, w: jnp.sum(f(x, w) * ct)  # noqa: E731
    got = jax.grad(loss(upsample2x_conv3x3), argnums=(0, 1))(x, w)
    want = jax.grad(loss(reference), argnums=(0, 1))(x, w)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(r))))


def test_it_does_four_ninths_of_the_multiply_adds():
    x, w = _inputs(1, 16, 16, 32, 32)
    flops = lambda f: jax.jit(f).lower(x, w).compile().cost_analysis()["flops"]  # noqa: E731
    ratio = flops(upsample2x_conv3x3) / flops(reference)  # XLA leaves out taps on the padding
    assert 0.4 < ratio < 0.5, ratio  # 16 / 36 = 0.44 away from the borders


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_resample_up_is_upsample_then_conv(dtype):
    """fp32 kernels take the subpixel form, 16-bit ones the reference's (pairs summed in bf16 would round)."""
    up = vae.Resample(8, "up", rngs=nnx.Rngs(0), param_dtype=dtype)
    up.conv.bias[...] = jnp.linspace(-1, 1, 8).astype(dtype)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 5, 8)), dtype)
    u = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    got, want = up(x), up.conv(u)
    assert got.dtype == want.dtype == dtype
    if dtype == jnp.float32:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
