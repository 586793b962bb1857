"""Start-up time of `python -m alphagrpo_jax.generate` with and without the persistent compilation cache.

    python benchmarks/generate_start.py [--checkpoint assets/toy_base] [--repeats 2]

Runs the program as a user does (a subprocess, the release's own sampling settings, one prompt with --think):
once with the cache off, then `--repeats` times against a fresh cache folder (the first of these fills it). For
each call it prints the wall time to the first denoising step (`start`: interpreter, imports, release load,
prefill + think decoding and every compilation up to the denoising loop's), the release load time the program
reports, and the total wall time.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def one_call(checkpoint: str, out: str, cache: str) -> dict:
    cmd = [sys.executable, "-u", "-m", "alphagrpo_jax.generate", "--checkpoint", checkpoint, "--prompt",
           "two red circles", "--think", "--out", out, "--compilation-cache", cache]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    start, err = None, ""
    while True:
        chunk = proc.stderr.read(64)
        if not chunk:
            break
        err += chunk
        if start is None and "denoising" in err:
            start = time.perf_counter() - t0
    proc.wait()
    total = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"generate failed ({proc.returncode}): {err[-2000:]}")
    load = re.search(r"loaded in ([\d.]+) s", err)
    return dict(start=start, load=float(load.group(1)) if load else None, total=total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="assets/toy_base")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("cache off", "off")] + [(f"cache call {i + 1}", os.path.join(tmp, "cache"))
                                         for i in range(args.repeats)]
        for name, cache in runs:
            r = one_call(args.checkpoint, os.path.join(tmp, "x.png"), cache)
            print(f"{name:14s} start {r['start']:6.1f} s   release load {r['load']:5.1f} s   total {r['total']:6.1f} s",
                  flush=True)


if __name__ == "__main__":
    main()
