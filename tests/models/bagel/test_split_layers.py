"""layers.split_layers: a CPU inference copy of a model with one array per layer (and per expert) of each large
layer stack; scan_layers runs it layer by layer, with the stacked model's values (an edit with think through
the Pipeline, which splits on CPU)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from alphagrpo_jax.models import layers
from alphagrpo_jax.models.bagel import image_transform, release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.parallel import rules as rules_lib
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.text import TextSamplerConfig
from tests.models.bagel.parity_utils import GOLDENS


@pytest.fixture(scope="module")
def rel():
    return release.load_release(str(GOLDENS), mesh_lib.make_mesh({"fsdp": -1}), param_dtype="float32",
                                dtype="float32")


def _stacked_vars(module):
    return [(p, v) for p, v in nnx.to_flat_state(nnx.state(module))
            if (rules_lib.axes_of(v) or ("",))[0] == "layers"]


def test_split_holds_each_layer_and_expert_apart(rel, monkeypatch):
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 0)
    split = layers.split_layers(rel.model)
    stacked = dict(_stacked_vars(rel.model))
    assert stacked and any("vit" in "/".join(map(str, p)) for p in stacked)  # the LLM's and the ViT's stacks
    for path, var in _stacked_vars(split):
        value, want = var.get_value(), stacked[path].get_value()
        assert isinstance(value, layers.Split) and value.shape == want.shape and value.dtype == want.dtype
        experts = rules_lib.axes_of(var)[1:2] == ("expert",)
        for i in range(want.shape[0]):
            assert isinstance(value[i], layers.Split) == experts
            np.testing.assert_array_equal(np.asarray(value[i][1] if experts else value[i]),
                                          np.asarray(want[i, 1] if experts else want[i]))
    assert not any(isinstance(v.get_value(), layers.Split) for _, v in _stacked_vars(rel.model))  # a copy
    again = layers.split_layers(split)  # idempotent: the same buffers
    for (_, a), (_, b) in zip(_stacked_vars(split), _stacked_vars(again)):
        assert all(x is y for x, y in zip(jax.tree.leaves(a.get_value()), jax.tree.leaves(b.get_value())))


def test_split_only_stacks_over_the_threshold(rel):
    """The tiny release's layers are far under PRESLICE_MIN_BYTES: nothing is split (the stack scans)."""
    split = layers.split_layers(rel.model)
    assert not any(isinstance(v.get_value(), layers.Split) for _, v in _stacked_vars(split))


def test_split_model_generates_what_the_stacked_one_does(rel, monkeypatch):
    """An edit with think (a context with ViT and VAE images: mixed routing, where the expert is data; text
    decoding; the image loop with both CFG branches): the same image to fp32 rounding, split or stacked."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    kw = dict(cache_size=200, vae_transform=image_transform.ImageTransform(64, 48, 16),
              vit_transform=image_transform.ImageTransform(56, 42, 14))

    def run():
        pipe = Pipeline(rel, **kw)
        g = pipe.generate_images(["make it green"], images=[img], think=True, num_timesteps=3, seed=1,
                                 think_sampler=TextSamplerConfig(max_new_tokens=4, temperature=1.0))[0]
        split = any(isinstance(v.get_value(), layers.Split) for _, v in _stacked_vars(pipe.release.model))
        return g, split

    want, was_split = run()
    assert not was_split
    monkeypatch.setattr(layers, "PRESLICE_MIN_BYTES", 0)
    got, was_split = run()
    assert was_split  # the Pipeline splits on CPU
    assert got.think_ids == want.think_ids and len(want.think_ids) >= 1
    diff = np.abs(got.image.astype(int) - want.image)  # fp32 rounding: the unrolled layers fuse differently
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


def test_split_index_by_a_traced_expert():
    s = layers.Split([jnp.full((2, 3), 1.0), jnp.full((2, 3), 2.0)])
    assert layers.take(s, 1) is s.parts[1] and s[...] is s and len(s) == 2
    out = jax.jit(lambda s, e: layers.take(s, e))(s, jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(out), np.full((2, 3), 2.0))
    leaves, tree = jax.tree.flatten(s)
    assert len(leaves) == 2 and isinstance(jax.tree.unflatten(tree, leaves), layers.Split)


def test_other_platforms_keep_the_module(rel, monkeypatch):
    monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
    assert layers.split_layers(rel.model) is rel.model

