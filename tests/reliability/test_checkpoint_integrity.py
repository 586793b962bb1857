"""Damaged checkpoints, as a storage fault leaves them: real Orbax steps written by CheckpointManager, then bytes
overwritten, flipped or cut off. A damaged step is never restored silently: restore names it, sets it aside and
falls back to the newest intact step; with none intact (or an explicit damaged step) it is an error."""
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alphagrpo_jax import checkpointing, integrity
from alphagrpo_jax.parallel.mesh import make_mesh

# Orbax leaves un-awaited read coroutines behind when a damaged step fails to restore (harmless).
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(mesh, step):
    """Incompressible float data (so every byte of the data file matters) plus an int leaf, sharded."""
    w = jax.random.normal(jax.random.key(step), (256, 64), jnp.float32)
    return {"params": {"w": jax.device_put(w, NamedSharding(mesh, P("fsdp", None))),
                       "b": jax.device_put(jnp.full(8, float(step), jnp.bfloat16), NamedSharding(mesh, P()))},
            "count": jax.device_put(jnp.int32(step), NamedSharding(mesh, P()))}


def _target(mesh):
    s = _state(mesh, 0)
    return checkpointing.abstract_with_shardings(s, jax.tree.map(lambda x: x.sharding, s))


def _write(directory, mesh, steps=(1, 2)):
    ckpt = checkpointing.CheckpointManager(str(directory), keep=None)
    for step in steps:
        ckpt.save(step, _state(mesh, step), {"step": step, "data": {"next_index": 10 * step}})
    ckpt.close()


def _largest_data_file(step_dir):
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "state")) for f in fs]
    return max(files, key=os.path.getsize)


def _overwrite_4k(path):
    size = os.path.getsize(path)
    assert size > 8192
    with open(path, "r+b") as f:
        f.seek(size // 2 - 2048)
        f.write(np.random.default_rng(0).bytes(4096))


def _flip_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _truncate_extras(step_dir):
    _truncate(os.path.join(step_dir, "extras", "metadata"))


@pytest.mark.parametrize("damage,reason", [
    (lambda d: _overwrite_4k(_largest_data_file(d)), "(checksum mismatch|Orbax cannot read)"),
    (lambda d: _flip_byte(_largest_data_file(d)), "(checksum mismatch|Orbax cannot read)"),
    (lambda d: _truncate(_largest_data_file(d)), "Orbax cannot read"),
    (_truncate_extras, r"extras file .*extras/metadata is unreadable or not JSON"),
], ids=["4KiB_garbage", "flipped_byte", "truncated_data", "truncated_extras"])
def test_damaged_latest_step_falls_back_to_the_newest_intact_one(tmp_path, caplog, damage, reason):
    mesh = make_mesh({"fsdp": -1})
    d = tmp_path / "ck"
    _write(d, mesh)
    damage(str(d / "2"))
    ckpt = checkpointing.CheckpointManager(str(d), keep=None)
    with pytest.raises(checkpointing.CheckpointDamagedError, match=f"step 2 .* is damaged: {reason}"):
        ckpt.restore(_target(mesh), step=2)  # an explicit step: an error, nothing moved
    assert ckpt.all_steps() == [1, 2]
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.checkpointing"):
        state, extras = ckpt.restore(_target(mesh))
    assert extras == {"step": 1, "data": {"next_index": 10}}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.asarray(_state(mesh, 1)["params"]["w"]))
    msg = caplog.text
    assert f"checkpoint step 2 ({d}/2) is damaged" in msg and "falling back to step 1" in msg, msg
    # Set aside (not deleted), so the resumed run can save step 2 again.
    aside = os.listdir(str(d) + ".damaged")
    assert len(aside) == 1 and aside[0].startswith("2-")
    assert ckpt.all_steps() == [1]
    assert ckpt.save(2, _state(mesh, 2), {"step": 2})
    ckpt.close()
    again = checkpointing.CheckpointManager(str(d), keep=None)
    assert again.restore(_target(mesh))[1] == {"step": 2}
    again.close()


