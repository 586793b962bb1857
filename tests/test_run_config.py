"""run_config: the resolved config as readable YAML in the workdir, read back, compared; train records it and
checks a resume against it; `export --workdir RUN` needs no retyped overrides; a structure mismatch (another
lora_rank) is one line on stderr and exit code 2, before any model loads."""
import json
import os
import subprocess
import sys

import jax
import pytest
import yaml

from alphagrpo_jax import checkpointing, paths, run_config, train
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from configs import toy_rt2i
from tests.test_train import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_yaml_is_plain_and_round_trips():
    c = toy_rt2i.get_config()
    text = run_config.to_yaml(c)
    assert "!!python" not in text and "_locked" not in text and "_type_safe" not in text
    assert isinstance(yaml.safe_load(text), dict)
    back = run_config.from_yaml(text)
    assert run_config.flatten(back) == run_config.flatten(c)
    assert back.rollout.image.sde_window_range == tuple(c.rollout.image.sde_window_range)  # tuples stay tuples
    assert back.train.lora_targets == tuple(c.train.lora_targets)
    with pytest.raises(ValueError, match="config.yaml: expected a mapping"):
        run_config.from_yaml("- a\n- b\n")


def test_structure_keys_must_match_others_are_allowed():
    run, given = toy_rt2i.get_config(), toy_rt2i.get_config()
    given.total_steps = run.total_steps + 10
    given.optim.clip_norm = run.optim.clip_norm / 2
    hard, soft = run_config.differences(run, given)
    assert hard == [] and [s.split(":")[0] for s in soft] == ["optim.clip_norm", "total_steps"]
    given.train.lora_rank = run.train.lora_rank * 2
    given.optim.clip_norm = 0.0  # clipping off: another optimizer state
    hard, _ = run_config.differences(run, given)
    assert hard == [f"optim.clip_norm: run has {run.optim.clip_norm!r}, given 0.0",
                    f"train.lora_rank: run has {run.train.lora_rank}, given {run.train.lora_rank * 2}"]
    with pytest.raises(run_config.ConfigMismatch) as e:
        run_config.check(run, given, "RUN/config.yaml")
    assert e.value.code == 2 and "\n" not in str(e.value)
    assert str(e.value).startswith("config mismatch with RUN/config.yaml: optim.clip_norm: run has")
    # Full fine-tuning has no adapters: the LoRA keys do not matter then.
    run.train.params = given.train.params = "full"
    given.optim.clip_norm = run.optim.clip_norm
    assert run_config.differences(run, given)[0] == []


def test_write_read_on_an_object_store():
    c = toy_rt2i.get_config()
    c.workdir = "memory://runs/a"
    assert run_config.write(c, c.workdir) == "memory://runs/a/config.yaml"
    assert run_config.flatten(run_config.read(c.workdir)) == run_config.flatten(c)
    with pytest.raises(run_config.RunConfigError, match="memory://runs/b/config.yaml: not found") as e:
        run_config.read("memory://runs/b")
    assert e.value.code == 2


def test_record_checks_a_resume_and_resolve_reads_the_run(tmp_path, caplog):
    c = toy_rt2i.get_config()
    c.workdir = str(tmp_path)
    (tmp_path / "reflect.txt").write_text("Again, for {prompt}.\n")
    c.prompts.reflection = f"file:{tmp_path / 'reflect.txt'}"
    run_config.record(c)
    assert run_config.read(str(tmp_path)).prompts.reflection == "Again, for {prompt}."  # the text, not the path
    other = toy_rt2i.get_config()
    other.workdir, other.train.lora_rank = str(tmp_path), 3
    run_config.record(other)  # no checkpoints yet: nothing to protect, the new config is recorded
    assert run_config.read(str(tmp_path)).train.lora_rank == 3
    (tmp_path / "checkpoints" / "1").mkdir(parents=True)
    with pytest.raises(run_config.ConfigMismatch, match=r"train.lora_rank: run has 3, given 8"):
        run_config.record(_at(tmp_path))
    more = _at(tmp_path, lora_rank=3)
    more.total_steps = 99
    with caplog.at_level("INFO", logger="alphagrpo_jax.run_config"):
        run_config.record(more)
    assert "total_steps: run has 40, given 99" in caplog.text
    # resolve: --workdir alone gives the run's config; with --config it checks that one.
    assert run_config.resolve(str(tmp_path), None).total_steps == 99
    assert run_config.resolve(str(tmp_path), _at(tmp_path, lora_rank=3)).total_steps == 40
    with pytest.raises(run_config.ConfigMismatch):
        run_config.resolve(str(tmp_path), _at(tmp_path))
    with pytest.raises(run_config.RunConfigError, match="give --workdir RUN"):
        run_config.resolve(None, None)
    bad = _at(tmp_path / "other")
    bad.prompts.think_system = f"file:{tmp_path / 'missing.txt'}"
    with pytest.raises(run_config.RunConfigError, match=r"^prompts.think_system: prompt file .* not found"):
        run_config.record(bad)


def _at(workdir, lora_rank=None):
    c = toy_rt2i.get_config()
    c.workdir = str(workdir)
    if lora_rank is not None:
        c.train.lora_rank = lora_rank
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run's workdir as train leaves it (recorded config with its overrides: the tiny release, small
    rollouts; an Orbax checkpoint of the learner's {params, opt} at step 1, adapters moved off zero), without
    the minutes of compiling a real step (tests/test_train.py trains and exports for real)."""
    wd = tmp_path_factory.mktemp("run")
    c = tiny_config(wd, 1)
    run_config.record(c)
    mesh = mesh_lib.mesh_from_config(c)
    with rules_lib.use_rules(mesh):
        _, _, learner, _ = train.build(c, mesh)
        params = jax.tree.map(lambda x: x + 0.01, learner.trainable)
        mgr = checkpointing.CheckpointManager(os.path.join(wd, "checkpoints"), keep=1)
        mgr.save(1, {"params": params, "opt": learner.opt_state}, {"step": 1, "data": {}})
        mgr.close()
    return wd


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})


def test_export_needs_only_the_workdir(trained, tmp_path):
    assert run_config.read(str(trained)).model.release == tiny_config(trained, 1).model.release
    r = _cli("alphagrpo_jax.export", f"--workdir={trained}", f"--out={tmp_path / 'rel'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(tmp_path / "rel" / "export.json"))["step"] == "1"
    assert paths.exists(str(tmp_path / "rel" / "ema.safetensors"))
    assert "!!python" not in r.stdout and "lora_rank: 8" in r.stdout  # the readable config print


@pytest.mark.parametrize("program", ["alphagrpo_jax.train", "alphagrpo_jax.export", "alphagrpo_jax.component_eval"])
def test_another_lora_rank_is_one_line_and_exit_code_2(trained, tmp_path, program):
    rank = tiny_config(trained, 1).train.lora_rank
    args = [f"--config={REPO}/configs/toy_rt2i.py", f"--config.model.release={tiny_config(trained, 1).model.release}",
            f"--config.train.lora_rank={rank * 2}"]
    if program.endswith("train"):
        args += [f"--config.workdir={trained}"]
    elif program.endswith("export"):
        args += [f"--workdir={trained}", f"--out={tmp_path / 'rel'}"]
    else:
        args += [f"--workdir={trained}"]
    r = _cli(program, *args)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].endswith(f"config mismatch with {trained}/config.yaml: train.lora_rank: run has {rank}, "
                             f"given {rank * 2}")
    assert "Traceback" not in r.stderr and not (tmp_path / "rel").exists()
