"""The training tasks behind one interface, by name: `TASKS` (the registry `config.task.kinds` names).

A task (the `Task` protocol) is built once per run from the training config and the run's RT2I rollout config
(`TASKS[name].from_config(config, rollout_config)`) and knows:
- `rollout_config`: the config of the rollout it trains on; its image sampler config (`.image`) is what the
  learner recomputes the window's log-probs with, and its SDE window sets the backward-call count
  (`backward_calls`, rl/accumulation.py);
- `text_loss_weight`: the weight of its rounds' think-text loss per trained image step;
- `start_round(...)`: rolls out one round and submits its rewards for scoring (asynchronously), returning an
  rl/rounds.Round whose `rewards()` gives the training rewards, the task's per-round metrics and whether the
  round carries a learning signal (SRR: the floor at the stage-1 reward, any_improved);
- `evaluate(...)`: its held-out eval (an object with `.metrics`), key `seed + eval_seed_offset (+ shift)`;
  `held_out_eval` runs every task's and merges their metrics.

How to add a task: docs/training.md ("Tasks").
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import jax
import numpy as np

from alphagrpo_jax.rl import accumulation
from alphagrpo_jax.rl.rollout import RolloutConfig
from alphagrpo_jax.rl.rounds import Round
from alphagrpo_jax.rl.tasks import rt2i, srr

# The held-out eval's base task: it always runs (its samples make the trainer's sample grid), whichever tasks
# train; every other configured task adds its own metrics.
EVAL_BASE = "rt2i"


class Task(Protocol):
    name: ClassVar[str]
    eval_seed_offset: ClassVar[int]
    rollout_config: RolloutConfig
    text_loss_weight: float

    @classmethod
    def from_config(cls, config, rollout_config: RolloutConfig) -> Task: ...

    def start_round(self, model, release, records, reward_fn, key, window_start: int) -> Round: ...

    def evaluate(self, model, release, records, reward_fn, key, *, batch_size: int, temperature: float,
                 greedy: bool, num_timesteps: int | None, base_model=None): ...


TASKS: dict[str, type] = {t.name: t for t in (rt2i.RT2I, srr.SRR)}


def from_config(config, rollout_config: RolloutConfig) -> dict[str, Task]:
    """{name: Task} of the run: the eval base (RT2I) first, then the tasks of `config.task.kinds` in order.
    `rollout_config`: the run's RT2I rollout config (rl/config.rollout_config)."""
    names = dict.fromkeys((EVAL_BASE,) + tuple(config.task.kinds))
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"config.task.kinds: unknown tasks {unknown}; known: {sorted(TASKS)}")
    return {name: TASKS[name].from_config(config, rollout_config) for name in names}


def backward_calls(task: Task, loss_config) -> int:
    """The reference's backward calls for one of `task`'s rounds (rl/accumulation.py)."""
    return accumulation.backward_calls(task.rollout_config.image.sde_window, loss_config.train_image,
                                       loss_config.train_text)


def draw_window_start(task: Task, rng: np.random.Generator) -> int:
    """The first trained image step of a round of `task` (0 without an SDE window)."""
    return task.rollout_config.draw_window_start(rng) if task.rollout_config.image.sde_window else 0


def held_out_eval(config, model, release, records, reward_fn, tasks: dict[str, Task], shift: int = 0,
                  base_model=None):
    """The trainer's held-out eval of `model` (config.eval): each task's eval (key seed + the task's
    eval_seed_offset + shift) merged into the first's (RT2I's, whose samples make the trainer's sample grid).
    `shift` > 0 draws other samples (component_eval --keys). `base_model`: a refinement task (SRR) also reports
    `model` refining the first draws of `base_model` (`eval_srr_base_draws/*`)."""
    settings = dict(batch_size=config.eval.batch_size, temperature=config.eval.temperature,
                    greedy=config.eval.greedy, num_timesteps=config.eval.num_timesteps or None)
    result = None
    for task in tasks.values():
        key = jax.random.key(config.seed + task.eval_seed_offset + shift)
        ev = task.evaluate(model, release, records, reward_fn, key, base_model=base_model, **settings)
        if result is None:
            result = ev
        else:
            result.metrics.update(ev.metrics)
    return result
