"""Dress rehearsal of the 7B recipe: `configs/bagel_7b_srr.py:mixed` (RT2I and SRR rounds alternate) and, `slow`,
`configs/bagel_7b_rt2i.py` run from the command line as on a pod, unchanged except for a tiny release (the golden
tiny release), tiny image size, group and step counts, the `cpu-8` mesh preset (v5p-64's axis shape on the 8
simulated CPU devices), the toy verifier served over HTTP as the DVReward endpoint, and the base release, prompts
and workdir in a local GCS server. SIGTERM during the first optimizer step (which finishes and is saved), resume,
the second step, export from the run's recorded config, and the exported release loads back from gs://.

It checks what only shows at this scale: fp32 trainable masters and optimizer state under a bf16 model, the
reference's gradient normalisation (divisor = units x (window + 1)), LoRA A drawn with std 1/rank, the
advantage population independent of the preset's prompts per round, the behaviour prompts recorded in the run's
config, every file on gs:// (nothing written locally: metrics, TensorBoard events, sample grids, checkpoints, the
export, which equals a local export byte for byte), preemption exit code 75 and an exact resume.

The default run rehearses the mixed config only: with the rehearsal's overrides the RT2I config is the mixed one
without its SRR rounds (test_rt2i_config_is_the_mixed_run_without_srr_rounds), so the mixed run's RT2I rounds and
evaluation run the RT2I config's programs. The RT2I config's own rehearsal is `slow`; `-m "not slow or slow"` runs
both in one module, SRR first, on one compilation cache, so the RT2I config's three processes load its programs.
Same run from a shell (with a GCS bucket and a verifier endpoint of your own):

    python -m alphagrpo_jax.train --config configs/bagel_7b_rt2i.py:cpu-8 $(python -m tests.test_dress_rehearsal)
"""
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml

from alphagrpo_jax import paths
from tests.models.bagel.parity_utils import GOLDENS
from tests.test_gcs_e2e import upload_release

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"srr": "configs/bagel_7b_srr.py:mixed,cpu-8", "rt2i": "configs/bagel_7b_rt2i.py:cpu-8"}  # run order
VERIFIER_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct"  # the 7B configs' reward.model, served by the toy verifier


def overrides(workdir: str, data: str, endpoint: str, release: str = str(GOLDENS)) -> list[str]:
    """Everything the rehearsal changes in the 7B configs: release, sizes, step counts, endpoint, gs:// paths."""
    return [f"--config.model.release={release}", f"--config.workdir={workdir}",
            f"--config.data.train_prompts={data}/train.jsonl", f"--config.data.eval_prompts={data}/eval.jsonl",
            f"--config.reward.endpoints=('{endpoint}',)",
            # 2 rounds of the preset's 4 prompts per step: one advantage population (8 prompts) a step, not 4
            "--config.total_steps=2", "--config.rollout.rounds_per_step=2", "--config.checkpoint.every=1",
            "--config.rollout.group_size=2",  # a round of 8 samples, 2 per batch shard
            "--config.rollout.height=32", "--config.rollout.width=32", "--config.rollout.text.max_new_tokens=8",
            # schedules of 6 steps with a 2-step SDE window: a divisor of units x (2 + 1) (RT2I 1 x 3, mixed 2 x 3)
            # tells the reference's normalisation from a mean over the step's rounds
            "--config.rollout.image.num_timesteps=6", "--config.rollout.image.sde_window=2",
            "--config.rollout.image.sde_window_range=(0,5)",
            "--config.task.srr.stage1_timesteps=4", "--config.task.srr.num_timesteps=6",
            "--config.task.srr.sde_window=2", "--config.task.srr.sde_window_range=(0,5)",
            # KV slots for 32 px contexts (the 7B configs size theirs for 512 px images and 1024 think tokens)
            "--config.rollout.cache_size=384",
            # 'bagel' resizes the first draw to >= 512 px, beyond the release; the toy plug-in registers 'toy'
            "--config.plugins=('alphagrpo_jax.toy.plugin',)", "--config.task.srr.transforms=toy",
            "--config.eval.every=2", "--config.eval.num_prompts=4", "--config.eval.batch_size=4",
            "--config.eval.num_timesteps=4"]


def config_overrides(kind: str, workdir: str, data: str, endpoint: str, release: str = str(GOLDENS)) -> list[str]:
    """`overrides` for CONFIGS[kind]; a mixed step's 4 rounds: 2 RT2I rounds of 4 prompts make one advantage
    population of 8."""
    return overrides(workdir, data, endpoint, release) + (
        ["--config.rollout.rounds_per_step=4"] if kind == "srr" else [])


