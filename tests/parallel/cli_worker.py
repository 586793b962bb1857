"""A program started like every entry point (`alphagrpo_jax.cli.run`) that prints how JAX came up, as one JSON line:
`python -m tests.parallel.cli_worker --config configs/toy_rt2i.py` (tests/parallel/test_program_startup.py)."""
import json

import jax

from alphagrpo_jax import cli


def main(config) -> None:
    del config
    state = {"process_index": jax.process_index(), "process_count": jax.process_count(), "devices": jax.device_count(),
             "platform": jax.devices()[0].platform}
    print("startup:" + json.dumps(state), flush=True)


if __name__ == "__main__":
    cli.run(main)
