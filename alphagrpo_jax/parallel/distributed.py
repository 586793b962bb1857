"""Multi-process start-up: `jax.distributed.initialize()` only when the environment says so.

A TPU pod slice (several hosts), a multi-node GPU job (SLURM / our launch scripts set JAX_COORDINATOR_*),
or an explicit `ALPHAGRPO_DISTRIBUTED=1`. A single host never calls it (it fails on non-TPU single hosts).

`setup()` is what a program calls first, before anything starts a JAX backend (printing the config asks for the
process index, which starts one): `jax.distributed.initialize` refuses to run after that. It also keeps JAX from
probing for a TPU on a host that has none: with libtpu installed (the `test` and `tpu` extras) that probe prints
libtpu's start-up errors ("unexpected worker hostname", "No jellyfish device found") on every CPU or GPU machine.
"""
from __future__ import annotations

import glob
import logging
import os

import jax

log = logging.getLogger(__name__)


def wants_distributed(env=None) -> bool:
    env = os.environ if env is None else env
    if env.get("ALPHAGRPO_DISTRIBUTED", "") in ("1", "true", "True"):
        return True
    if env.get("ALPHAGRPO_DISTRIBUTED", "") in ("0", "false", "False"):
        return False
    if "JAX_COORDINATOR_ADDRESS" in env and int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
        return True
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h]) > 1


def maybe_initialize() -> bool:
    """Initialises the JAX distributed runtime when the job is multi-process. Returns True if it did."""
    if not wants_distributed():
        return False
    if jax.distributed.is_initialized():
        return True
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = dict(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
        if "JAX_LOCAL_DEVICE_IDS" in os.environ:
            kwargs["local_device_ids"] = [int(i) for i in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
    log.info("jax.distributed.initialize(%s)", kwargs or "auto-detect")
    jax.distributed.initialize(**kwargs)
    return True


GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips are PCI devices of Google's vendor id (what libtpu itself looks for)


def tpu_chips(sysfs: str = "/sys/bus/pci/devices") -> int:
    """The number of Google PCI devices on this host (TPU chips; 0 on CPU and GPU machines)."""
    count = 0
    for vendor in glob.glob(os.path.join(sysfs, "*", "vendor")):
        try:
            with open(vendor) as f:
                count += f.read().strip() == GOOGLE_PCI_VENDOR
        except OSError:
            continue
    return count


GPU_DEVICE_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, AMD, WSL2


def cpu_only_host(chosen: str | None, sysfs: str = "/sys/bus/pci/devices", gpu_files=GPU_DEVICE_FILES) -> bool:
    """True when no platform was chosen (`chosen`: JAX_PLATFORMS / jax_platforms) and the host has neither a TPU
    chip nor a GPU device file."""
    return not chosen and not tpu_chips(sysfs) and not any(os.path.exists(f) for f in gpu_files)


def skip_absent_tpu() -> bool:
    """On a CPU-only host with no platform chosen, sets jax_platforms=cpu so that JAX does not start libtpu.
    Returns True if it did. A TPU or GPU host, or a user's explicit choice, keeps JAX's own platform search (a GPU
    host with libtpu installed: set JAX_PLATFORMS=cuda)."""
    if not cpu_only_host(os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms):
        return False
    jax.config.update("jax_platforms", "cpu")
    log.debug("no TPU chip or GPU on this host: jax_platforms=cpu")
    return True


def setup() -> bool:
    """Program start-up, before any JAX call: no libtpu probe on a host without TPU chips, and the distributed
    runtime if the job is multi-process. Returns True if the runtime was initialised."""
    skip_absent_tpu()
    return maybe_initialize()
