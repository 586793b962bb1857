"""gs:// on a real local GCS server (tests/gcs_server.py): what Orbax needs from it, checkpoints of many arrays,
generate and report reading and writing there. A training run whose base release, prompts, workdir, checkpoints,
sample grids, TensorBoard events and export all live in the server, preempted and resumed, is the dress rehearsal
(tests/test_dress_rehearsal.py)."""
import io
import json
import os

import jax
import numpy as np

from alphagrpo_jax import paths
from tests.models.bagel.parity_utils import GOLDENS

RELEASE_SUFFIXES = (".safetensors", ".json", ".txt")  # the golden folder also holds test cases (.npz, .png, .md)


def upload_release(src, dst: str) -> None:
    for name in sorted(os.listdir(src)):
        if name.endswith(RELEASE_SUFFIXES) and name not in ("cases_meta.json", "tolerances.json"):
            paths.copy(os.path.join(src, name), paths.join(dst, name))


def test_tensorstore_generations_on_the_server(gcs):
    """What OCDBT (Orbax's array format) needs from GCS: a read reports the object's generation, and a write
    conditioned on a stale generation is refused (tests/gcs_server.py adds both to the emulator)."""
    import tensorstore as ts

    kv = ts.KvStore.open({"driver": "gcs", "bucket": gcs.new_bucket()[len("gs://"):]}).result()
    first = kv.write("k", b"one").result().generation
    assert kv.read("k").result().stamp.generation == first and first != b""
    second = kv.write("k", b"two", if_equal=first).result().generation
    assert second != first and kv.read("k").result().value == b"two"
    refused = kv.write("k", b"three", if_equal=first).result().generation
    assert refused == b"" and kv.read("k").result().value == b"two"  # b"": unknown = the condition failed


def test_checkpoint_manager_on_gs_with_many_arrays(gcs):
    """Orbax through tensorstore's GCS driver: several steps of a many-array state (concurrent manifest writes,
    the case a generation-less server fails at random), restored exactly."""
    from alphagrpo_jax import checkpointing

    state = {f"w{i}": jax.numpy.full((4, 8), float(i)) for i in range(24)}
    target = checkpointing.abstract_with_shardings(state, jax.tree.map(lambda x: x.sharding, state))
    directory = paths.join(gcs.new_bucket(), "ckpt")
    mgr = checkpointing.CheckpointManager(directory, keep=2)
    for step in (1, 2, 3):
        assert mgr.save(step, jax.tree.map(lambda x: x + step, state), {"step": step})
    mgr.close()
    mgr = checkpointing.CheckpointManager(directory, keep=2)
    assert mgr.all_steps() == [2, 3]
    restored, extras = mgr.restore(target)
    mgr.close()
    assert extras == {"step": 3}
    for k, v in state.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(v) + 3)


def test_generate_reads_release_and_prompts_from_gs_and_writes_images_there(gcs, capsys):
    from PIL import Image

    from alphagrpo_jax import generate

    root = gcs.new_bucket()
    upload_release(GOLDENS, paths.join(root, "base"))
    paths.write_text(paths.join(root, "prompts.txt"), "a cat\n\na red circle\n")
    out = paths.join(root, "gen")
    assert generate.main(["--checkpoint", paths.join(root, "base"), "--prompts-file", paths.join(root, "prompts.txt"),
                          "--out", out, "--height", "32", "--width", "32", "--num-steps", "3",
                          "--cache-size", "320", "--compilation-cache", "off"]) == 0  # in process: no cache
    assert paths.listdir(out) == ["0000.png", "0001.png", "manifest.jsonl"]
    assert Image.open(io.BytesIO(paths.read_bytes(paths.join(out, "0001.png")))).size == (32, 32)
    assert f"wrote {out}/0001.png" in capsys.readouterr().out


def test_report_writes_its_plot_to_gs(gcs, tmp_path):
    from alphagrpo_jax import report

    rows = [{"step": s, "reward/mean": 0.1 * s} for s in range(1, 4)] + [{"step": 3, "eval/reward": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = paths.join(gcs.new_bucket(), "curves", "reward.png")
    assert report.main(["--workdir", str(tmp_path), "--out", out]) == 0
    assert paths.read_bytes(out)[:8] == b"\x89PNG\r\n\x1a\n"
