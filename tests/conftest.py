"""Test session set-up: CPU with 8 simulated devices and one persistent compilation cache, fixed before jax is
imported anywhere; the `unit` / `e2e` markers (docs/testing.md)."""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
# The 8 simulated devices are threads of 2 cores: on a busy machine a collective's slowest participant can arrive
# after XLA's default 40 s, which aborts the process. Give them 10 minutes (children inherit XLA_FLAGS).
if "xla_cpu_collective_call_terminate_timeout_seconds" not in _flags:
    _flags += (" --xla_cpu_collective_call_terminate_timeout_seconds=600"
               " --xla_cpu_collective_timeout_seconds=600")
# Unoptimised CPU code generation: the suite's time is mostly XLA compiling tiny programs, and LLVM's optimisation
# passes are about a third of a compile; with XLA:CPU's older elemental emitters instead of its fusion emitters
# the rest halves again. The same programs, same semantics (docs/testing.md).
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_cpu_use_fusion_emitters" not in _flags:
    _flags += " --xla_cpu_use_fusion_emitters=false"
# One LLVM module per program instead of XLA:CPU's split into parallel codegen units: with two pytest workers on two
# cores nothing runs in parallel; the split cost 9% of the suite's XLA compile time (docs/testing.md).
if "xla_cpu_parallel_codegen_split_count" not in _flags:
    _flags += " --xla_cpu_parallel_codegen_split_count=1"
os.environ["XLA_FLAGS"] = _flags.strip()
# XLA:CPU runs a partition's independent collectives concurrently on its client pool of max(cores, devices)
# threads, and the 8 partitions may enter them in different orders: with 8 threads on 2 cores that deadlocked a
# dress rehearsal's held-out eval (an all-to-all and an all-reduce of one program, each half joined). Four threads
# per device leave room for that (docs/scaling.md).
os.environ.setdefault("PJRT_NPROC", "32")

# One persistent JAX compilation cache for the whole run, subprocesses included (they inherit the environment):
# the end-to-end tests share one tiny config family, so a program compiled by one test (or one trainer process)
# loads from disk in the next. A fresh directory per run unless JAX_COMPILATION_CACHE_DIR is already set (to keep
# one across local runs). docs/testing.md.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _cache = tempfile.mkdtemp(prefix="alphagrpo_jax_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

GOLDENS = pathlib.Path(__file__).parent / "goldens" / "bagel_tiny_a"


# End-to-end tests: they run a program (trainer, SFT, generate, export, component_eval, a launch script) in process or
# as a subprocess, train for steps, or compile the whole rollout and learner. Listed by file, or file::test prefix
# where a file also holds unit tests; every other test is `unit`. Keep trainer runs on the tiny config family
# (tests/test_train.py's TINY) so they share programs through the compilation cache.
E2E = (
    "tests/test_train.py", "tests/test_train_srr.py::test_trainer_runs", "tests/test_gcs_e2e.py",
    "tests/test_sft.py", "tests/test_dress_rehearsal.py",
    "tests/test_cli.py", "tests/test_run_config.py",
    "tests/rl/test_learning.py", "tests/rl/test_srr_learning.py", "tests/rl/test_learner.py",
    "tests/rl/test_masters.py", "tests/rl/test_grad_scale.py::test_reference_normalisation",
    "tests/test_component_eval.py::test_variants_match_the_trainers_evals",
    "tests/parallel/test_multiprocess.py", "tests/reliability/test_kill_anywhere.py",
    "tests/reliability/test_preemption.py", "tests/reliability/test_nonfinite.py::test_trainer",
    "tests/reliability/test_catalogue.py::test_entry_points", "tests/reliability/test_checkpoint_integrity.py",
    "tests/launch/", "tests/sampling/test_pipeline.py::test_cli", "tests/tools/test_compile_check.py",
    "tests/toy/test_serve.py", "tests/reward/test_service.py", "tests/reward/test_decompose.py",
    "tests/sampling/test_prompts.py", "tests/toy/test_data.py",
)


def pytest_configure(config):
    assert jax.device_count() == 8, f"tests need 8 simulated CPU devices, got {jax.devices()}"
    jax.monitoring.register_event_listener(_count_cache_event)


# The longest files, longest first (measured, docs/results/): run first, so that with `-n 2 --dist loadfile` the
# two workers end together instead of one waiting for a long file collected last.
LONGEST_FIRST = (
    "tests/test_dress_rehearsal.py", "tests/parallel/test_multiprocess.py", "tests/rl/test_learning.py",
    "tests/test_gcs_e2e.py", "tests/test_sft.py", "tests/test_generate.py", "tests/reliability/test_kill_anywhere.py",
    "tests/reliability/test_preemption.py", "tests/test_train_srr.py", "tests/tools/test_compile_check.py",
    "tests/rl/test_grad_scale.py", "tests/reliability/test_catalogue.py", "tests/evaluation/test_evaluate.py",
    "tests/sampling/test_pipeline.py", "tests/sampling/test_generation_parity.py",
    "tests/models/bagel/test_llm_parity.py", "tests/test_train.py", "tests/rl/test_learner.py",
    "tests/test_component_eval.py", "tests/models/bagel/test_packed_parity.py", "tests/sampling/test_srr.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        node = item.nodeid
        item.add_marker(pytest.mark.e2e if any(node.startswith(p) for p in E2E) else pytest.mark.unit)
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


_CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_cache_counts = {"hits": 0, "misses": 0}


def _count_cache_event(event: str, **kwargs) -> None:
    if event in _CACHE_EVENTS:
        _cache_counts[_CACHE_EVENTS[event]] += 1


def pytest_sessionfinish(session):
    output = getattr(session.config, "workeroutput", None)  # an xdist worker: report to the controller
    if output is not None:
        output["jax_cache"] = dict(_cache_counts)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    for k, v in getattr(node, "workeroutput", {}).get("jax_cache", {}).items():
        _cache_counts[k] += v


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(
        f"jax compilation cache ({os.environ['JAX_COMPILATION_CACHE_DIR']}), pytest processes: "
        f"{_cache_counts['hits']} hits, {_cache_counts['misses']} misses (subprocesses not counted)")


@pytest.fixture(scope="session")
def goldens_dir() -> pathlib.Path:
    return GOLDENS


@pytest.fixture(scope="session")
def gcs():
    """A local GCS server (tests/gcs_server.py) for the whole session; `gcs.new_bucket()` gives each test its own
    empty bucket. The environment points gcsfs and tensorstore at it while the session runs."""
    from tests.gcs_server import GcsServer

    with GcsServer() as server:
        yield server

