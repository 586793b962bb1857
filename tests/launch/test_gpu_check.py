"""launch/gpu_check.sh: the steps and commands it plans (--dry-run), and a real run on this GPU-less machine,
where the GPU probe must fail, the later steps still run, and the summary and log land in --out."""
import sys

from tests.launch.launch_utils import commands


def _steps(stdout):
    return [line.split("]")[0][5:] for line in stdout.splitlines() if line.startswith("=== [")]


def test_dry_run_plans_every_step(launch, tmp_path):
    venv = tmp_path / "venv"
    r = launch.run("gpu_check.sh", "--dry-run", "--venv", str(venv), "--pip-arg=--no-index")
    assert r.returncode == 0, r.stderr
    assert _steps(r.stdout) == ["host", "venv", "install", "probe", "tests", "sft", "train", "bench_model",
                                "bench_sampling"]
    py = f"{venv}/bin/python"
    host, mkvenv, install, probe, tests, sft, train, bench_model, bench_sampling = commands(r.stdout)
    assert host == ["nvidia-smi"] and mkvenv == ["python3", "-m", "venv", str(venv)]
    assert install == [py, "-m", "pip", "install", "-q", "-e", ".[cuda12,test]", "-c", "constraints.txt", "--no-index"]
    assert probe == [py, "launch/gpu_probe.py"]
    assert tests == ["env", "ALPHAGRPO_REQUIRE_GPU=1", py, "-m", "pytest", "-q", "-rs", "tests/gpu",
                     "--confcutdir=tests/gpu"]
    work = f"{launch.root}/tmp/alphagrpo_gpu_check_work"
    assert sft == [py, "-m", "alphagrpo_jax.sft", "--config", "configs/toy_sft.py:tiny", f"--config.workdir={work}/sft"]
    assert train[0].endswith("launch/gpu_single_host.sh") and train[1:5] == ["--python", py, "--config",
                                                                               "configs/toy_rt2i.py"]
    assert train[train.index("--") + 1:] == [
        "--config.total_steps=5", "--config.model.param_dtype=bfloat16", "--config.model.dtype=bfloat16",
        "--config.model.attention=cudnn", f"--config.model.release={work}/sft/release"]
    assert bench_model == [py, "benchmarks/bench_model.py"] and bench_sampling == [py, "benchmarks/bench_sampling.py"]
    assert not (tmp_path / "venv").exists()


def test_given_python_skips_venv_and_install(launch):
    r = launch.run("gpu_check.sh", "--dry-run", "--python", "/opt/py/bin/python3", "--skip", "bench_sampling",
                   "--out", "rel/out", cwd=launch.root / "tmp")
    assert r.returncode == 0, r.stderr
    assert f"log {launch.root}/tmp/rel/out/gpu_check.log" in r.stdout  # relative to the caller, not the repo
    assert "venv             skipped" in r.stdout and "install          skipped" in r.stdout
    assert "bench_sampling   skipped" in r.stdout
    assert ["export", f"PYTHONPATH={launch.root}"] in commands(r.stdout)


def test_real_run_without_a_gpu_fails_the_probe_and_keeps_going(launch, tmp_path):
    out = tmp_path / "out"
    r = launch.run("gpu_check.sh", "--python", sys.executable, "--out", str(out),
                   "--skip", "host,tests,sft,train,bench_model", env=launch.env(JAX_PLATFORMS="cpu"), timeout=300)
    assert r.returncode == 1
    summary = (out / "gpu_check_summary.txt").read_text()
    assert "probe            FAILED rc=1" in summary
    # bench_sampling ran after the failed probe (and fails too: the hermetic repo copy has no benchmarks/).
    assert "bench_sampling   FAILED rc=2" in summary
    log = (out / "gpu_check.log").read_text()
    assert "gpu_probe.py: no GPU: Unknown backend: 'gpu' requested" in log  # JAX_PLATFORMS=cpu was dropped
    assert "jax==" in log and "1 step(s) failed" not in log and "2 step(s) failed" in log


def test_unknown_step_is_named(launch):
    r = launch.run("gpu_check.sh", "--dry-run", "--skip", "tests,bench")
    assert r.returncode == 2 and "--skip: unknown step 'bench'" in r.stderr
