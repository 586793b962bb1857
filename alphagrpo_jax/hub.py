"""Release folders named by a Hugging Face Hub id (e.g. ByteDance-Seed/BAGEL-7B-MoT): downloaded once into the
Hub cache ($HF_HOME, default ~/.cache/huggingface) with huggingface_hub's `snapshot_download`, then read there.

A spec is a Hub id when it has the form `owner/name`, is not an existing path, and `owner` is not an existing
folder (so a mistyped local `runs/x` still reads as a missing folder). Offline (`HF_HUB_OFFLINE=1`) a cached
snapshot is used; anything else is a one-line error with the download command.
"""
from __future__ import annotations

import logging
import os
import re

from alphagrpo_jax.errors import UsageError

BAGEL_7B_MOT = "ByteDance-Seed/BAGEL-7B-MoT"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

log = logging.getLogger("alphagrpo_jax.hub")


def is_hub_id(spec) -> bool:
    return (isinstance(spec, str) and bool(_HUB_ID.match(spec)) and not os.path.exists(spec)
            and not os.path.isdir(spec.split("/")[0]))


def resolve(spec, key: str = "--checkpoint"):
    """`spec` itself, or for a Hub id the local snapshot folder (downloaded if needed)."""
    if not is_hub_id(spec):
        return spec
    from huggingface_hub import snapshot_download  # deferred: only Hub ids need it

    log.info("%s: %s is a Hugging Face Hub id: fetching its snapshot (cached under $HF_HOME)", key, spec)
    try:
        return snapshot_download(repo_id=spec)
    except Exception as e:  # noqa: BLE001  offline, unknown repository, gated, network: all one line
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise UsageError(f"{key}: {spec}: no such folder, and the Hugging Face Hub has no reachable snapshot of it "
                         f"({type(e).__name__}: {reason}); download it on a machine that is online: "
                         f"hf download {spec} --local-dir DIR, then pass DIR") from None
