"""A stand-in for `gcloud` that runs the TPU scripts' remote commands for real on this machine.

Installed as `gcloud` on PATH by tests/launch/conftest.py. Each TPU VM node has FAKE_GCLOUD_WORKERS workers;
worker w of node N is the folder $FAKE_GCLOUD_ROOT/N/w<w>, used as HOME and current folder, with `hostname`
answering "N-w<w>". Handled:
  compute tpus tpu-vm ssh NODE --worker=all|I --command=CMD    bash -c CMD on each selected worker
  compute tpus tpu-vm scp SRC DEST --worker=all                 local -> NODE:path, or NODE:glob -> local dir
  compute tpus tpu-vm describe|create|delete NAME               state in $FAKE_GCLOUD_ROOT/state/NAME
  alpha compute tpus queued-resources describe|create|delete ID describe pops the next line of
                                                                $FAKE_GCLOUD_ROOT/qr/ID (the states to report)
Every call is appended as a JSON list of its arguments to $FAKE_GCLOUD_ROOT/calls.jsonl.
"""
from __future__ import annotations

import glob
import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(os.environ["FAKE_GCLOUD_ROOT"])
WORKERS = int(os.environ.get("FAKE_GCLOUD_WORKERS", "2"))


def flag(args: list[str], name: str) -> str | None:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


def positionals(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("--")]


def worker_homes(node: str, which: str) -> list[pathlib.Path]:
    ids = range(WORKERS) if which == "all" else [int(which)]
    homes = [ROOT / node / f"w{i}" for i in ids]
    for h in homes:
        h.mkdir(parents=True, exist_ok=True)
    return homes


def fake_bin(host: str) -> pathlib.Path:
    d = ROOT / "bin" / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hostname").write_text(f"#!/bin/sh\necho {host}\n")
    (d / "hostname").chmod(0o755)
    return d


def ssh(node: str, args: list[str]) -> int:
    rc = 0
    for home in worker_homes(node, flag(args, "worker") or "0"):
        host = f"{node}-{home.name}"
        env = dict(os.environ, HOME=str(home), PATH=f"{fake_bin(host)}:{os.environ['PATH']}")
        rc |= subprocess.call(["bash", "-c", flag(args, "command")], cwd=home, env=env)
    return rc


def scp(src: str, dest: str, args: list[str]) -> int:
    if ":" in dest:  # local -> every worker
        node, path = dest.split(":", 1)
        for home in worker_homes(node, flag(args, "worker") or "0"):
            target = home / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
        return 0
    node, pattern = src.split(":", 1)
    found = 0
    for home in worker_homes(node, flag(args, "worker") or "0"):
        for f in glob.glob(str(home / pattern)):
            shutil.copy(f, dest)
            found += 1
    return 0 if found else 1


def state_file(kind: str, name: str) -> pathlib.Path:
    p = ROOT / kind / name
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def tpu_vm(verb: str, args: list[str]) -> int:
    pos = positionals(args)
    if verb == "ssh":
        return ssh(pos[0], args)
    if verb == "scp":
        return scp(pos[0], pos[1], args)
    state = state_file("state", pos[0])
    if verb == "describe":
        if not state.exists():
            print(f"ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: {pos[0]}", file=sys.stderr)
            return 1
        print(state.read_text().strip())
        return 0
    if verb == "create":
        state.write_text("READY\n")
        return 0
    if verb == "delete":
        state.unlink(missing_ok=True)
        return 0
    raise SystemExit(f"fake gcloud: unhandled tpu-vm verb {verb}")


def queued(verb: str, args: list[str]) -> int:
    states = state_file("qr", positionals(args)[0])
    if verb == "create":
        if not states.exists():
            states.write_text("WAITING_FOR_RESOURCES\nPROVISIONING\nACTIVE\n")
        return 0
    if verb == "describe":
        lines = states.read_text().splitlines()
        print(lines[0])
        if len(lines) > 1:  # the last state sticks
            states.write_text("\n".join(lines[1:]) + "\n")
        return 0
    if verb == "delete":
        states.unlink(missing_ok=True)
        return 0
    raise SystemExit(f"fake gcloud: unhandled queued-resources verb {verb}")


def main(argv: list[str]) -> int:
    ROOT.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "calls.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(argv) + "\n")
    if argv[:3] == ["compute", "tpus", "tpu-vm"]:
        return tpu_vm(argv[3], argv[4:])
    if argv[:4] == ["alpha", "compute", "tpus", "queued-resources"]:
        return queued(argv[4], argv[5:])
    raise SystemExit(f"fake gcloud: unhandled command {argv}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
