"""gs:// end to end on a real local GCS server (tests/gcs_server.py): a short GRPO run (configs/toy_rt2i.py shrunk
to the tiny golden release) whose base release, workdir, toy prompt files, checkpoints, sample grids and exported
release all live in the server; then a resume from it, and the export loads back from gs://."""
import io
import json
import logging
import os

import jax
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax import export, metrics as metrics_lib, paths, train
from alphagrpo_jax.data.prompts import PromptRecords
from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.rl import trainer_state
from tests.models.bagel.parity_utils import GOLDENS
from tests.test_train import tiny_config


RELEASE_SUFFIXES = (".safetensors", ".json", ".txt")  # the golden folder also holds test cases (.npz, .png, .md)


def upload_release(src, dst: str) -> None:
    for name in sorted(os.listdir(src)):
        if name.endswith(RELEASE_SUFFIXES) and name not in ("cases_meta.json", "tolerances.json"):
            paths.copy(os.path.join(src, name), paths.join(dst, name))


def gcs_config(root: str, steps: int):
    """tests/test_train.py's tiny family (its programs come from the compilation cache), one round per step, an
    eval (and grid) at step 0, TensorBoard on."""
    return tiny_config(paths.join(root, "run"), steps, {
        "model.release": paths.join(root, "base"), "rollout.rounds_per_step": 1, "advantage.population": 2,
        "eval.every": 5, "log.grid_size": 2, "log.tensorboard": True})


@pytest.fixture(scope="module")
def gcs_run(gcs, tmp_path_factory):
    """(bucket root, local folder the run was started in, first run, resumed run, first run's learner): 1 step on
    gs://, then resumed to 2 (each run compiles its programs: the cost of this test)."""
    root = gcs.new_bucket("e2e")
    upload_release(GOLDENS, paths.join(root, "base"))
    cwd = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(cwd)  # anything written to a relative local path instead of gs:// lands here, where it is checked
    logs, logger = _Messages(), logging.getLogger("alphagrpo_jax.train")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(logs)
    try:
        first, first_learner = train.run(gcs_config(root, 1))
        logs.messages.clear()
        resumed = train.train(gcs_config(root, 2))
    finally:
        os.chdir(old)
        logger.removeHandler(logs)
        logger.setLevel(level)
    resumed["log"] = list(logs.messages)
    return root, cwd, first, resumed, first_learner


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_run_and_resume_live_in_the_bucket(gcs_run):
    root, cwd, first, resumed, _ = gcs_run
    run = paths.join(root, "run")
    assert first["final_step"] == 1 and resumed["final_step"] == 2
    assert "resumed from step 1" in resumed["log"]
    assert paths.listdir(paths.join(run, "checkpoints")) == ["1", "2"]
    for split in ("train", "eval"):
        assert len(PromptRecords(paths.join(run, "data", "prompts", f"{split}.jsonl"))) > 0
    assert [n for n in paths.listdir(run) if n.startswith("samples_")] == ["samples_step00000.png"]
    assert paths.read_bytes(paths.join(run, "samples_step00000.png"))[:8] == b"\x89PNG\r\n\x1a\n"
    local = sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file())
    assert not local, local  # metrics.jsonl and TensorBoard events too: nothing local, no "gs:" folder
    assert [r["step"] for r in metrics_lib.read_metrics(paths.join(run, "metrics.jsonl")) if "reward/mean" in r] \
        == [1, 2]
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(paths.join(run, "tensorboard")))


def test_checkpoint_on_gs_restores_the_trained_state(gcs_run):
    """Step 1's checkpoint on gs:// (what the resume started from) holds exactly the first run's final params."""
    root, _, _, _, first_learner = gcs_run
    state, extras = trainer_state.restore_checkpoint(gcs_config(root, 2), first_learner, step=1)
    assert int(extras["step"]) == 1
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 first_learner.trainable, state["params"])


def test_export_to_the_bucket_matches_a_local_export_and_loads(gcs_run, tmp_path):
    root, *_ = gcs_run
    config = gcs_config(root, 2)
    remote = export.export(config, paths.join(root, "release"))
    local = export.export(config, str(tmp_path / "release"))
    assert paths.listdir(remote) == sorted(os.listdir(local))
    for name in sorted(os.listdir(local)):
        assert paths.read_bytes(paths.join(remote, name)) == (tmp_path / "release" / name).read_bytes(), name
    mesh = mesh_lib.mesh_from_config(config)
    a, b = release.load_release(remote, mesh), release.load_release(local, mesh)
    assert a.cfg == b.cfg and a.tokenizer.encode("a red cube") == b.tokenizer.encode("a red cube")
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)),
                 nnx.state(a.model, nnx.Param), nnx.state(b.model, nnx.Param))
    with pytest.raises(FileExistsError, match="already holds an ema.safetensors"):
        export.export(config, remote)


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
