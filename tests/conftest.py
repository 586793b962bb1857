"""Test session set-up: CPU with 8 simulated devices, fixed before jax is imported anywhere."""
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
os.environ["XLA_FLAGS"] = _flags.strip()

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

GOLDENS = pathlib.Path(__file__).parent / "goldens" / "bagel_tiny_a"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; excluded from the default run")
    assert jax.device_count() == 8, f"tests need 8 simulated CPU devices, got {jax.devices()}"


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