def _env(cache: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    flags = env.get("XLA_FLAGS", "")  # tests/conftest.py's: 8 devices, long collective timeouts
    if "xla_force_host_platform_device_count" not in flags:
        flags += " --xla_force_host_platform_device_count=8"
    env["XLA_FLAGS"] = flags.strip()
    return env


def _train(kind, args, cwd, env, preempt=False):
    """Runs the trainer; with `preempt`, sends SIGTERM while step 1 runs: once the step-0 eval is logged (step 1's
    rollout, which compiles, takes tens of seconds after it)."""
    cmd = [sys.executable, "-m", "alphagrpo_jax.train", "--config", os.path.join(REPO, CONFIGS[kind]), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(1800, proc.kill)  # a hung run fails (killed: exit code -9), it does not hang CI
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:  # a run that ends without the eval fails the exit-code check
            lines.append(line)
            if preempt and "alphagrpo_jax.train: eval step 0: " in line:
                proc.send_signal(signal.SIGTERM)
        proc.wait()
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(lines)


def _rows(path):
    return [json.loads(line) for line in paths.read_text(path).splitlines() if line.endswith("}")]


@pytest.fixture(scope="module")
def verifier():
    from alphagrpo_jax.toy.serve import make_server

    with make_server(model=VERIFIER_MODEL) as server:
        yield server.url


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))


def test_rt2i_config_is_the_mixed_run_without_srr_rounds():
    """Why the RT2I config's rehearsal may be `slow`: with the rehearsal's overrides, configs/bagel_7b_rt2i.py is
    configs/bagel_7b_srr.py:mixed with the SRR rounds taken out (rounds alternate, so the mixed step's 4 rounds
    hold the RT2I config's 2), key for key."""
    from alphagrpo_jax import cli, run_config

    mixed, rt2i = (run_config.flatten(cli.load_config(os.path.join(REPO, CONFIGS[kind]), config_overrides(
        kind, "gs://bucket/run", "gs://bucket/data", "http://127.0.0.1:1/v1"))) for kind in ("srr", "rt2i"))
    assert mixed["task.kinds"] == ["rt2i", "srr"] and rt2i["task.kinds"] == ["rt2i"]
    assert mixed["rollout.rounds_per_step"] == 2 * rt2i["rollout.rounds_per_step"]
    assert mixed.keys() == rt2i.keys()
    assert {k for k in mixed if mixed[k] != rt2i[k]} == {"task.kinds", "rollout.rounds_per_step"}


