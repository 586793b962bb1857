"""Per-process reward results of a round assembled on every process (multi-process rollouts score their own
block of samples; rl/rounds.py, rl/reflect.py, rl/evaluate.py)."""
from __future__ import annotations

import json

import jax
import numpy as np

from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.reward.service import RewardResult


def gather_reward(rw: RewardResult, rows: np.ndarray, n: int) -> RewardResult:
    """Every process's RewardResult for its `rows` of a batch of n -> the whole batch's, on every process
    (`details` stay per process: they are the scorer's own debugging records)."""
    if jax.process_count() == 1:
        return rw
    rows = np.asarray(rows)
    gather = lambda v: hostdata.allgather_rows(rows, np.asarray(v), n)  # noqa: E731
    info = hostdata.allgather_items(rows, rw.info, n)
    failures: list = []
    counts: dict[str, int] = {}
    for proc in hostdata.allgather_strings([json.dumps({"failures": rw.failures, "counts": rw.counts})]):
        d = json.loads(proc[0])
        failures += d["failures"]
        for k, v in d["counts"].items():
            counts[k] = counts.get(k, 0) + int(v)
    return RewardResult(gather(rw.rewards), {k: gather(v) for k, v in sorted(rw.components.items())}, info, failures,
                        counts, rw.details)
