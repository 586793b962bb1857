"""The dress rehearsal of `configs/bagel_7b_srr.py` (tests/dress_rehearsal.py holds the tests and says what runs)."""
import pytest

# slow: on the 8 simulated devices of a 2-core machine the SRR trainer can deadlock in XLA:CPU (docs/scaling.md);
# tests/test_train_srr.py covers the SRR trainer on the same mesh shape, the RT2I rehearsal the 7B config path.
pytestmark = pytest.mark.slow

from tests.dress_rehearsal import *  # noqa: F401,F403 (the tests and the verifier fixture)
from tests.dress_rehearsal import run_rehearsal


@pytest.fixture(scope="module")
def rehearsal(gcs, verifier, tmp_path_factory):
    return run_rehearsal("srr", gcs, verifier, tmp_path_factory)
