"""Evaluation harness throughput: images per second through `evaluation/runner.generate` (the toy benchmark's
prompts) at batch 1 vs the harness's batch, for the toy release and a random-init ~100M config, in one run.

    python benchmarks/bench_eval.py [--quick] [--batch 8]

Each row: the first call's seconds (compile included) apart from the steady images/s of the calls after it; the
batch-1 row is the baseline of its model. Images are written to a temporary folder, as the harness writes them.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time


from bench_train import small_setup  # noqa: E402  (the random-init small_100m release)
from common import REPO  # noqa: E402

from alphagrpo_jax.evaluation import runner  # noqa: E402
from alphagrpo_jax.models.bagel import release  # noqa: E402
from alphagrpo_jax.parallel import mesh as mesh_lib  # noqa: E402
from alphagrpo_jax.sampling.pipeline import Pipeline  # noqa: E402
from alphagrpo_jax.toy import transforms as toy_transforms  # noqa: E402
from alphagrpo_jax.toy.benchmark import Toy  # noqa: E402


def images_per_second(pipe, items, settings) -> tuple[float, float]:
    bench = Toy()
    with tempfile.TemporaryDirectory() as out:
        warm = items[:settings.batch_size]
        t0 = time.perf_counter()
        runner.generate(bench, warm, pipe, settings, out, "eval", "m", runner.open_manifest(out))
        first = time.perf_counter() - t0
        rest = items[settings.batch_size:]
        t0 = time.perf_counter()
        runner.generate(bench, rest, pipe, settings, out, "eval", "m", runner.open_manifest(out))
        return first, len(rest) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer prompts and steps")
    ap.add_argument("--batch", type=int, default=8, help="the harness's batch (configs/eval_base.py toy: 8)")
    args = ap.parse_args()
    items = Toy().read("", "eval")[:(2 if args.quick else 4) * args.batch]
    steps = 6 if args.quick else 25
    toy = release.load_release(os.path.join(REPO, "assets/toy_base"), mesh_lib.make_mesh({"fsdp": -1}))
    _, load_small, _ = small_setup(argparse.Namespace(quick=True), "")
    small = load_small("", mesh_lib.make_mesh({"fsdp": -1}), param_dtype="bfloat16", dtype="bfloat16")
    toy_kw = dict(vae_transform=toy_transforms.VAE_TRANSFORM, vit_transform=toy_transforms.VIT_TRANSFORM)
    models = {"toy (32 px)": (Pipeline(toy, cache_size=256, **toy_kw), 32),
              "small_100m (64 px)": (Pipeline(small, cache_size=256, **toy_kw), 64)}
    print(f"{'model':<22}{'batch':>6}{'first call s':>14}{'images/s':>10}{'vs batch 1':>12}")
    for name, (pipe, side) in models.items():
        base = None
        for batch in (1, args.batch):
            s = dataclasses.replace(runner.GenerationSettings(), height=side, width=side, num_timesteps=steps,
                                    cfg_text=2.0, batch_size=batch)
            first, ips = images_per_second(pipe, items, s)
            base = base or ips
            print(f"{name:<22}{batch:>6}{first:>14.1f}{ips:>10.2f}{ips / base:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
