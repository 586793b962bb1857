"""`python -m alphagrpo_jax.generate` as a user runs it, on the tiny golden release (sizes read from its config):
sampling defaults from the release's generation_config.json, impossible sizes and caches refused before anything
compiles, per-prompt seeds whatever the batch, manifest.jsonl, --understand --out, Hub ids, the compilation
cache; and the release files the project writes (toy base, export)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from alphagrpo_jax import cli, compile_cache, export
from alphagrpo_jax.models.bagel import config as config_lib
from alphagrpo_jax.sampling import generation_config
from tests.models.bagel.parity_utils import GOLDENS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = config_lib.from_release_dir(str(GOLDENS))
D = CFG.latent_downsample  # the smallest drawable side; images here are 1-2 latent tokens a side


def generate(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "alphagrpo_jax.generate", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def linked_release(folder, **settings):
    """A release folder of links to the golden release's files (+ a generation_config.json of `settings`)."""
    folder.mkdir(parents=True)
    for name in os.listdir(GOLDENS):
        os.symlink(GOLDENS / name, folder / name)
    if settings:
        generation_config.write(str(folder), settings)
    return folder


def test_sampling_defaults_come_from_the_release_folder(tmp_path):
    rel = linked_release(tmp_path / "rel", height=2 * D, width=D, num_timesteps=3, think_tokens=3, cfg_text=2.0)
    out, cache = tmp_path / "x.png", tmp_path / "jax_cache"
    r = generate("--checkpoint", rel, "--prompt", "a cat", "--think", "--out", out, "--compilation-cache", cache)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(out).size == (D, 2 * D)  # the file's size, not 1024 px
    assert (tmp_path / "x.txt").read_text().strip() == r.stdout.split("[think 0] ")[1].split("\n")[0].strip()
    assert "loading" in r.stderr and "compiling (first call)" in r.stderr and "denoising" in r.stderr
    assert os.listdir(cache), "the persistent compilation cache stayed empty"


def test_impossible_sizes_are_refused_before_the_model_loads():
    for h, word in ((D + 1, f"latent downsample {D}"), ((CFG.max_latent_size + 1) * D, "max_latent_size")):
        r = generate("--checkpoint", GOLDENS, "--prompt", "a cat", "--out", "/tmp/never.png", "--height", h,
                     "--width", D, timeout=120)
        assert r.returncode == 2 and word in r.stderr, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and "loading" not in r.stderr


def test_too_small_cache_is_refused_with_the_size_needed(tmp_path):
    r = generate("--checkpoint", GOLDENS, "--prompt", "a cat", "--out", tmp_path / "x.png", "--height", D,
                 "--width", D, "--cache-size", 2)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--cache-size 2: the longest context needs" in r.stderr.strip().splitlines()[-1]


def test_each_prompt_samples_with_its_own_seed_whatever_the_batch(tmp_path):
    prompts = ["a red cube", "two blue balls", "a green cone"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    common = ["--checkpoint", GOLDENS, "--prompts-file", tmp_path / "p.txt", "--height", D, "--width", 2 * D,
              "--num-steps", 3, "--think", "--think-tokens", 3, "--think-temperature", 1.0, "--seed", 5]
    for b in (1, 2):  # batch 2 pads its last batch
        r = generate(*common, "--batch-size", b, "--out", tmp_path / f"b{b}")
        assert r.returncode == 0, r.stderr[-2000:]
    for k in range(len(prompts)):
        a, b = (np.asarray(Image.open(tmp_path / f"b{n}" / f"{k:04d}.png")) for n in (1, 2))
        np.testing.assert_array_equal(a, b)
        assert (tmp_path / "b1" / f"{k:04d}.txt").read_text() == (tmp_path / "b2" / f"{k:04d}.txt").read_text()
    rows = [json.loads(x) for x in (tmp_path / "b2" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == prompts and [r["seed"] for r in rows] == [5, 6, 7]
    assert [r["file"] for r in rows] == ["0000.png", "0001.png", "0002.png"]
    assert rows[1]["think"] == (tmp_path / "b2" / "0001.txt").read_text()
    assert rows[0]["settings"]["batch_size"] == 2 and rows[0]["settings"]["num_steps"] == 3 and rows[0]["time"]


def test_understand_writes_the_answer_to_out(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 42, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    r = generate("--checkpoint", GOLDENS, "--image", tmp_path / "i.png", "--prompt", "what is it?", "--understand",
                 "--out", tmp_path / "a.txt")
    assert r.returncode == 0, r.stderr[-2000:]
    answer = (tmp_path / "a.txt").read_text()
    assert answer.strip() and answer.strip() in r.stdout


def test_a_hugging_face_hub_id_is_a_release(tmp_path):
    """A Hub id resolves through huggingface_hub's cache (offline here: a snapshot laid out as `hf download`
    leaves it); an id with no snapshot is one line with the download command."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--someone--tiny-bagel"
    linked_release(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    r = generate("--checkpoint", "someone/tiny-bagel", "--prompt", "a cat", "--out", tmp_path / "x.png",
                 "--height", D, "--width", D, "--num-steps", 2, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "x.png").size == (D, D)
    r = generate("--checkpoint", "someone/missing", "--prompt", "a cat", "--out", tmp_path / "y.png", env=env,
                 timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "hf download someone/missing --local-dir DIR" in r.stderr


def test_toy_base_generation_config_is_its_sft_eval_settings():
    config = cli.load_config(os.path.join(ROOT, "configs", "toy_sft.py"))
    from alphagrpo_jax.toy import sft_source

    want = json.loads(json.dumps(sft_source.generation(config.eval)))
    assert generation_config.read(os.path.join(ROOT, "assets", "toy_base")) == {
        **want, "plugins": tuple(want["plugins"])}


def test_cli_programs_set_up_the_compilation_cache(tmp_path, monkeypatch):
    r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.export", f"--workdir={tmp_path / 'none'}",
                        f"--out={tmp_path / 'o'}", f"--compilation_cache={tmp_path / 'cc'}"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stderr[-2000:]  # no such run, but the cache folder was set up first
    assert (tmp_path / "cc").is_dir()
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.folder() is None and compile_cache.folder(str(tmp_path)) == str(tmp_path)
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax_own"))  # JAX's own setting next
    assert compile_cache.folder() == str(tmp_path / "jax_own")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.folder() == str(tmp_path / "alphagrpo_jax" / "jax")


def test_export_does_not_copy_the_base_models_card_or_eval(tmp_path):
    base = linked_release(tmp_path / "base", height=D, width=D)
    for name in ("eval.json", "eval.png", "export.json"):
        (base / name).write_text("{}")
    names = export.copy_base_files(str(base), str(tmp_path / "out"))
    assert "llm_config.json" in names and "ae.safetensors" in names
    assert not {"eval.json", "eval.png", "README.md", "export.json", "ema.safetensors",
                generation_config.FILE} & set(os.listdir(tmp_path / "out"))


@pytest.mark.parametrize("bad", ['{"height": 32, "steps": 4}', "[1]"])
def test_a_bad_generation_config_is_one_line(tmp_path, bad):
    rel = linked_release(tmp_path / "rel")
    (rel / generation_config.FILE).write_text(bad)
    r = generate("--checkpoint", rel, "--prompt", "a cat", "--out", tmp_path / "x.png", timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert generation_config.FILE in r.stderr