@pytest.fixture(scope="module", params=["srr", pytest.param("rt2i", marks=pytest.mark.slow)])
def rehearsal(request, gcs, verifier, jax_cache, tmp_path_factory):
    """(kind, workdir, export folder, [(exit code, output) of train, train again, export], folder the programs ran
    in) for one 7B config (`kind`: srr (its mixed variant) or rt2i)."""
    kind = request.param
    from alphagrpo_jax.toy.prompt_files import write_prompt_files

    root = gcs.new_bucket(f"dress-{kind}")
    base = paths.join(root, "base")  # the base release on gs:// too
    upload_release(GOLDENS, base)
    files = write_prompt_files(paths.join(root, "data"), None, 1, seed=0)
    data = paths.dirname(files["train"])
    cwd = tmp_path_factory.mktemp("cwd")  # the programs run here: nothing may land in it
    env = _env(jax_cache)
    logs = tmp_path_factory.mktemp("logs")
    workdir, release = paths.join(root, kind), paths.join(root, f"{kind}_release")
    args = config_overrides(kind, workdir, data, verifier, base)
    runs = [_train(kind, args, cwd, env, preempt=True), _train(kind, args, cwd, env)]
    done = subprocess.run([sys.executable, "-m", "alphagrpo_jax.export", f"--workdir={workdir}", f"--out={release}"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    runs.append((done.returncode, done.stdout + done.stderr))
    for i, (_, text) in enumerate(runs):  # the whole output of each command, for a failing test's reader
        (logs / f"{kind}_{i}.log").write_text(text)
    return kind, workdir, release, runs, cwd


def test_preempted_run_resumes_and_exports(rehearsal):
    _, workdir, _, (first, second, export), cwd = rehearsal
    assert first[0] == 75, first[1][-3000:]
    assert "preempted at step 1; checkpoint saved" in first[1] and "held-out reward" not in first[1]
    assert second[0] == 0, second[1][-3000:]
    assert "resumed from step 1" in second[1]
    assert "held-out reward: step 0: " in second[1] and " -> step 2: " in second[1]  # the whole run's evals
    assert export[0] == 0, export[1][-3000:]
    rows = [r for r in _rows(paths.join(workdir, "metrics.jsonl")) if "reward/mean" in r]
    assert [r["step"] for r in rows] == [1, 2]  # no row twice after the resume
    assert paths.listdir(paths.join(workdir, "checkpoints")) == ["1", "2"]
    assert not os.listdir(cwd), os.listdir(cwd)  # nothing local, no "gs:" folder
    assert not any("fsspec" in text for _, text in (first, second, export))  # no line per file read from gs://


def test_grids_and_tensorboard_live_in_the_bucket(rehearsal):
    _, workdir, *_ = rehearsal
    grids = [n for n in paths.listdir(workdir) if n.startswith("samples_")]
    assert grids == ["samples_step00000.png", "samples_step00002.png"]  # the evals' grids
    assert all(paths.read_bytes(paths.join(workdir, n))[:8] == b"\x89PNG\r\n\x1a\n" for n in grids)
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(paths.join(workdir, "tensorboard")))


def test_recorded_config_carries_the_reference_rules_and_prompts(rehearsal):
    _, workdir, *_ = rehearsal
    text = paths.read_text(paths.join(workdir, "config.yaml"))
    assert "!!python" not in text and "_locked" not in text
    c = yaml.safe_load(text)
    assert c["model"]["param_dtype"] == "bfloat16" and c["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
    assert c["loss"]["grad_normalization"] == "reference" and c["train"]["skipped_rounds"] == "redraw"
    assert c["train"]["lora_init"] == "gaussian" and c["advantage"]["population"] == 8
    assert c["rollout"]["prompts_per_round"] == 4  # the preset's, not the population's
    assert c["model"]["release"].startswith("gs://")
    for value in (c["prompts"]["think_system"], c["prompts"]["reflection"], c["reward"]["verifier_system_prompt"]):
        assert isinstance(value, str) and value.strip() and not value.startswith("file:")


def test_gradient_normalisation_and_population_as_the_reference(rehearsal):
    kind, workdir, *_ = rehearsal
    c = yaml.safe_load(paths.read_text(paths.join(workdir, "config.yaml")))
    window = c["rollout"]["image"]["sde_window"] if kind == "rt2i" else c["task"]["srr"]["sde_window"]
    units = c["rollout"]["prompts_per_round"] * c["rollout"]["rounds_per_step"] // c["advantage"]["population"]
    for r in (r for r in _rows(paths.join(workdir, "metrics.jsonl")) if "reward/mean" in r):
        assert r["grad/divisor"] == units * (window + 1), r  # RT2I 1 x 3, mixed 2 x 3 with the overrides above
        assert r["adv/population"] == c["advantage"]["population"] * c["rollout"]["group_size"], r
        assert np.isfinite(r["grad_norm"]) and r["rounds_used"] >= 1


def test_checkpoint_holds_fp32_masters_with_the_reference_lora_init(rehearsal):
    import jax
    import orbax.checkpoint as ocp

    _, workdir, *_ = rehearsal
    path = paths.join(workdir, "checkpoints", "2", "state")
    checkpointer = ocp.PyTreeCheckpointer()
    meta = checkpointer.metadata(path).item_metadata
    state = checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta))  # host arrays, whatever the saved sharding
    leaves = [(jax.tree_util.keystr(k), np.asarray(v)) for k, v in jax.tree_util.tree_leaves_with_path(state)]
    floats = [(k, v) for k, v in leaves if np.issubdtype(v.dtype, np.floating)]
    assert floats and all(v.dtype == np.float32 for _, v in floats), [(k, v.dtype) for k, v in floats]
    assert any(k.startswith("['opt']") for k, _ in floats)  # the AdamW moments too
    rank = yaml.safe_load(paths.read_text(paths.join(workdir, "config.yaml")))["train"]["lora_rank"]
    lora_a = np.concatenate([v.ravel() for k, v in leaves if k.startswith("['params']") and "'lora_a'" in k])
    assert abs(lora_a.std() * rank - 1.0) < 0.05, lora_a.std()  # 2 steps at lr 5e-5 barely move it


def test_export_to_the_bucket_equals_a_local_export(rehearsal, tmp_path):
    """The export CLI wrote the release to gs://; the same export to a local folder is byte for byte the same, and
    an export onto an existing release is refused."""
    from alphagrpo_jax import export, run_config

    _, workdir, remote, _, _ = rehearsal
    config = run_config.resolve(workdir, None)
    local = export.export(config, str(tmp_path / paths.basename(remote)))  # the model card names its folder
    assert paths.listdir(remote) == sorted(os.listdir(local))
    for name in sorted(os.listdir(local)):
        assert paths.read_bytes(paths.join(remote, name)) == paths.read_bytes(os.path.join(local, name)), name
    with pytest.raises(FileExistsError, match="already holds an ema.safetensors"):
        export.export(config, remote)


def test_exported_release_loads_from_gs(rehearsal):
    import jax
    from flax import nnx

    from alphagrpo_jax.models.bagel import release
    from alphagrpo_jax.parallel import mesh as mesh_lib

    _, _, out, _, _ = rehearsal
    assert paths.exists(paths.join(out, "ema.safetensors.sha256"))
    mesh = mesh_lib.make_mesh(dict(data=1, fsdp=4, tensor=2))
    rel = release.load_release(out, mesh)
    assert all(bool(np.isfinite(np.asarray(x, np.float32)).all())
               for x in jax.tree.leaves(nnx.state(rel.model, nnx.Param)))


if __name__ == "__main__":  # prints the overrides for a shell run (see the module docstring)
    print(" ".join(overrides("gs://YOUR_BUCKET/dress_rt2i", "gs://YOUR_BUCKET/data/prompts",
                             "http://127.0.0.1:8000/v1")))
