"""alphagrpo_jax/paths.py on a local folder and on a real local GCS server (tests/gcs_server.py): the same calls,
the same results."""
import os

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax import paths


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs").new_bucket() + "/root"


def test_write_read_list_remove(root):
    a = paths.join(root, "sub", "a.txt")
    assert not paths.exists(a) and paths.listdir(paths.join(root, "sub")) == []
    paths.makedirs(paths.dirname(a))
    paths.write_text(a, "héllo\n")
    paths.append_text(a, "more\n")
    paths.write_bytes(paths.join(root, "sub", "b.bin"), b"\x00\x01")
    assert paths.read_text(a) == "héllo\nmore\n"
    assert paths.read_bytes(paths.join(root, "sub", "b.bin")) == b"\x00\x01"
    assert paths.exists(a) and paths.isdir(paths.join(root, "sub")) and not paths.isdir(a)
    assert paths.listdir(paths.join(root, "sub")) == ["a.txt", "b.bin"]
    assert paths.listdir(root) == ["sub"]
    with paths.open(a) as f:
        assert [line for line in f] == ["héllo\n", "more\n"]
    assert paths.basename(a) == "a.txt" and paths.dirname(a) == paths.join(root, "sub")
    paths.remove(paths.join(root, "sub"))
    assert not paths.exists(a) and paths.listdir(root) == []


def test_write_is_atomic_and_leaves_no_temporary(root):
    p = paths.join(root, "x.json")
    paths.write_text(p, "old")
    paths.write_text(p, "new")
    assert paths.read_text(p) == "new" and paths.listdir(root) == ["x.json"]


def test_copy_and_local_copy_between_local_and_remote(root, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 << 20)  # several upload chunks' worth is not needed: one streamed put
    src.write_bytes(data)
    remote_or_local = paths.join(root, "c.bin")
    paths.copy(str(src), remote_or_local)
    back = tmp_path / "back.bin"
    paths.copy(remote_or_local, str(back))
    assert back.read_bytes() == data
    assert open(paths.local_copy(remote_or_local), "rb").read() == data
    paths.write_text(paths.join(root, "dir", "vocab.json"), "{}")
    paths.write_bytes(paths.join(root, "dir", "ema.safetensors"), b"big")
    folder = paths.local_copy(paths.join(root, "dir"), skip_suffixes=(".safetensors",))
    expected = ["vocab.json"] if paths.is_remote(root) else ["ema.safetensors", "vocab.json"]  # local: itself
    assert sorted(os.listdir(folder)) == expected


def test_save_image_matches_pil(root, tmp_path):
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    img.save(tmp_path / "ref.png")
    paths.save_image(paths.join(root, "i.png"), img)
    assert paths.read_bytes(paths.join(root, "i.png")) == (tmp_path / "ref.png").read_bytes()
    with pytest.raises(ValueError, match="unknown image extension"):
        paths.save_image(paths.join(root, "i.nope"), img)


def test_sees_objects_written_by_another_client(gcs):
    """The listing cache never hides what another process (here a second gcsfs instance) wrote."""
    import gcsfs

    root = gcs.new_bucket()
    assert paths.listdir(root) == []
    other = gcsfs.GCSFileSystem(skip_instance_cache=True)
    other.pipe_file(root[len("gs://"):] + "/late.txt", b"x")
    assert paths.exists(root + "/late.txt") and paths.listdir(root) == ["late.txt"]


def test_is_remote_and_join():
    assert paths.is_remote("gs://b/x") and not paths.is_remote("/a/b") and not paths.is_remote("file:///a")
    assert paths.join("gs://b/run", "a", "b.txt") == "gs://b/run/a/b.txt"
    assert paths.join("run", "a") == os.path.join("run", "a")
