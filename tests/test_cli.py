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


def test_load_config_is_the_command_line_loader():
    """`cli.load_config` (tests, tools, benchmarks) parses `path.py[:arg]` and `--config.a.b=v` exactly as the
    programs do: the same values, a locked config, one-line errors."""
    from alphagrpo_jax import cli
    from alphagrpo_jax.errors import UsageError

    c = cli.load_config(f"{CFG}:7", ["--config.optim.lr=0.5", "--config.mesh.fsdp=2"])
    assert (c.steps, c.optim.lr, c.mesh.fsdp) == (7, 0.5, 2)
    with pytest.raises(AttributeError):
        c.new_key = 1  # locked, as for a program
    with pytest.raises(UsageError, match=r"^--config.optim.lrr=1: config.optim has no key 'lrr'; its keys: \['b2', 'lr'\]"):
        cli.load_config(CFG, ["--config.optim.lrr=1"])
    with pytest.raises(UsageError, match="^config override 'optim.lr=1': expected --config.a.b=value$"):
        cli.load_config(CFG, ["optim.lr=1"])
    with pytest.raises(UsageError, match="steps"):
        cli.load_config(CFG, ["--config.steps=abc"])
    with pytest.raises(UsageError, match="No such file"):
        cli.load_config(os.path.join(HERE, "fixtures", "missing.py"))


def test_a_config_names_its_plugins(tmp_path):
    """`config.plugins` modules are imported before main runs; an unknown one is a one-line usage error."""
    (tmp_path / "my_plugin.py").write_text("import builtins\nbuiltins.MY_PLUGIN_LOADED = True\n")
    (tmp_path / "cfg.py").write_text("import ml_collections\n\ndef get_config(arg=None):\n"
                                     "    return ml_collections.ConfigDict(dict(plugins=(arg or 'my_plugin',)))\n")
    main = ("import builtins; from alphagrpo_jax import cli; "
            "cli.run(lambda c: print('LOADED', builtins.MY_PLUGIN_LOADED))")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", main, f"--config={tmp_path / 'cfg.py'}"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0 and "LOADED True" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", main, f"--config={tmp_path / 'cfg.py'}:no_such_plugin"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: config.plugins: no module 'no_such_plugin'; expected importable module names such as "
        "'alphagrpo_jax.toy.plugin'"]
