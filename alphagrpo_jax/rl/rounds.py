"""One rollout round of a task and its rewards, as the trainer loop uses them (the tasks, rl/tasks/, make them).

Multi-process: every process holds the round's prompt records, runs the same global rollout programs and
scores only its own block of samples (hostdata.process_block); `gather_reward` assembles the per-sample results
on every process, so group statistics, advantages and logs are the same everywhere.
"""
from __future__ import annotations

import dataclasses
import json
from concurrent.futures import Future

import jax
import numpy as np

from alphagrpo_jax.parallel import hostdata
from alphagrpo_jax.reward.service import RewardResult
from alphagrpo_jax.rl.rollout import RolloutResult


@dataclasses.dataclass
class RoundRewards:
    """A round's rewards as the trainer uses them."""
    rewards: np.ndarray          # [P, G] float64 training rewards (what the advantages are computed from)
    metrics: dict[str, float]    # the task's own per-round metrics (logged in the step's row)
    result: RewardResult         # the whole round's reward result as scored
    has_signal: bool = True      # False: the task sees no learning signal (SRR: nothing improved on stage 1)


@dataclasses.dataclass
class Round:
    """A rolled-out round whose rewards are being scored (`future`). The base class trains on the reward as
    scored (RT2I); a task with its own training reward subclasses it (rl/tasks/srr.py)."""
    task: str                 # the registry name of the task that rolled it out (rl/tasks)
    result: RolloutResult
    future: Future
    group_size: int

    def rewards(self) -> RoundRewards:
        """The round's RoundRewards. Blocks on the reward future."""
        rw = self.future.result()
        if jax.process_count() > 1:  # this process scored its own rows: gather the whole round
            rw = gather_reward(rw, self.result.rows, len(self.result.rollout.think_len))
        return self.training_rewards(rw)

    def training_rewards(self, rw: RewardResult) -> RoundRewards:
        return RoundRewards(np.asarray(rw.rewards, np.float64).reshape(-1, self.group_size), {}, rw)


def submit(task: str, result: RolloutResult, records, reward_fn, group_size: int, round_type=Round,
           **fields) -> Round:
    """Submits this process's rows of `result` for scoring (asynchronously) and returns the `round_type` Round."""
    per_sample = [records[i] for i in result.prompt_index]
    future = reward_fn.submit(result.images, result.prompts, per_sample, texts=result.think_texts)
    return round_type(task, result, future, group_size, **fields)


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
