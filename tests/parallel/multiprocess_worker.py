"""One process of tests/parallel/test_multiprocess.py: `python -m tests.parallel.multiprocess_worker WORKDIR rt2i|srr`.

Devices come from XLA_FLAGS, the distributed runtime from the environment (parallel.distributed). Runs the GRPO
trainer with tests/test_train.py's tiny config (golden release, toy prompts and verifier; 3 prompts x 4
samples per round) for two steps and a
held-out eval on a (fsdp=4, tensor=2) mesh over every process's devices; with `srr`, the rounds alternate RT2I
and SRR. Writes WORKDIR.<process>.json: the final adapters' checksum, the held-out results and (process 0) the
metrics rows.
"""
import json
import os
import sys

import jax
import jax.numpy as jnp

from alphagrpo_jax import train
from alphagrpo_jax.parallel import distributed
from tests.test_train import tiny_config
from tests.test_train_srr import tiny_srr_config


def main(workdir: str, srr: bool) -> None:
    distributed.maybe_initialize()
    c = tiny_srr_config(workdir, 2, "mixed") if srr else tiny_config(workdir, 2)
    if not srr:  # 12 samples, 6 per process: prompt 1's group of 4 spans both processes
        c.rollout.update(dict(prompts_per_round=3, group_size=4))
        c.advantage.population = 6  # the step's two rounds of 3 prompts
    c.mesh.update(dict(data=1, fsdp=jax.device_count() // 2, tensor=2))
    c.eval.update(dict(every=2, num_prompts=4, batch_size=2 if srr else 4))
    out, learner = train.run(c)
    checksum = jax.jit(lambda t: sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))(learner.trainable)
    rows = []
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    res = dict(processes=jax.process_count(), checksum=float(checksum), eval=out["eval"], rows=rows)
    with open(f"{workdir}.{jax.process_index()}.json", "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "srr")
