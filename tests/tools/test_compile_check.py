"""Ahead-of-time compiles of a training config's whole RT2I programs (tools/compile_rt2i.py) for a v5p:2x2x2
topology from this CPU host, through libtpu's compiler: the tiny model's rollout and learner programs fit with
positive per-device memory; an impossible fit exits 1 naming the program; every TPU mesh preset builds its mesh
on its topology (multi-slice included). Needs libtpu (the `test` extra installs it)."""
import importlib.util
import os

import pytest

if importlib.util.find_spec("libtpu") is None:  # a test dependency: missing is an error, not a skip
    raise ImportError("libtpu is not importable, so nothing can be compiled for TPU here; install the test extra "
                      "(pip install -c constraints.txt -e '.[test]')")

from alphagrpo_jax import cli  # noqa: E402
from alphagrpo_jax.parallel import mesh as mesh_lib  # noqa: E402
from alphagrpo_jax.tools import compile_check, compile_rt2i  # noqa: E402
from configs import meshes  # noqa: E402

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "toy_rt2i.py")
# The toy recipe at test sizes on a fsdp=4 x tensor=2 mesh of the 8 v5p chips (model: tiny_a, FLUX autoencoder).
OVERRIDES = ["--config.mesh.fsdp=4", "--config.mesh.tensor=2", "--config.rollout.text.max_new_tokens=6",
             "--config.rollout.cache_size=128", "--config.rollout.image.num_timesteps=6",
             "--config.rollout.image.sde_window=2", "--config.rollout.image.sde_window_range=(0, 5)"]
TINY = ["--config", CONFIG, "--topology", "v5p:2x2x2", "--model", "tiny_a", *OVERRIDES, "--prompt-tokens", "32"]


@pytest.fixture(scope="module")
def tpu_mesh():
    return mesh_lib.make_mesh({"fsdp": 4, "tensor": 2}, devices=compile_check.topology_devices("v5p:2x2x2"))


def _fits(mesh, programs, *overrides):
    config = cli.load_config(CONFIG, OVERRIDES + [f"--config.{o}" for o in overrides])
    return compile_rt2i.compile_rt2i(config, mesh, "tiny_a", programs, prompt_tokens=32, log=lambda *_: None)


def _check(fits, names):
    assert list(fits) == names
    for name, f in fits.items():
        m = f.memory
        assert m.argument_gib > 0 and m.temp_gib > 0 and f.resident_gib >= 0, name
        assert 0 < f.total_gib < compile_check.HBM_GIB["v5p"], name


def test_tiny_rollout_programs_fit(tpu_mesh):
    names = ["prefill", "decode", "image", "vae_decode"]
    fits = _fits(tpu_mesh, names)
    _check(fits, names)
    # decode donates its context: the KV cache it returns aliases the one it was given.
    assert fits["decode"].memory.alias_gib > 0


def test_tiny_learner_programs_fit(tpu_mesh):
    # Without CFG the learner compiles in half the time; the CFG'd velocity it would add is the sampler's
    # (`guided_velocity`), compiled with CFG above.
    fits = _fits(tpu_mesh, ["grads", "apply"], "rollout.cfg.text_scale=1.0")
    _check(fits, ["grads", "apply"])
    # apply donates params and optimizer state; grads holds a rollout (caches) besides the params.
    assert fits["apply"].memory.alias_gib > 0
    assert fits["grads"].memory.argument_gib > fits["apply"].memory.argument_gib


def test_impossible_fit_exits_with_a_clear_message(capsys):
    rc = compile_check.main(TINY + ["--programs", "apply", "--hbm-gib", "1e-6"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "apply" in out and "DOES NOT FIT" in out
    assert "error: apply do(es) not fit in 1e-06 GiB of HBM per chip on v5p:2x2x2" in err


@pytest.mark.parametrize("name", sorted(n for n, p in meshes.MESHES.items() if p["platform"] == "tpu"))
def test_tpu_presets_build_their_mesh_on_their_topology(name):
    p = meshes.get_config(name)
    devices = compile_check.topology_devices(p.topology, p.slices)
    assert len(devices) == p.chips
    mesh = mesh_lib.make_mesh(dict(p.mesh), dict(p.mesh_dcn) if p.slices > 1 else None, devices=devices)
    assert mesh.size == p.chips
    if p.slices > 1:  # data over DCN: each half of the data axis is one slice
        for i in range(mesh.shape["data"]):
            assert {d.slice_index for d in mesh.devices[i].flat} == {i}
