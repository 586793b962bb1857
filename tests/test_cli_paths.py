"""The programs as a user meets them: `--help` lists `--config`; relative paths in a config file resolve from the
config's root (so the shipped configs work from any folder) while command-line paths resolve from the current
folder; a run that fails its checks leaves no empty workdir behind."""
import os
import subprocess
import sys

import pytest

from alphagrpo_jax import cli, config_paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}


def test_shipped_config_paths_resolve_from_the_repository_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = cli.load_config(os.path.join(REPO, "configs", "toy_rt2i.py"), ["--config.data.eval_prompts=mine.jsonl"])
    assert c.model.release == os.path.join(REPO, "assets", "toy_base") and os.path.isdir(c.model.release)
    assert c.workdir == os.path.join(REPO, "workdir", "toy_rt2i")
    assert c.data.eval_prompts == "mine.jsonl"  # a command-line path: relative to the current folder
    c = cli.load_config(os.path.join(REPO, "configs", "toy_rt2i.py"), ["--config.workdir=runs/a",
                                                                      "--config.model.release=org/some-model"])
    assert (c.workdir, c.model.release) == ("runs/a", "org/some-model")


def test_a_users_config_outside_a_package_resolves_from_its_own_folder(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.jsonl").write_text("")
    (exp / "cfg.py").write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict(dict(workdir='out/run', model=dict(release='org/hub-id'),\n"
        "                                          data=dict(train_prompts='train.jsonl', eval_prompts='')))\n")
    monkeypatch.chdir(tmp_path)
    c = cli.load_config(str(exp / "cfg.py"))
    assert c.workdir == str(exp / "out" / "run") and c.data.train_prompts == str(exp / "train.jsonl")
    assert c.model.release == "org/hub-id" and c.data.eval_prompts == ""  # not in the root / unset: as written
    assert config_paths.root(os.path.join(REPO, "configs", "toy_sft.py")) == REPO


PROGRAMS = ["train", "sft", "evaluate", "export", "component_eval"]


def test_help_of_every_config_program_lists_config():
    procs = {m: subprocess.Popen([sys.executable, "-m", f"alphagrpo_jax.{m}", "--help"], env=ENV, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for m in PROGRAMS}
    for m, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode in (0, 1), (m, out[-2000:])  # absl exits 1 after --help
        assert "\n  --config: " in out, (m, out[-2000:])
        if m in ("export", "component_eval"):
            assert "\n  --workdir: " in out, m


@pytest.mark.parametrize("program, overrides", [
    ("sft", ["configs/toy_sft.py:tiny", "--config.data.rows=3"]),  # rows vs the 8-device mesh: refused in train()
    ("train", ["configs/toy_rt2i.py", "--config.rollout.group_size=1"]),  # refused before any model loads
])
def test_a_run_that_fails_its_checks_from_another_folder_leaves_no_workdir(tmp_path, program, overrides):
    spec, *rest = overrides
    r = subprocess.run([sys.executable, "-m", f"alphagrpo_jax.{program}", f"--config={REPO}/{spec}",
                        "--config.workdir=w", *rest], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode != 0
    assert ("data.rows" if program == "sft" else "group_size") in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "w").exists() and os.listdir(tmp_path) == []
