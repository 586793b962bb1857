"""Per-step guards of the GRPO trainer: never apply a non-finite update, stop a run that keeps producing them, and
say loudly when a step had no learning signal at all.

    guard = StepGuard(max_nonfinite_steps=3, rounds_per_step=4)
    if guard.update_ok(step, grad_sum, n_rounds, row):      # row: the step's metrics (loss/* read, counts added)
        row["grad_norm"] = float(learner.apply(grad_sum, n_rounds))
        guard.check_params(step, learner.trainable)

A step whose loss metrics or accumulated gradients (any leaf, or their global norm) are non-finite is not applied: a
WARNING names the step and the first non-finite leaves; at the `max_nonfinite_steps`-th such step in a row (counted
from the start or the resume of the process; 1 = the first) the run stops with `NonFiniteError` naming the step and
the leaves, before any checkpoint of that step is written. Metrics added to the row: `rounds_skipped` (rounds
without learning signal) and `update_skipped` (1 when the step applied no update: no signal or non-finite).
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from alphagrpo_jax import integrity
from alphagrpo_jax.parallel import hostdata

log = logging.getLogger("alphagrpo_jax.rl.guards")


@jax.jit
def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


class StepGuard:
    def __init__(self, max_nonfinite_steps: int, rounds_per_step: int):
        if max_nonfinite_steps < 1:
            raise ValueError(f"train.max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.rounds_per_step = int(rounds_per_step)
        self.nonfinite_in_a_row = 0

    def update_ok(self, step: int, grad_sum, n_rounds: int, row: dict) -> bool:
        """True when step `step`'s update (the mean of `n_rounds` accumulated round gradients) may be applied."""
        row["rounds_skipped"] = self.rounds_per_step - n_rounds
        row["update_skipped"] = 1
        if n_rounds == 0:
            log.warning("step %d: all %d rounds were skipped (no learning signal: every advantage 0 / nothing "
                        "improved); no update this step", step, self.rounds_per_step)
            return False
        bad = [k for k, v in row.items() if k.startswith("loss/") and not np.isfinite(v)]
        bad += [f"grad {n}" for n in integrity.nonfinite_leaves(grad_sum)]
        if not bad and not np.isfinite(float(hostdata.to_host(_global_norm(grad_sum)))):
            bad.append("grad global norm (overflow)")
        if not bad:
            self.nonfinite_in_a_row = 0
            row["update_skipped"] = 0
            return True
        self.nonfinite_in_a_row += 1
        what = integrity.describe(bad)
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise integrity.NonFiniteError(
                f"step {step}: non-finite {what}; {self.nonfinite_in_a_row} step(s) in a row reached "
                f"train.max_nonfinite_steps={self.max_nonfinite_steps}: stopping (no checkpoint of this step)")
        log.warning("step %d: non-finite %s: update NOT applied (%d in a row; the run stops after %d)", step, what,
                    self.nonfinite_in_a_row, self.max_nonfinite_steps)
        return False

    def check_params(self, step: int, params) -> None:
        """Raises NonFiniteError naming the first non-finite parameters after step `step`'s update."""
        bad = integrity.nonfinite_leaves(params)
        if bad:
            raise integrity.NonFiniteError(f"step {step}: the update made parameters non-finite: "
                                           f"{integrity.describe(bad)} (no checkpoint of this step)")
