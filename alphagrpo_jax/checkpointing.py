"""Orbax checkpoints of a train state plus JSON extras, for every trainer (SFT now, GRPO later).

    ckpt = CheckpointManager(dir, keep=3, every=500)           # local path or gs://...; async saves
    ckpt.install_preemption_handler()                          # SIGTERM -> save at the next step boundary
    start = 0
    if ckpt.latest_step() is not None:
        state, extras = ckpt.restore(abstract_state)           # ShapeDtypeStructs carrying target shardings
        start = extras["step"]
    for step in range(start + 1, total + 1):
        state = train_step(state, ...)
        if ckpt.should_save(step):
            ckpt.save(step, state, {"step": step, "data": it.get_state()})
        if ckpt.preempted(step):
            break                                              # the save above covered it
    ckpt.save(total, state, extras); ckpt.close()              # close waits for async writes

Items per step: "state" (any pytree of jax arrays, restored straight into the target shardings of the CURRENT
mesh, so a job may resume on another topology) and "extras" (a JSON-able dict: step, data-iterator state,
RNG seeds, anything the caller adds). A step becomes visible only once Orbax has finalised it, so after a
kill `latest_step()` is the last COMPLETE checkpoint.
Preemption: with one process, SIGTERM sets a flag (the previous handler is restored by `close`); with several,
Orbax's preemption sync point (jax.distributed's notifier) decides, so all hosts stop at the same step.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import jax
import orbax.checkpoint as ocp

STATE, EXTRAS = "state", "extras"


class CheckpointManager:
    def __init__(self, directory: str, *, keep: int | None = 3, every: int = 0, async_save: bool = True):
        """`keep`: checkpoints kept (None = all); `every`: `should_save` interval in steps (0 = never by
        interval: only explicit saves and preemption)."""
        if every < 0 or (keep is not None and keep < 1):
            raise ValueError(f"checkpointing: every must be >= 0 and keep >= 1 or None, got every={every}, "
                             f"keep={keep}")
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.every = int(every)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, save_interval_steps=1,
                                               enable_async_checkpointing=async_save)
        self._mgr = ocp.CheckpointManager(self.directory, options=options, item_names=(STATE, EXTRAS))
        self._signalled = False
        self._previous_handler = None

    # ------------------------------------------------------------------------------------------- preemption
    def install_preemption_handler(self) -> None:
        """SIGTERM (the usual preemption notice) sets the flag `preempted` reads; one process only (with
        several, jax.distributed's preemption notifier is used instead)."""
        if jax.process_count() > 1:
            return

        def handler(signum, frame):
            del signum, frame
            self._signalled = True

        self._previous_handler = signal.signal(signal.SIGTERM, handler)

    def preempted(self, step: int) -> bool:
        """True once a preemption notice arrived (all hosts agree on the step)."""
        if jax.process_count() > 1:
            return bool(self._mgr.reached_preemption(step))
        return self._signalled

    # ------------------------------------------------------------------------------------------- save / restore
    def should_save(self, step: int) -> bool:
        return (self.every > 0 and step % self.every == 0) or self.preempted(step)

    def save(self, step: int, state, extras: dict[str, Any]) -> bool:
        """Starts an (async) save of `state` and `extras` at `step` (the caller decides when, e.g. with
        `should_save`); False if that step already exists."""
        if step in self._mgr.all_steps():
            return False
        args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRAS: ocp.args.JsonSave(dict(extras))})
        return bool(self._mgr.save(int(step), args=args, force=True))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def restore(self, abstract_state, step: int | None = None):
        """(state, extras) of `step` (default: the latest). `abstract_state`: pytree of jax.ShapeDtypeStruct
        with `sharding` set, e.g. `jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
        sharding=s), abstract, shardings)`; arrays come back in exactly those shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"checkpointing: no checkpoint in {self.directory}")
        args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state), EXTRAS: ocp.args.JsonRestore()})
        out = self._mgr.restore(int(step), args=args)
        return out[STATE], dict(out[EXTRAS])

    def wait_until_finished(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves, releases Orbax and restores the previous SIGTERM handler."""
        self._mgr.wait_until_finished()
        self._mgr.close()
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def abstract_with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying the matching `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
