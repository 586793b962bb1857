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

Integrity: `save` stores in the extras (key "integrity") a digest of every state array (alphagrpo_jax/integrity.py:
computed on the device over the global array, so independent of the sharding and the number of hosts, and
written with the step in the same Orbax commit, so a finalised step always carries its own digests) and a sha256
of the caller's extras; it refuses a state with non-finite values. `restore` checks the extras file parses, that
Orbax can read the step, the digests, and finiteness. With no explicit step, a damaged latest step is logged
(`checkpoint step N (<dir>) is damaged: <reason>; falling back to step M`) and moved to `<dir>.damaged/` (never
deleted), and the newest intact step is restored; an explicit damaged step, or no intact step at all, is a
`CheckpointDamagedError`. A step without digests (saved before they existed) is verified for structure and
finiteness only, with a warning. Why digests in the extras rather than a file manifest: no second read of
every checkpoint byte (GBs per save, on GCS), no window in which an async step exists without its manifest, and
a resharded or multi-host restore verifies the same way.
Preemption: with one process, SIGTERM sets a flag (the previous handler is restored by `close`); with several,
Orbax's preemption sync point (jax.distributed's notifier) decides, so all hosts stop at the same step. A trainer
that stops for it exits with PREEMPTED_EXIT_CODE (75) after saving.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from alphagrpo_jax import integrity, paths

STATE, EXTRAS, INTEGRITY = "state", "extras", "integrity"
# Exit status of a trainer stopped by a preemption notice after saving (EX_TEMPFAIL: "try again"): schedulers and
# launch/ scripts requeue on it; 0 means the run finished.
PREEMPTED_EXIT_CODE = 75

log = logging.getLogger("alphagrpo_jax.checkpointing")


class CheckpointDamagedError(RuntimeError):
    """A checkpoint step that cannot be trusted (the message names the step, its folder and why)."""


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
        self._closed = False
        if jax.process_count() == 1:  # a trainer stopped by an exception still finalises its last async save
            # threading's exit hooks run before concurrent.futures stops taking work (atexit's run after it).
            getattr(threading, "_register_atexit", atexit.register)(self._finish_at_exit)

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
        digests, bad = integrity.inspect(state)
        if bad:
            raise integrity.NonFiniteError(f"checkpointing: refusing to save step {step}: non-finite values in "
                                           f"{integrity.describe(bad)}")
        extras = {**extras, INTEGRITY: {"state": digests, "extras_sha256": _extras_sha256(extras)}}
        args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), EXTRAS: ocp.args.JsonSave(extras)})
        return bool(self._mgr.save(int(step), args=args, force=True))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def restore(self, abstract_state, step: int | None = None):
        """(state, extras) of `step` (default: the newest intact step, see the module doc). `abstract_state`:
        pytree of jax.ShapeDtypeStruct with `sharding` set, e.g. `jax.tree.map(lambda x, s:
        jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)`; arrays come back in exactly
        those shardings."""
        if step is not None:
            return self._restore_verified(abstract_state, int(step))
        damaged = []
        for s in sorted(self._mgr.all_steps(), reverse=True):
            try:
                out = self._restore_verified(abstract_state, s)
            except CheckpointDamagedError as e:
                damaged.append((s, e))
                continue
            for bad, e in damaged:  # set aside only once an intact step proves the restore target is right
                log.warning("%s; falling back to step %d (moved to %s)", e, s, self._set_aside(bad))
            return out
        if not damaged:
            raise FileNotFoundError(f"checkpointing: no checkpoint in {self.directory}")
        raise CheckpointDamagedError(f"checkpointing: no intact checkpoint in {self.directory} (nothing was moved; "
                                     "a config whose model differs from the run's fails this way on every step): "
                                     + "; ".join(str(e) for _, e in damaged))

    def _step_dir(self, step: int) -> str:
        return paths.join(self.directory, str(step))

    def _restore_verified(self, abstract_state, step: int):
        where = self._step_dir(step)

        def damaged(reason: str) -> CheckpointDamagedError:
            return CheckpointDamagedError(f"checkpoint step {step} ({where}) is damaged: {reason}")

        if step not in self._mgr.all_steps():
            raise FileNotFoundError(f"checkpointing: no step {step} in {self.directory} (have {self.all_steps()})")
        problem = None
        extras_file = paths.join(where, EXTRAS, "metadata")
        try:
            json.loads(paths.read_text(extras_file))
        except (OSError, ValueError) as e:
            problem = f"extras file {extras_file} is unreadable or not JSON ({type(e).__name__}: {e})"
        if problem is None:
            args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                         EXTRAS: ocp.args.JsonRestore()})
            try:
                out = self._mgr.restore(step, args=args)
            except Exception as e:  # noqa: BLE001  (any read failure of stored data means a damaged step)
                while (e.__cause__ or e.__context__) is not None:  # the innermost (TensorStore's) error says most
                    e = e.__cause__ or e.__context__
                first = (str(e).strip().splitlines() or [""])[0][:400]
                problem = f"Orbax cannot read it ({type(e).__name__}: {first})"
        problem = _agree(problem)  # every host takes the same branch (the checks below are collective)
        if problem is not None:
            raise damaged(problem)
        state, extras = out[STATE], dict(out[EXTRAS])
        digests, bad = integrity.inspect(state)
        record = extras.pop(INTEGRITY, None)
        if record is None:
            log.warning("checkpoint step %d (%s) has no checksums (saved by an older version): verified its "
                        "structure and finiteness only", step, where)
        else:
            if record.get("extras_sha256") != _extras_sha256(extras):
                raise damaged("the extras do not match their checksum")
            saved = record.get("state", {})
            if set(saved) != set(digests):
                raise damaged(f"the saved arrays {sorted(set(saved) ^ set(digests))[:3]} do not match the restore "
                              "target's")
            wrong = [k for k in digests if digests[k] != saved[k]]
            if wrong:
                raise damaged(f"checksum mismatch in {len(wrong)} of {len(digests)} arrays: "
                              f"{integrity.describe(wrong)}")
        if bad:
            raise damaged(f"non-finite values in {integrity.describe(bad)}")
        return state, extras

    def _set_aside(self, step: int) -> str:
        """Moves a damaged step's folder to `<dir>.damaged/<step>-<UTC time>` (process 0); returns that path."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dst = paths.join(self.directory.rstrip("/") + ".damaged", f"{step}-{stamp}")
        if jax.process_index() == 0:
            paths.makedirs(paths.dirname(dst))
            paths.move(self._step_dir(step), dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint_set_aside_{step}")
        self._mgr.reload()
        return dst

    def wait_until_finished(self) -> None:
        self._mgr.wait_until_finished()

    def _finish_at_exit(self) -> None:
        if not self._closed:
            self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves, releases Orbax and restores the previous SIGTERM handler."""
        self._mgr.wait_until_finished()
        self._mgr.close()
        self._closed = True
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def _extras_sha256(extras: dict) -> str:
    return hashlib.sha256(json.dumps(extras, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _agree(problem: str | None) -> str | None:
    """`problem` if no process had one, else the first process's problem (the same value on every process)."""
    if jax.process_count() == 1:
        return problem
    from jax.experimental import multihost_utils

    flags = np.asarray(multihost_utils.process_allgather(np.array([problem is not None])))
    if not flags.any():
        return None
    return problem or f"another process could not read it (process {int(np.argmax(flags))})"


def abstract_with_shardings(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying the matching `shardings`."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
