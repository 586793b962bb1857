"""The dress rehearsal of `configs/bagel_7b_srr.py` (tests/dress_rehearsal.py holds the tests and says what runs)."""
import pytest

from tests.dress_rehearsal import *  # noqa: F401,F403 (the tests and the verifier fixture)
from tests.dress_rehearsal import run_rehearsal


@pytest.fixture(scope="module")
def rehearsal(gcs, verifier, tmp_path_factory):
    return run_rehearsal("srr", gcs, verifier, tmp_path_factory)
