"""The GRPO trainer's command line, SIGKILLed by itself at the point named in $KILL_AT (test helper):

    KILL_AT=row:N       right after the metrics row of step N is written (before its checkpoint)
    KILL_AT=torn_row:N  in the middle of writing the metrics row of step N (a torn line is left)
    KILL_AT=save:N      in Orbax's background thread, while the async save of step N is in flight (its files
                        written, not yet committed)

    python tests/reliability/kill_worker.py --config configs/toy_rt2i.py --config.workdir=... [overrides]

Real SIGKILLs at chosen points, so the kill-anywhere test is deterministic; the trainer itself is unchanged.
"""
import os
import signal

from alphagrpo_jax import cli, metrics, paths, train


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kill_at: str) -> None:
    what, step = kill_at.split(":")
    step = int(step)
    if what in ("row", "torn_row"):
        write = metrics.MetricsWriter.write

        def patched(self, s, row):
            if s == step and "reward/mean" in row:  # the step's train row
                if what == "torn_row":
                    paths.append_text(self.path, '{"adv/abs_mean": 0.5, "adv/me')
                    _die()
                write(self, s, row)
                _die()
            write(self, s, row)

        metrics.MetricsWriter.write = patched
    elif what == "save":
        from orbax.checkpoint._src.path import atomicity

        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def patched(self, *args, **kwargs):
            if self.get_final().name == str(step):
                _die()
            return await finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = patched
    else:
        raise ValueError(f"KILL_AT={kill_at!r}: expected row:N, torn_row:N or save:N")


if __name__ == "__main__":
    if os.environ.get("KILL_AT"):
        _arm(os.environ["KILL_AT"])
    cli.run(train.main)
