"""The high-level API and CLI on the tiny golden release: T2I with think, editing, understanding."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.text import TextSamplerConfig
from tests.models.bagel.parity_utils import GOLDENS


@pytest.fixture(scope="module")
def pipe():
    rel = release.load_release(str(GOLDENS), mesh_lib.make_mesh({"fsdp": -1}), param_dtype="float32",
                               dtype="float32")
    return Pipeline(rel, cache_size=320)


def test_think_t2i_is_deterministic_and_batch_consistent(pipe):
    kw = dict(think=True, height=32, width=48, num_timesteps=5, seed=3,
              think_sampler=TextSamplerConfig(max_new_tokens=6, temperature=1.0))
    a = pipe.generate_images(["a red cube", "two blue balls"], **kw)
    b = pipe.generate_images(["a red cube", "two blue balls"], **kw)
    assert a[0].image.shape == (32, 48, 3) and a[0].image.dtype == np.uint8
    assert np.array_equal(a[0].image, b[0].image) and a[1].think_ids == b[1].think_ids
    assert 1 <= len(a[0].think_ids) <= 6 and isinstance(a[0].think, str)
    assert not np.array_equal(a[0].image, a[1].image)


def test_edit_keeps_the_input_size(pipe):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    from alphagrpo_jax.models.bagel import image_transform
    pipe_small = Pipeline(pipe.release, cache_size=200, vae_transform=image_transform.ImageTransform(64, 48, 16),
                          vit_transform=image_transform.ImageTransform(56, 42, 14))
    g = pipe_small.generate_image("make it green", image=im, num_timesteps=4)
    assert g.image.shape == (48, 64, 3)


def test_understand_returns_text(pipe):
    im = Image.fromarray(np.zeros((28, 42, 3), np.uint8))
    from alphagrpo_jax.models.bagel import image_transform
    p = Pipeline(pipe.release, cache_size=64, vit_transform=image_transform.ImageTransform(42, 28, 14))
    out = p.understand([im, im], ["What is in the image?", "Is it dark?"], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_cli_writes_png(tmp_path):
    out = tmp_path / "x.png"
    r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.generate", "--checkpoint", str(GOLDENS), "--prompt",
                        "a cat", "--out", str(out), "--height", "32", "--width", "32", "--num-steps", "4", "--think",
                        "--think-tokens", "4", "--cache-size", "320"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(out).size == (32, 32)
    assert "[think 0]" in r.stdout and "denoising" in r.stderr


def test_default_cache_is_what_the_context_needs_and_gives_the_same_image(pipe):
    """cache_size=None sizes every context of a call to the longest one's need (generate's rule); the image
    equals that of a larger fixed cache (extra slots are masked)."""
    from alphagrpo_jax.sampling import context as ctx_lib
    auto = Pipeline(pipe.release)
    cond = [[auto._text("a red cube")]]
    need = ctx_lib.cache_size_for(cond, auto.cfg, 0)
    assert auto.slots((cond, 0), ([[]], 0)) == need
    assert auto.slots((cond, 7)) == ctx_lib.cache_size_for(cond, auto.cfg, 7) > need
    assert auto.build(cond, None).cache.size == need
    assert Pipeline(pipe.release, cache_size=320).slots((cond, 0)) == 320
    kw = dict(height=32, width=32, num_timesteps=4, seed=1)
    a, b = auto.generate_image("a red cube", **kw).image, pipe.generate_image("a red cube", **kw).image
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # masked slots add exact zeros; sum order may differ
    assert isinstance(auto.build(cond, None), ctx_lib.Context)


def test_decode_images_jitted_equals_op_by_op(pipe):
    import jax
    import jax.numpy as jnp
    from alphagrpo_jax.models.bagel.vae import to_uint8, unpatchify_latent
    c = pipe.cfg
    h, w = 2 * c.latent_downsample, 3 * c.latent_downsample
    lat = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, c.patch_latent_dim)), jnp.float32)
    with jax.disable_jit():
        z = unpatchify_latent(lat, 2, 3, c.latent_patch_size, c.vae.z_channels)
        eager = np.asarray(to_uint8(pipe.release.vae.decode(z)))
    got = pipe.decode_images(lat, h, w)
    assert got.shape == (2, h, w, 3) and got.dtype == np.uint8
    # jit may fuse differently than op-by-op: uint8 levels agree to within one
    assert np.abs(got.astype(int) - eager.astype(int)).max() <= 1
