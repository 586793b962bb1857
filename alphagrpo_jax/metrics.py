"""Progress, metrics and timers used by every entry point.

- `progress(total, desc)`: a tqdm bar with rate and ETA (quiet on non-zero processes).
- `MetricsWriter`: appends one JSON object per call to `<workdir>/metrics.jsonl` (a line is written whole,
  then flushed; `workdir` local or gs://, through paths.py) and, when enabled, scalars, images (PNG), texts and
  hparams to a TensorBoard event file in `<workdir>/tensorboard/` (tensorboard_events.py; flushed with each
  write; no TensorFlow) and to Weights & Biases (`wandb_project`; wandb imported only then). On resume,
  `truncate(step)` drops what a killed run logged after its last checkpoint (rows and events), so the history
  has no duplicates; a torn last line (killed mid-row) is dropped with a warning (writer and `read_metrics`).
- `PhaseTimer`: wall-clock seconds per named phase, with `jax.block_until_ready` on request.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import html
import importlib.util
import json
import logging
import math
import os
import time
from collections import defaultdict
from typing import Any

import numpy as np

from alphagrpo_jax import errors, paths, tensorboard_events

log = logging.getLogger("alphagrpo_jax.metrics")

def _is_main_process() -> bool:
    try:
        import jax

        return jax.process_index() == 0
    except Exception:  # noqa: BLE001 - jax not initialised or absent: single process
        return True


def progress(total: int | None = None, desc: str = "", initial: int = 0, unit: str = "it", **kw):
    """A tqdm bar; while it is open, log lines are written above it (tqdm.write), never glued onto its line."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=total, desc=desc, initial=initial, unit=unit, dynamic_ncols=True,
               disable=not _is_main_process(), mininterval=1.0, **kw)
    if bar.disable:
        return bar
    redirect = logging_redirect_tqdm(tqdm_class=type(bar))
    redirect.__enter__()
    close = bar.close

    def close_and_restore():  # the root logger's handlers come back when the bar closes (or is collected)
        nonlocal redirect
        try:
            close()
        finally:
            if redirect is not None:
                redirect, done = None, redirect
                done.__exit__(None, None, None)

    bar.close = close_and_restore
    return bar


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
    """metrics.jsonl (+ optional TensorBoard scalars and images) in `workdir`, a local folder or gs://...
    Only process 0 writes. A resumed run calls `truncate(restored_step)` before its first write."""

    def __init__(self, workdir: str, tensorboard: bool = False, filename: str = "metrics.jsonl",
                 wandb_project: str = "", config=None):
        self.workdir = os.fspath(workdir)
        self.active = _is_main_process()
        self.path = paths.join(self.workdir, filename)
        self.tensorboard_dir = paths.join(self.workdir, "tensorboard") if tensorboard else None
        self._tb: tensorboard_events.EventFile | None = None  # opened at the first TensorBoard write
        self._tail_ok = False  # False until a torn last line (killed writer) has been looked for
        self._wandb = None
        if self.active:
            paths.makedirs(self.workdir)
            if wandb_project:
                self._wandb = wandb_run(wandb_project, self.workdir, config)

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        record = {"step": int(step), "time": time.time()}
        record.update({k: _to_python(v) for k, v in metrics.items()})
        if not self._tail_ok:
            self._drop_torn_line()
        try:  # one whole line per row; its newline commits it (readers drop an unterminated, unparsable tail)
            paths.append_text(self.path, json.dumps(record, sort_keys=True) + "\n")
        except BaseException:
            self._tail_ok = False  # e.g. a full disk: look for a partial line before the next write
            raise
        tb = self._tensorboard()
        if tb is not None:
            from tensorboardX import summary

            for k, v in record.items():
                if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    tb.add(int(step), summary.scalar(k, v))
            tb.flush()
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k not in ("step", "time")}, step=int(step))

    def write_image(self, step: int, tag: str, image_hwc_uint8: np.ndarray) -> None:
        """An image [H, W, 3] uint8 (TensorBoard: a PNG-encoded Summary.Image)."""
        tb = self._tensorboard()
        if tb is not None:
            from tensorboardX import summary

            tb.add(int(step), summary.image(tag, image_hwc_uint8, dataformats="HWC"))
            tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Image(image_hwc_uint8)}, step=int(step))

    def write_text(self, step: int, tag: str, markdown: str) -> None:
        """A text (TensorBoard's text plugin renders it as Markdown; its tag gets `/text_summary` appended)."""
        tb = self._tensorboard()
        if tb is not None:
            from tensorboardX import summary

            tb.add(int(step), summary.text(tag, markdown))
            tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({tag: wandb.Html(f"<pre>{html.escape(markdown)}</pre>")}, step=int(step))

    def write_hparams(self, hparams: dict[str, Any], metric_tags: list[str]) -> None:
        """The run's hyperparameters ({name: scalar or str}) and the scalar tags TensorBoard's HPARAMS tab shows
        beside them (the hparams plugin's experiment and session-start records, at step 0)."""
        tb = self._tensorboard()
        if tb is not None:
            from tensorboardX import summary

            experiment, session_start, _ = summary.hparams(hparams, {tag: None for tag in metric_tags})
            tb.add(0, experiment)
            tb.add(0, session_start)
            tb.flush()

    def truncate(self, step: int) -> int:
        """Drops the rows and TensorBoard events with a step > `step` (what a killed run wrote after the
        checkpoint a resumed run restarts from; the resumed run writes them again) and a torn last line.
        Returns the number of rows dropped."""
        if not self.active:
            return 0
        self._close_tensorboard()
        dropped = 0
        if paths.exists(self.path):
            rows, torn = _parse(self.path, paths.read_bytes(self.path))
            keep = [line for row, line in rows if row["step"] <= step]
            dropped = len(rows) - len(keep)
            if dropped or torn:
                paths.write_bytes(self.path, b"".join(line + b"\n" for line in keep))
            if dropped:
                log.warning("%s: dropped %d rows logged after step %d (a killed run's tail; they are logged again)",
                            self.path, dropped, step)
        self._tail_ok = True
        if self.tensorboard_dir is not None:
            tensorboard_events.truncate(self.tensorboard_dir, step)
        return dropped

    def close(self) -> None:
        self._close_tensorboard()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    # ------------------------------------------------------------------------------------------- internals
    def _drop_torn_line(self) -> None:
        """Repairs the file's end before appending: an unparsable last line (killed mid-write) is dropped, a
        complete row missing only its newline gets it (else the next row would merge into it)."""
        if paths.exists(self.path):
            data = paths.read_bytes(self.path)
            rows, torn = _parse(self.path, data)
            if torn or (data and not data.endswith(b"\n")):
                paths.write_bytes(self.path, b"".join(line + b"\n" for _, line in rows))
        self._tail_ok = True

    def _tensorboard(self) -> tensorboard_events.EventFile | None:
        if self._tb is None and self.active and self.tensorboard_dir is not None:
            self._tb = tensorboard_events.EventFile(self.tensorboard_dir)
        return self._tb

    def _close_tensorboard(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def check_wandb(project: str) -> None:
    """UsageError (one line) when W&B logging is asked for (`log.wandb` = a project name) but wandb is absent."""
    if project and importlib.util.find_spec("wandb") is None:
        raise errors.UsageError(f"log.wandb = {project!r} asks for Weights & Biases logging, but wandb is not "
                                "installed: pip install wandb, or set --config.log.wandb='' (off)")


def wandb_run(project: str, workdir: str, config=None):
    """A W&B run in `project` whose id derives from the workdir, so a resumed run continues the same W&B run."""
    check_wandb(project)
    import wandb

    from alphagrpo_jax import run_config

    run_id = hashlib.sha1(os.path.abspath(workdir).encode() if not paths.is_remote(workdir) else workdir.encode())
    return wandb.init(project=project, id=run_id.hexdigest()[:16], resume="allow", name=os.path.basename(
        workdir.rstrip("/")), config=run_config.plain(config) if config is not None else None)


def _parse(path: str, data: bytes) -> tuple[list[tuple[dict, bytes]], bool]:
    """([(row, its line without newline)], torn): rows are JSON objects with an int "step", one per line.
    An unparsable LAST line is a torn write (killed writer, power loss): dropped with a warning naming it
    (torn=True); an unparsable line before it is corruption: ValueError naming the file and line."""
    lines = data.split(b"\n")
    filled = [i for i, line in enumerate(lines) if line.strip()]
    rows = []
    for i in filled:
        try:
            row = json.loads(lines[i])
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError(f"expected a JSON object with an integer \"step\", got {lines[i][:80]!r}")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if i != filled[-1]:
                raise ValueError(f"{path}:{i + 1}: not a metrics row ({e}); only a torn last line is "
                                 f"skipped") from e
            log.warning("%s:%d: torn last line dropped (writer killed mid-row?): %r", path, i + 1, lines[i][:80])
            return rows, True
        rows.append((row, lines[i]))
    return rows, False


def read_metrics(path: str) -> list[dict]:
    """The rows of a metrics JSONL file (local or gs://...); a torn last line is skipped with a warning,
    anything unreadable before it raises ValueError naming the file and line."""
    return [row for row, _ in _parse(path, paths.read_bytes(path))[0]]


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
