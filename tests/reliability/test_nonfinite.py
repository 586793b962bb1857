"""Never train on non-finite values: a release with a NaN does not load (the error names the tensor), a step with a
non-finite loss or gradient is not applied (warned, counted) and the run stops at train.max_nonfinite_steps in a
row; a step whose rounds all had no learning signal is a WARNING with the count in the metrics."""
import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from alphagrpo_jax import integrity, train
from alphagrpo_jax.models.bagel import checkpoint, release, safetensors_io
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.rl import guards
from alphagrpo_jax.rl.learner import Learner
from tests.models.bagel.parity_utils import GOLDENS
from tests.test_train import tiny_config


def _release_with(tmp_path, edit):
    """A copy of the golden release whose ema.safetensors is rewritten (with a .sha256) after `edit(name, array)`."""
    out = tmp_path / "rel"
    shutil.copytree(GOLDENS, out)
    src = safetensors_io.SafetensorsFile(str(GOLDENS / "ema.safetensors"))
    entries = [(k, src.shape(k), src.dtype(k)) for k in src.keys()]
    safetensors_io.write(str(out / "ema.safetensors"), entries, lambda k: edit(k, np.array(src[k])), src.metadata)
    return out, entries


def test_release_with_a_nan_weight_does_not_load(tmp_path):
    target = {}

    def one_nan(name, arr):
        if not target and "float" in arr.dtype.name and arr.ndim == 2:
            target["name"] = name
            arr = arr.copy()
            arr.flat[arr.size // 2] = np.nan
        return arr

    out, _ = _release_with(tmp_path, one_nan)
    assert safetensors_io.verify_checksum(str(out / "ema.safetensors"))  # the file is intact: its values are not
    with pytest.raises(checkpoint.CheckpointError, match=f"tensor '{target['name']}' holds non-finite values"):
        release.load_release(str(out), mesh_lib.make_mesh({"fsdp": -1}))


def _grads():
    return {"a": jnp.ones((4, 4)), "b": {"c": jnp.ones(3, jnp.bfloat16)}}


def test_guard_skips_nonfinite_updates_and_stops_at_the_limit(caplog):
    guard = guards.StepGuard(max_nonfinite_steps=2, rounds_per_step=3)
    row = {"loss/total": 0.5}
    assert guard.update_ok(1, _grads(), 2, row) and row["update_skipped"] == 0 and row["rounds_skipped"] == 1
    nan = _grads()
    nan["b"]["c"] = nan["b"]["c"].at[1].set(jnp.nan)
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.rl.guards"):
        row = {"loss/total": 0.5}
        assert not guard.update_ok(2, nan, 3, row) and row["update_skipped"] == 1
    assert "step 2: non-finite grad b/c: update NOT applied (1 in a row" in caplog.text
    assert guard.update_ok(3, _grads(), 1, {"loss/total": 0.1})  # a finite step resets the count
    assert not guard.update_ok(4, _grads(), 1, {"loss/total": float("inf")})
    big = {"a": jnp.full((4, 4), 3e38, jnp.float32)}  # every value finite, the global norm overflows
    with pytest.raises(integrity.NonFiniteError, match=r"step 5: non-finite grad global norm .*2 step\(s\) in a row "
                                                       r"reached train.max_nonfinite_steps=2"):
        guard.update_ok(5, big, 1, {"loss/total": 0.1})
    with pytest.raises(integrity.NonFiniteError, match="step 6: the update made parameters non-finite: x"):
        guard.check_params(6, {"x": jnp.array([jnp.inf]), "y": jnp.ones(2)})
    with pytest.raises(ValueError, match="max_nonfinite_steps must be >= 1"):
        guards.StepGuard(0, 1)


def test_step_without_learning_signal_is_a_warning_with_counts(caplog):
    guard = guards.StepGuard(max_nonfinite_steps=3, rounds_per_step=4)
    row = {}
    with caplog.at_level(logging.WARNING, logger="alphagrpo_jax.rl.guards"):
        assert not guard.update_ok(7, None, 0, row)
    assert row == {"rounds_skipped": 4, "update_skipped": 1}
    assert "step 7: all 4 rounds were skipped (no learning signal" in caplog.text


def test_trainer_does_not_apply_nonfinite_gradients_and_stops(tmp_path, monkeypatch):
    """A real toy run whose gradients turn NaN (fault injected after the real gradient computation): no update is
    applied, each step is flagged in the metrics, and the run stops at the limit, naming the step and a leaf."""
    real = Learner.grads
    monkeypatch.setattr(Learner, "grads", lambda self, *a, **k: (lambda g, m: (
        jax.tree.map(lambda x: x * jnp.nan, g), m))(*real(self, *a, **k)))
    # The tiny family (its programs come from the compilation cache): steps 1 and 2 have signal (else the
    # assertions below fail, they cannot pass without a gradient computed).
    c = tiny_config(tmp_path, 5, {"train.max_nonfinite_steps": 2})
    with pytest.raises(integrity.NonFiniteError, match=r"step 2: non-finite grad .*lora.*2 step\(s\) in a row"):
        train.train(c)
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
    rows = [r for r in rows if "reward/mean" in r]
    assert [(r["step"], r["update_skipped"]) for r in rows] == [(1, 1)] and "grad_norm" not in rows[0]
    # Step 1's checkpoint holds the initial params (every LoRA B still 0): the NaN update was never applied; the
    # failing step 2 was neither saved nor logged (a rerun redoes it without doubling its row).
    assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["1"]
    saved = ocp.PyTreeCheckpointer().restore(os.path.join(tmp_path, "checkpoints", "1", "state"))
    lora_b = [np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(saved["params"])[0] if "lora_b" in str(p)]
    assert lora_b and all(np.all(x == 0) for x in lora_b)
