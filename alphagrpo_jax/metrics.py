"""Progress, metrics and timers used by every entry point.

- `progress(total, desc)`: a tqdm bar with rate and ETA (quiet on non-zero processes).
- `MetricsWriter`: appends one JSON object per call to `<workdir>/metrics.jsonl` (a line is written whole,
  then flushed) and, when enabled, scalars to TensorBoard event files via tensorboardX (no TensorFlow).
- `PhaseTimer`: wall-clock seconds per named phase, with `jax.block_until_ready` on request.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np


def _is_main_process() -> bool:
    try:
        import jax

        return jax.process_index() == 0
    except Exception:  # noqa: BLE001 - jax not initialised or absent: single process
        return True


def progress(total: int | None = None, desc: str = "", initial: int = 0, unit: str = "it", **kw):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, initial=initial, unit=unit, dynamic_ncols=True,
                disable=not _is_main_process(), mininterval=1.0, **kw)


def _to_python(v: Any):
    if isinstance(v, (np.generic,)):
        v = v.item()
    elif hasattr(v, "shape") and getattr(v, "shape", None) == ():
        v = float(np.asarray(v))
    elif hasattr(v, "tolist"):
        v = np.asarray(v).tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible rather than dropping the key
    return v


class MetricsWriter:
    """JSONL (+ optional TensorBoard) metrics in `workdir`. Only process 0 writes."""

    def __init__(self, workdir: str, tensorboard: bool = False, filename: str = "metrics.jsonl"):
        self.workdir = workdir
        self.active = _is_main_process()
        self._tb = None
        self.path = os.path.join(workdir, filename)
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": int(step), "time": time.time()}
        record.update({k: _to_python(v) for k, v in metrics.items()})
        line = json.dumps(record, sort_keys=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k in ("step", "time"):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, global_step=int(step))
            self._tb.flush()

    def write_image(self, step: int, tag: str, image_hwc_uint8: np.ndarray) -> None:
        if self.active and self._tb is not None:
            self._tb.add_image(tag, image_hwc_uint8, global_step=int(step), dataformats="HWC")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str) -> list[dict]:
    """Reads a metrics JSONL file; a truncated last line (killed writer) is reported, not skipped silently."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1 or all(not x.strip() for x in lines[i + 1:]):
                raise ValueError(f"{path}:{i + 1}: last line is incomplete (writer was killed?): {e}") from e
            raise ValueError(f"{path}:{i + 1}: not valid JSON: {e}") from e
    return rows


_ACTIVE_TIMER: contextvars.ContextVar[PhaseTimer | None] = contextvars.ContextVar("phase_timer", default=None)


class PhaseTimer:
    """Accumulates wall-clock seconds per phase: `with timer("rollout"): ...`; `timer.pop()` -> dict."""

    def __init__(self):
        self._totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str, block_on=None):
        start = time.perf_counter()
        try:
            yield
        finally:
            if block_on is not None:
                import jax

                jax.block_until_ready(block_on)
            self._totals[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self._totals[name] += seconds

    @contextlib.contextmanager
    def active(self):
        """Makes this timer the one `phase(...)` records into (in this thread / context)."""
        token = _ACTIVE_TIMER.set(self)
        try:
            yield self
        finally:
            _ACTIVE_TIMER.reset(token)

    def pop(self, prefix: str = "time/") -> dict[str, float]:
        out = {f"{prefix}{k}": v for k, v in self._totals.items()}
        self._totals.clear()
        return out


@contextlib.contextmanager
def phase(name: str):
    """A sub-phase timed into the active PhaseTimer, for library code that does not own the timer:

        with phase("rollout_text") as sync:
            out = jitted(...)
            sync(out)          # blocks on `out` only while a timer is active (timing async dispatch is useless)

    Without an active timer it costs nothing and never blocks."""
    timer = _ACTIVE_TIMER.get()
    if timer is None:
        yield lambda tree: tree
        return
    import jax

    with timer(name):
        yield jax.block_until_ready
