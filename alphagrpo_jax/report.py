"""Plot reward curves from training metrics (matplotlib, no display needed).

    python -m alphagrpo_jax.report --workdir workdir/toy_rt2i [--workdir workdir/other --label name ...]
        [--out reward_curve.png]

Each workdir contributes its train reward (per step, with a moving average) and its held-out eval reward. Both
are the run's total reward, the weighted sum of its reward components (its config.yaml's `reward.weights`, e.g.
"toy_dvreward + 0.2*think_format"); the axes say so. Workdirs and --out may be local or gs:// (paths.py).
"""
from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

from alphagrpo_jax import errors, paths, run_config
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.metrics import read_metrics
from alphagrpo_jax.reward.label import describe


def curves(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rows = read_metrics(path)
    out = {}
    for key in ("reward/mean", "eval/reward"):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if pts:
            steps, vals = zip(*pts)
            out[key] = (np.asarray(steps), np.asarray(vals, np.float64))
    return out


def reward_name(workdir: str) -> str:
    """What the run's "reward" sums (its recorded `reward.weights`); "reward" for a run without config.yaml."""
    path = run_config.path_in(workdir)
    if not paths.exists(path):
        return "reward"
    config = run_config.from_yaml(paths.read_text(path), path)
    weights = config.get("reward", {}).get("weights", None)
    return describe(weights) if weights else "reward"


def plot(runs: list[tuple[str, str]], out: str, smooth: int = 5) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    names = {workdir: reward_name(workdir) for _, workdir in runs}
    shared = len(set(names.values())) == 1  # one reward for all runs: on the axis, else in each run's label
    for label, workdir in runs:
        if not shared:
            label = f"{label}: {names[workdir]}"
        c = curves(paths.join(workdir, "metrics.jsonl"))
        if "reward/mean" in c:
            s, v = c["reward/mean"]
            ax_train.plot(s, v, alpha=0.3)
            k = min(smooth, len(v))
            ma = np.convolve(v, np.ones(k) / k, mode="valid")
            ax_train.plot(s[k - 1:], ma, label=f"{label} (moving avg {k})", color=ax_train.lines[-1].get_color())
        if "eval/reward" in c:
            s, v = c["eval/reward"]
            ax_eval.plot(s, v, marker="o", label=label)
    what = f"reward = {next(iter(names.values()))}" if shared else "reward (see legend)"
    ax_train.set(title="train reward (rollouts)", xlabel="step", ylabel=f"mean {what}")
    ax_eval.set(title="held-out eval reward (ODE, eval prompts)", xlabel="step", ylabel=f"mean {what}")
    for ax in (ax_train, ax_eval):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    paths.write_bytes(out, buf.getvalue())
    plt.close(fig)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", action="append", required=True, help="a training workdir (repeatable)")
    ap.add_argument("--label", action="append", help="a label per --workdir (default: folder name)")
    ap.add_argument("--out", default=None, help="PNG path (default: <first workdir>/reward_curve.png)")
    ap.add_argument("--smooth", type=int, default=5)
    args = ap.parse_args(argv)
    labels = args.label or [paths.basename(w) if paths.is_remote(w) else os.path.basename(os.path.normpath(w))
                            for w in args.workdir]
    if len(labels) != len(args.workdir):
        raise UsageError(f"--label: given {len(labels)} times for {len(args.workdir)} --workdir; expected one per "
                         f"--workdir")
    for w in args.workdir:
        if not paths.exists(paths.join(w, "metrics.jsonl")):
            raise UsageError(f"--workdir {w}: no metrics.jsonl; expected a training workdir")
    out = args.out or paths.join(args.workdir[0], "reward_curve.png")
    print(plot(list(zip(labels, args.workdir)), out, args.smooth))
    return 0


if __name__ == "__main__":
    sys.exit(errors.run_main(main))
