"""Test session set-up: CPU with 8 simulated devices, fixed before jax is imported anywhere."""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

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

