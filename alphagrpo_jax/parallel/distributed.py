"""Multi-process start-up: `jax.distributed.initialize()` only when the environment says so.

A TPU pod slice (several hosts), a multi-node GPU job (SLURM / our launch scripts set JAX_COORDINATOR_*),
or an explicit `ALPHAGRPO_DISTRIBUTED=1`. A single host never calls it (it fails on non-TPU single hosts).

`setup()` is what a program calls first, before anything starts a JAX backend (printing the config asks for the
process index, which starts one): `jax.distributed.initialize` refuses to run after that.
"""
from __future__ import annotations

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


def setup() -> bool:
    """Program start-up, before any JAX call: the distributed runtime if the job is multi-process. Returns True
    if it was initialised."""
    return maybe_initialize()
