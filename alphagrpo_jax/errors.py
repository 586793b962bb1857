"""Usage errors: bad input named in one line, reported by every entry point without a traceback (exit code 2).

    raise UsageError("config.rollout.group_size: expected an int >= 2, got 1")
    sys.exit(errors.run_main(main, argv))     # argparse entry points; cli.run does the same for config ones

A message names the file/key, what was found and what is expected. Errors that are not the user's input (bugs,
a verifier outage mid-run) stay ordinary exceptions with their traceback.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

USAGE_EXIT_CODE = 2


class UsageError(ValueError):
    """Bad input (config key, flag, file) found before or instead of the work; one line, no traceback."""


def report(e: UsageError) -> int:
    """Prints `error: <message>` (on one line) to stderr; returns the usage exit code."""
    line = "; ".join(part.strip() for part in str(e).splitlines() if part.strip()) or type(e).__name__
    print(f"error: {line}", file=sys.stderr, flush=True)
    return USAGE_EXIT_CODE


def run_main(main: Callable[..., int | None], *args) -> int:
    """`main(*args)`'s exit code; a UsageError becomes a one-line message on stderr and exit code 2."""
    try:
        return int(main(*args) or 0)
    except UsageError as e:
        return report(e)
