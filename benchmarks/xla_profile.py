"""Where a jitted call's time goes: one call under `jax.profiler.trace`, its XLA ops summed by name.

    rows = top_ops(fn, "profiles/prefill", top=8)   # fn() runs once and blocks; the trace stays in the folder

The trace folder holds TensorBoard's profile (`plugins/profile/*/*.xplane.pb`, open with TensorBoard's profile
plug-in or xprof) and a Perfetto trace (`perfetto_trace.json.gz`, open at ui.perfetto.dev). The summary reads
the Perfetto trace: every complete event on a thread of the XLA runtime, summed by name (an XLA:CPU thunk is
named after its HLO instruction, e.g. `dot.12`, `ynn_fusion.3`, `all-reduce.1`), as a share of the summed
time of those events (threads running in parallel count each). Loops, branches and calls (`while`, `conditional`
or jax's `cond`, `call`) are left out: their time is that of the ops inside them.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

import jax

_HLO_NAME = re.compile(r"^[a-z][a-z0-9_\-]*(\.\d+)?$")  # XLA ops (runtime spans are CamelCase or `$python`)
_CONTAINERS = ("while", "conditional", "cond", "call")  # their time is their ops' time


def _events(trace_dir: str) -> list[dict]:
    paths = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not paths:
        raise FileNotFoundError(f"{trace_dir}: no perfetto_trace.json.gz written by jax.profiler.trace")
    with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def top_ops(fn, trace_dir: str, top: int = 8) -> list[tuple[str, float, float]]:
    """Runs fn() once under the profiler; [(op name without its .N suffix, seconds, share of op time)]."""
    os.makedirs(trace_dir, exist_ok=True)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        fn()
    totals: collections.Counter = collections.Counter()
    for e in _events(trace_dir):
        if e.get("ph") != "X" or "dur" not in e:
            continue
        name = re.sub(r"\.\d+$", "", str(e.get("name", "")))
        if _HLO_NAME.match(name) and name not in _CONTAINERS:
            totals[name] += float(e["dur"]) * 1e-6
    whole = sum(totals.values()) or 1.0
    return [(name, s, s / whole) for name, s in totals.most_common(top)]


def format_ops(rows: list[tuple[str, float, float]]) -> str:
    return ", ".join(f"{name} {100 * share:.0f}% ({1e3 * s:.1f} ms)" for name, s, share in rows)
