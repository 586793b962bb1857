"""Ahead-of-time compiles for a TPU topology from any host (libtpu's compiler, no TPU): compile-only devices and
the per-device memory of a compiled program. Shared by tools/compile_check.py and tools/compile_rt2i.py."""
from __future__ import annotations

import dataclasses
import os

import jax
from jax.experimental import topologies

HBM_GIB = {"v4": 32, "v5e": 16, "v5litepod": 16, "v5p": 95, "v6e": 32}


@dataclasses.dataclass
class ProgramMemory:
    name: str
    argument_gib: float
    output_gib: float
    temp_gib: float
    alias_gib: float

    @property
    def total_gib(self) -> float:
        return self.argument_gib + self.output_gib + self.temp_gib - self.alias_gib


def set_libtpu_env() -> None:
    """Environment for compile-only libtpu (set before it loads, i.e. before the first topology request)."""
    # The topology API needs libtpu to believe it is on a TPU VM; these only silence its host probing.
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # Compiling touches no TPU, so libtpu's one-process lock (/tmp/libtpu_lockfile) would only stop two checks
    # (or a check and a test) from running side by side.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def topology_devices(topology: str, slices: int = 1) -> list:
    """Compile-only devices of `slices` copies of a TPU topology (multi-slice devices carry `slice_index`)."""
    if ":" not in topology:
        raise SystemExit(f"--topology: expected e.g. v5p:2x2x2, got {topology!r}")
    set_libtpu_env()
    try:
        desc = topologies.get_topology_desc(topology, "tpu", **({"num_slices": slices} if slices > 1 else {}))
    except Exception as e:  # noqa: BLE001 - libtpu missing or unknown topology: say which
        raise SystemExit(f"cannot get TPU topology {topology!r} ({type(e).__name__}: {e}); "
                         "install the TPU extra: pip install -e '.[tpu]'") from e
    return list(desc.devices)


def _gib(n: int) -> float:
    return n / 2 ** 30


def memory_of(name: str, compiled: jax.stages.Compiled) -> ProgramMemory:
    """Per-device memory of a compiled program (arguments, outputs, temporaries, donated aliases), GiB."""
    m = compiled.memory_analysis()
    return ProgramMemory(name, _gib(m.argument_size_in_bytes), _gib(m.output_size_in_bytes),
                         _gib(m.temp_size_in_bytes), _gib(m.alias_size_in_bytes))
