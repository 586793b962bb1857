import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
CFG = os.path.join(HERE, "fixtures", "tiny_config.py")
MAIN = ("from alphagrpo_jax import cli; "
        "cli.run(lambda c: print('RESULT', c.steps, c.optim.lr, c.mesh.fsdp))")


def _run(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_config_arg_overrides_and_print():
    r = _run(f"--config={CFG}:7", "--config.optim.lr=0.5")
    assert r.returncode == 0, r.stderr
    assert "RESULT 7 0.5 -1" in r.stdout
    assert "optim:" in r.stdout and "lr: 0.5" in r.stdout  # the config printed itself
    # as plain YAML (what train records in the workdir), not an object dump
    assert "!!python" not in r.stdout and "_locked" not in r.stdout and "_type_safe" not in r.stdout


@pytest.mark.parametrize("args, msg", [
    (["--config.optim.lrr=1"], "lrr"),          # typo: locked config refuses new keys
    (["--config.steps=abc"], "steps"),          # type mismatch
])
def test_bad_overrides_fail(args, msg):
    r = _run(f"--config={CFG}", *args)
    assert r.returncode != 0
    assert msg in r.stderr


def test_config_required():
    r = _run()
    assert r.returncode != 0
    assert "--config is required" in r.stderr
