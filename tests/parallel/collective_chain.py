"""A chain of small all-reducing programs on 8 simulated CPU devices with no sync between them, as a program runs
them: `python -m tests.parallel.collective_chain N [--setup]`. Prints `done` or, when the chain has not finished
after 20 s, `deadlock` (tests/parallel/test_cpu_pool.py). `--setup` starts like every program
(parallel/distributed.setup) before JAX's CPU client."""
import faulthandler
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alphagrpo_jax.parallel import distributed


def main(n: int, setup: bool) -> None:
    if setup:
        distributed.setup()

    def watchdog():
        time.sleep(20)
        print("deadlock", flush=True)
        faulthandler.dump_traceback(file=sys.stderr)
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tensor"))
    x = jax.device_put(jnp.ones((64, 64)), NamedSharding(mesh, P("fsdp", "tensor")))
    all_reduce = jax.jit(lambda a: a + jnp.sum(a) * 1e-6)
    for _ in range(n):
        x = all_reduce(x)
    x.block_until_ready()
    print(f"done pool={os.environ.get('PJRT_NPROC')}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), "--setup" in sys.argv[2:])
