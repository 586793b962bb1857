"""Waits until OpenAI-compatible servers answer `GET {base}/models`; prints the model ids they serve.

    python3 launch/wait_models.py http://host:30000/v1 [more base URLs] [--timeout 1800] [--pid 1234]
        [--api-key-env OPENAI_API_KEY]

Standard library only: it runs in whatever environment serves the model (SGLang's, vLLM's or ours). Prints
one line per server, `<base> <id> [<id> ...]`; exits 1 with the reason when a server is not up within
--timeout seconds or the process --pid (the server being started) dies first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def model_ids(base: str, api_key: str | None, timeout_s: float = 5.0) -> list[str]:
    """The ids listed by `GET {base}/models`; raises OSError / ValueError while the server is not ready."""
    request = urllib.request.Request(base.rstrip("/") + "/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.loads(response.read().decode("utf-8"))
    ids = [m["id"] for m in body.get("data", []) if isinstance(m, dict) and "id" in m]
    if not ids:
        raise ValueError(f"{base}/models lists no model: {body}")
    return ids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # an exited child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="wait_models.py", description=__doc__.splitlines()[0])
    p.add_argument("bases", nargs="+", help="base URLs, e.g. http://127.0.0.1:30000/v1")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for each server")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between attempts")
    p.add_argument("--pid", type=int, help="give up as soon as this process (the server) has exited")
    p.add_argument("--api-key-env", default="", help="env var holding the API key, if the server wants one")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    for base in args.bases:
        if not base.startswith(("http://", "https://")):
            print(f"wait_models.py: {base!r} is not an http(s) base URL", file=sys.stderr)
            return 2
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                print(base, *model_ids(base, key), flush=True)
                break
            except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
                last = e
            if args.pid is not None and not alive(args.pid):
                print(f"wait_models.py: the server process {args.pid} exited before {base} answered "
                      f"(last error: {last})", file=sys.stderr)
                return 1
            if time.monotonic() >= deadline:
                print(f"wait_models.py: {base} did not answer within {args.timeout:g}s (last error: {last})",
                      file=sys.stderr)
                return 1
            time.sleep(args.poll)
    return 0


if __name__ == "__main__":
    sys.exit(main())
