"""launch/reward_server.sh: the SGLang / vLLM serving commands it prints, the training overrides (valid
Python literals), key redaction, flag errors; and a real constant-verifier server started, checked, stopped."""
import ast
import os
import re
import socket
import subprocess
import sys

import pytest

from tests.launch.launch_utils import commands

PY = ("--python", sys.executable)


def _overrides(stdout: str) -> dict[str, str]:
    line = stdout.splitlines()[stdout.splitlines().index("# training overrides:") + 1]
    return dict(re.match(r"--config\.reward\.(\w+)=(.*)", w).groups() for w in line.split(" "))


def test_sglang_dry_run(launch):
    r = launch.run("reward_server.sh", "serve", "--dry-run", "--gpus", "4,5,6,7", "--dp", "4",
                   "--advertise-host", "10.0.0.5", "--server-flag=--enable-metrics")
    assert r.returncode == 0, r.stderr
    env, server, wait = commands(r.stdout)
    assert env == ["export", "CUDA_VISIBLE_DEVICES=4,5,6,7"]
    model = "Qwen/Qwen3-VL-30B-A3B-Instruct"
    assert server == ["setsid", "python3", "-m", "sglang.launch_server", "--model-path", model,
                      "--served-model-name", model, "--host", "0.0.0.0", "--port", "30000",
                      "--tp", "1", "--dp", "4", "--context-length", "4096", "--mem-fraction-static", "0.9",
                      "--max-running-requests", "4096", "--enable-multimodal", "--enable-torch-compile",
                      "--enable-metrics"]
    assert wait[2:5] == ["http://127.0.0.1:30000/v1", "--timeout", "1800"]
    o = _overrides(r.stdout)
    assert ast.literal_eval(ast.literal_eval(o["endpoints"])) == ("http://10.0.0.5:30000/v1",)
    assert o["model"] == "Qwen/Qwen3-VL-30B-A3B-Instruct"


def test_vllm_dry_run_with_tensor_parallel_and_key(launch):
    env = launch.env(VERIFIER_KEY="sk-secret-42")
    r = launch.run("reward_server.sh", "serve", "--dry-run", "--backend", "vllm", "--model",
                   "Qwen/Qwen3-VL-235B-A22B-Instruct", "--tp", "8", "--port", "8000", "--api-key-env", "VERIFIER_KEY",
                   "--advertise-host", "vlm-1", env=env)
    assert r.returncode == 0, r.stderr
    server = commands(r.stdout)[0]
    assert server[1:4] == ["vllm", "serve", "Qwen/Qwen3-VL-235B-A22B-Instruct"]
    for a, b in (("--tensor-parallel-size", "8"), ("--port", "8000"), ("--max-model-len", "4096"),
                 ("--gpu-memory-utilization", "0.9"), ("--api-key", "***")):
        assert server[server.index(a) + 1] == b
    assert "sk-secret-42" not in r.stdout + r.stderr
    o = _overrides(r.stdout)
    assert ast.literal_eval(ast.literal_eval(o["endpoints"])) == ("http://vlm-1:8000/v1",)
    assert o["api_key_env"] == "VERIFIER_KEY"


def test_check_dry_run_joins_endpoints(launch):
    r = launch.run("reward_server.sh", "check", "--dry-run", "--endpoints",
                   "http://10.0.0.5:30000/v1,http://10.0.0.6:30000/v1")
    assert r.returncode == 0, r.stderr
    assert commands(r.stdout)[0][2:] == ["http://10.0.0.5:30000/v1", "http://10.0.0.6:30000/v1", "--timeout", "60"]
    assert ast.literal_eval(ast.literal_eval(_overrides(r.stdout)["endpoints"])) == (
        "http://10.0.0.5:30000/v1", "http://10.0.0.6:30000/v1")


@pytest.mark.parametrize("args, message", [
    (("serve", "--gpus", "0,1", "--dp", "4"), "--gpus lists 2 GPUs but --tp 1 x --dp 4 needs 4"),
    (("serve", "--backend", "trt"), "--backend must be sglang, vllm, toy or constant"),
    (("serve", "--api-key-env", "UNSET_KEY_VAR"), "--api-key-env UNSET_KEY_VAR: that environment variable is empty"),
    (("serve", "--tp", "two"), "--tp must be a non-negative integer"),
    (("serve", "--port"), "flag --port needs a value"),
    (("check",), "missing --endpoints"),
    (("stop", "--log", "/nonexistent/x.log"), "no /nonexistent/x.log.pid: nothing to stop"),
    (("start",), "unknown command 'start'"),
])
def test_bad_input_is_named(launch, args, message):
    r = launch.run("reward_server.sh", *args, "--dry-run")
    assert r.returncode == 2 and message in r.stderr, r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_constant_server_serve_check_stop(launch, tmp_path):
    port, log = _free_port(), tmp_path / "verifier.log"
    r = launch.run("reward_server.sh", "serve", "--backend", "constant", *PY, "--host", "127.0.0.1", "--port",
                   str(port), "--log", str(log), "--detach", "--advertise-host", "127.0.0.1", "--wait-timeout", "60")
    pid_file = tmp_path / "verifier.log.pid"
    try:
        assert r.returncode == 0, r.stderr + log.read_text()
        assert f"# ready: http://127.0.0.1:{port}/v1 constant-verifier" in r.stdout
        o = _overrides(r.stdout)
        assert ast.literal_eval(ast.literal_eval(o["endpoints"])) == (f"http://127.0.0.1:{port}/v1",)
        assert o["model"] == "constant-verifier"
        pid = int(pid_file.read_text())
        os.kill(pid, 0)

        again = launch.run("reward_server.sh", "serve", "--backend", "constant", *PY, "--port", str(port),
                           "--log", str(log))
        assert again.returncode == 2 and "is running" in again.stderr

        check = launch.run("reward_server.sh", "check", *PY, "--endpoints", f"http://127.0.0.1:{port}/v1")
        assert check.returncode == 0 and _overrides(check.stdout)["model"] == "constant-verifier", check.stderr
    finally:
        stop = launch.run("reward_server.sh", "stop", "--log", str(log))
    assert stop.returncode == 0, stop.stderr
    assert not pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    down = launch.run("reward_server.sh", "check", *PY, "--endpoints", f"http://127.0.0.1:{port}/v1",
                      "--wait-timeout", "0")
    assert down.returncode == 2 and "not every endpoint answered" in down.stderr


def test_a_server_that_dies_is_reported_at_once(launch, tmp_path):
    log = tmp_path / "bad.log"
    r = launch.run("reward_server.sh", "serve", "--backend", "constant", *PY, "--port", str(_free_port()),
                   "--log", str(log), "--server-flag=--no-such-flag")
    assert r.returncode == 2 and "the server did not come up" in r.stderr
    assert "exited before" in r.stderr and "unrecognized arguments: --no-such-flag" in r.stderr
    assert not (tmp_path / "bad.log.pid").exists()


def test_stop_of_a_server_that_already_exited(launch, tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "old.log.pid").write_text(f"{gone.pid}\n")
    r = launch.run("reward_server.sh", "stop", "--log", str(tmp_path / "old.log"))
    assert r.returncode == 0 and f"(pid {gone.pid}) is not running" in r.stdout, r.stderr
    assert not (tmp_path / "old.log.pid").exists()