def test_no_intact_step_is_an_error_listing_each_and_moves_nothing(tmp_path):
    mesh = make_mesh({"fsdp": -1})
    d = tmp_path / "ck"
    _write(d, mesh)
    _flip_byte(_largest_data_file(str(d / "1")))
    _truncate_extras(str(d / "2"))
    ckpt = checkpointing.CheckpointManager(str(d), keep=None)
    with pytest.raises(checkpointing.CheckpointDamagedError, match="no intact checkpoint") as e:
        ckpt.restore(_target(mesh))
    assert "step 2" in str(e.value) and "step 1" in str(e.value)
    assert ckpt.all_steps() == [1, 2] and not os.path.exists(str(d) + ".damaged")
    ckpt.close()


def test_restore_target_mismatch_is_not_mistaken_for_damage(tmp_path):
    """A wrong restore target (e.g. another LoRA rank) fails on every step: nothing is set aside."""
    mesh = make_mesh({"fsdp": -1})
    d = tmp_path / "ck"
    _write(d, mesh)
    wrong = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] * 2,) + x.shape[1:] if x.ndim else x.shape,
                                                        x.dtype, sharding=x.sharding), _target(mesh))
    ckpt = checkpointing.CheckpointManager(str(d), keep=None)
    with pytest.raises(checkpointing.CheckpointDamagedError):
        ckpt.restore(wrong)
    assert ckpt.all_steps() == [1, 2] and not os.path.exists(str(d) + ".damaged")
    ckpt.close()


def test_edited_extras_and_nonfinite_state(tmp_path):
    mesh = make_mesh({"fsdp": -1})
    d = tmp_path / "ck"
    _write(d, mesh)
    meta = d / "2" / "extras" / "metadata"
    extras = json.loads(meta.read_text())
    extras["data"]["next_index"] = 999  # valid JSON, wrong content
    meta.write_text(json.dumps(extras))
    ckpt = checkpointing.CheckpointManager(str(d), keep=None)
    with pytest.raises(checkpointing.CheckpointDamagedError, match="extras do not match their checksum"):
        ckpt.restore(_target(mesh), step=2)
    bad = _state(mesh, 3)
    bad["params"]["w"] = bad["params"]["w"].at[5, 5].set(jnp.nan)
    with pytest.raises(integrity.NonFiniteError, match="refusing to save step 3: non-finite values in params/w"):
        ckpt.save(3, bad, {"step": 3})
    ckpt.close()


def test_step_without_checksums_is_checked_for_finiteness_and_warned(tmp_path, caplog):
    """A step saved before digests existed (no "integrity" in its extras) still restores, with a warning; a
    non-finite one is damaged."""
    import orbax.checkpoint as ocp

    mesh = make_mesh({"fsdp": -1})
    d = str(tmp_path / "ck")
    mgr = ocp.CheckpointManager(d, options=ocp.CheckpointManagerOptions(create=True), item_names=("state", "extras"))
    nan = _state(mesh, 2)
    nan["params"]["b"] = nan["params"]["b"] * jnp.inf
    for step, st in ((1, _state(mesh, 1)), (2, nan)):
        mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(st),
                                               extras=ocp.args.JsonSave({"step": step})))
    mgr.wait_until_finished()
    mgr.close()
    ckpt = checkpointing.CheckpointManager(d, keep=None)
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.checkpointing"):
        _, extras = ckpt.restore(_target(mesh))
    ckpt.close()
    assert extras == {"step": 1}
    assert "step 2" in caplog.text and "non-finite values in params/b" in caplog.text
    assert "step 1" in caplog.text and "has no checksums" in caplog.text


def test_digests_do_not_depend_on_the_sharding():
    mesh_a, mesh_b = make_mesh({"fsdp": -1}), make_mesh({"data": 2, "tensor": 4})
    x = jax.random.normal(jax.random.key(0), (64, 32))
    a = integrity.inspect({"x": jax.device_put(x, NamedSharding(mesh_a, P("fsdp", None)))})[0]
    b = integrity.inspect({"x": jax.device_put(x, NamedSharding(mesh_b, P("tensor", "data")))})[0]
    c = integrity.inspect({"x": x.at[3, 7].set(jnp.nextafter(x[3, 7], jnp.inf))})[0]
    assert a == b != c


