import jax
import pytest

from alphagrpo_jax.parallel import mesh as mesh_lib


def test_fill_axis_and_axis_types():
    m = mesh_lib.make_mesh({"data": 1, "fsdp": -1, "tensor": 2})
    assert dict(m.shape) == {"data": 1, "fsdp": 4, "tensor": 2}
    assert m.axis_names == ("data", "fsdp", "tensor")
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)


@pytest.mark.parametrize("sizes, msg", [
    ({"data": 3, "fsdp": -1}, "not divisible"),
    ({"data": 2, "fsdp": 2, "tensor": 1}, "multiply to 4"),
    ({"data": -1, "fsdp": -1}, "at most one axis"),
    ({"expert": 2}, "unknown axis"),
])
def test_bad_meshes_have_clear_errors(sizes, msg):
    with pytest.raises(mesh_lib.MeshError, match=msg):
        mesh_lib.make_mesh(sizes)


def test_dcn_must_match_slices():
    # CPU devices form one slice: a DCN shape asking for 2 slices is an error.
    with pytest.raises(mesh_lib.MeshError, match="mesh_dcn"):
        mesh_lib.make_mesh({"fsdp": -1}, dcn={"data": 2})
