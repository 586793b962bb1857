"""Mesh presets (configs/meshes.py): each fills its slice exactly, splits its round's batch evenly, and applies to
the 7B config as a variant; bad names and uneven batches are clear errors."""
import pytest

from alphagrpo_jax.parallel import mesh as mesh_lib
from configs import bagel_7b_rt2i, meshes


@pytest.mark.parametrize("name", sorted(meshes.MESHES))
def test_preset_fills_its_slices_and_splits_the_batch(name):
    p = meshes.get_config(name)
    ici = mesh_lib.resolve_axis_sizes(dict(p.mesh), p.chips // p.slices)
    dcn = mesh_lib.resolve_axis_sizes(dict(p.mesh_dcn), p.slices)
    assert ici[0] * ici[1] * ici[2] * dcn[0] * dcn[1] * dcn[2] == p.chips
    assert 28 % ici[2] == 0 and 4 % ici[2] == 0  # tensor must divide the 7B's 28 heads and 4 KV heads
    c = bagel_7b_rt2i.get_config(name)
    assert c.rollout.prompts_per_round * c.rollout.rounds_per_step == meshes.PROMPTS_PER_UPDATE
    b = c.rollout.prompts_per_round * c.rollout.group_size
    assert b % meshes.batch_shards(p) == 0
    assert dict(c.mesh) == dict(p.mesh) and dict(c.mesh_dcn) == dict(p.mesh_dcn)
    assert (c.hardware.topology, c.hardware.hbm_gib, c.model.remat) == (p.topology, p.hbm_gib, p.remat)
    assert c.model.attention == p.get("attention", bagel_7b_rt2i.get_config().model.attention)


def test_without_variant_the_7b_config_is_unchanged():
    c = bagel_7b_rt2i.get_config()
    assert dict(c.mesh) == dict(data=1, fsdp=-1, tensor=1) and "hardware" not in c
    assert (c.rollout.prompts_per_round, c.rollout.rounds_per_step) == (8, 4)


def test_unknown_variant_lists_the_presets():
    with pytest.raises(ValueError, match="unknown variant 'v9-1'.*v5p-128"):
        bagel_7b_rt2i.get_config("v9-1")


def test_uneven_batch_is_an_error():
    c = bagel_7b_rt2i.get_config()
    c.rollout.group_size = 5  # 16 prompts x 5 = 80 samples over 32 batch shards
    with pytest.raises(ValueError, match="80 does not split over data x fsdp = 32"):
        meshes.apply(c, "v5p-128")