# ------------------------------------------------------------------------------------------------ release files
def _small_release_file(path):
    from alphagrpo_jax.models.bagel import safetensors_io

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(5, np.float32)}
    safetensors_io.write(str(path), [(k, v.shape, v.dtype) for k, v in arrays.items()], arrays.__getitem__)
    return arrays


def test_written_files_carry_a_sha256_that_loads_verify(tmp_path):
    import hashlib

    from alphagrpo_jax.models.bagel import safetensors_io

    path = tmp_path / "ema.safetensors"
    arrays = _small_release_file(path)
    side = (tmp_path / "ema.safetensors.sha256").read_text()
    assert side == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ema.safetensors\n"  # `sha256sum -c` format
    assert safetensors_io.verify_checksum(str(path))
    np.testing.assert_array_equal(safetensors_io.SafetensorsFile(str(path))["a"], arrays["a"])
    _flip_byte(str(path))
    with pytest.raises(safetensors_io.SafetensorsError, match=r"ema.safetensors: sha256 [0-9a-f]{64} does not match "
                                                                r".*ema.safetensors.sha256"):
        safetensors_io.verify_checksum(str(path))
    assert not safetensors_io.verify_checksum(str(tmp_path / "no_sidecar.safetensors"))


def test_damaged_release_weights_are_one_line_errors(tmp_path):
    """The golden release's ema.safetensors truncated, with a garbage header, or damaged under its .sha256: each is a
    one-line error naming the file, what was found and what was expected (not a reshape or overflow error)."""
    import shutil

    from alphagrpo_jax.models.bagel import release, safetensors_io
    from tests.models.bagel.parity_utils import GOLDENS

    rel = tmp_path / "rel"
    shutil.copytree(GOLDENS, rel)
    ema = rel / "ema.safetensors"
    good = ema.read_bytes()
    mesh = make_mesh({"fsdp": -1})
    cases = [
        (good[: len(good) - 1000], r"ema.safetensors: truncated: \d+ bytes, the header declares \d+ bytes of tensor "
                                   r"data \(expected a file of \d+ bytes\)"),
        (good[:100], r"ema.safetensors: not a safetensors file or truncated: its first 8 bytes give a header of \d+ "
                     r"bytes, the file has 100"),
        (np.random.default_rng(0).bytes(64) + good[64:], r"ema.safetensors: not a safetensors file or truncated"),
        (good[:3], r"ema.safetensors: 3 bytes, too short to be a safetensors file"),
    ]
    for data, want in cases:
        ema.write_bytes(data)
        with pytest.raises(safetensors_io.SafetensorsError, match=want) as e:
            release.load_release(str(rel), mesh)
        assert "\n" not in str(e.value)
    # A file this project wrote (sha256 beside it), then damaged in place: the checksum catches what the layout
    # checks cannot.
    src = safetensors_io.SafetensorsFile(str(GOLDENS / "ema.safetensors"))
    safetensors_io.write(str(ema), [(k, src.shape(k), src.dtype(k)) for k in src.keys()], lambda k: np.array(src[k]),
                         src.metadata)
    assert safetensors_io.verify_checksum(str(ema))
    _flip_byte(str(ema))
    with pytest.raises(safetensors_io.SafetensorsError, match="does not match .*ema.safetensors.sha256"):
        release.load_release(str(rel), mesh)


def test_an_exception_after_an_async_save_still_finalises_it(tmp_path):
    """A trainer stopped by an error (e.g. the non-finite guard) right after starting an async save keeps that step."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = ("import jax.numpy as jnp\nfrom alphagrpo_jax import checkpointing\n"
              f"c = checkpointing.CheckpointManager({str(tmp_path / 'ck')!r})\n"
              "c.save(4, {'w': jnp.ones((512, 512))}, {'step': 4})\nraise RuntimeError('stopped')\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"})
    assert r.returncode == 1 and "RuntimeError: stopped" in r.stderr
    assert checkpointing.CheckpointManager(str(tmp_path / "ck")).latest_step() == 4
