"""The trainer flags the launch scripts generate parse against the repo's real configs (locked, so a renamed key
is an error here, not on a TPU pod): gpu_check's SFT and RT2I runs, tpu_queued's multi-slice DCN flag, and the
overrides reward_server prints."""
import shlex

import pytest

from alphagrpo_jax import cli
from tests.launch.launch_utils import REPO, commands, remote

# ml_collections loads config files with importlib's load_module.
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def parse(config: str, overrides: list[str]):
    """The ConfigDict `python -m alphagrpo_jax.<entry> --config REPO/<config> <overrides>` would get."""
    return cli.load_config(str(REPO / config), overrides)


def test_gpu_check_runs_parse(launch):
    r = launch.run("gpu_check.sh", "--dry-run", "--python", "python3")
    assert r.returncode == 0, r.stderr
    cmds = commands(r.stdout)
    sft = next(c for c in cmds if c[1:3] == ["-m", "alphagrpo_jax.sft"])
    cfg = parse(sft[4], sft[5:])
    assert cfg.workdir.endswith("/sft") and cfg.export_dir == ""  # so the release lands in <workdir>/release
    train = next(c for c in cmds if c[0].endswith("gpu_single_host.sh"))
    config, workdir = train[train.index("--config") + 1], train[train.index("--workdir") + 1]
    cfg = parse(config, [f"--config.workdir={workdir}", *train[train.index("--") + 1:]])
    assert cfg.total_steps == 5 and cfg.model.attention == "cudnn" and cfg.model.dtype == "bfloat16"
    assert cfg.model.release == f"{sft[5].split('=', 1)[1]}/release"


def test_multislice_dcn_flag_parses(launch):
    r = launch.run("tpu_queued.sh", "train", "--dry-run", "--qr-id", "q", "--zone", "z", "--node-count", "4",
                   "--config", "configs/bagel_7b_rt2i.py", "--workdir", "gs://b/w")
    assert r.returncode == 0, r.stderr
    script = remote(commands(r.stdout)[0])
    start = script.index(" -m alphagrpo_jax.train ")
    words = shlex.split(script[start:script.index(" >>", start)])
    assert words[:4] == ["-m", "alphagrpo_jax.train", "--config", "configs/bagel_7b_rt2i.py"]
    cfg = parse(words[3], words[4:])
    assert cfg.mesh_dcn.data == 4 and cfg.workdir == "gs://b/w"


def test_reward_overrides_parse(launch):
    env = launch.env(VERIFIER_KEY="k")
    r = launch.run("reward_server.sh", "check", "--dry-run", "--endpoints",
                   "http://10.0.0.5:30000/v1,http://h2:8000/v1", "--api-key-env", "VERIFIER_KEY", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    cfg = parse("configs/bagel_7b_rt2i.py", shlex.split(lines[lines.index("# training overrides:") + 1]))
    assert tuple(cfg.reward.endpoints) == ("http://10.0.0.5:30000/v1", "http://h2:8000/v1")
    assert cfg.reward.api_key_env == "VERIFIER_KEY"
    r = launch.run("reward_server.sh", "serve", "--dry-run", "--advertise-host", "10.0.0.7")
    lines = r.stdout.splitlines()
    cfg = parse("configs/bagel_7b_rt2i.py", shlex.split(lines[lines.index("# training overrides:") + 1]))
    assert tuple(cfg.reward.endpoints) == ("http://10.0.0.7:30000/v1",)
    assert cfg.reward.model == "Qwen/Qwen3-VL-30B-A3B-Instruct"
