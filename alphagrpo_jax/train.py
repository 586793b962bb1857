"""GRPO training of a BAGEL-class model for Reasoning Text-to-Image (and SRR, by config).

    python -m alphagrpo_jax.train --config configs/toy_rt2i.py [--config.total_steps=40 ...]

One step: `rounds_per_step` rounds of P prompts x G samples are rolled out with the current params (think text,
then an image with an SDE window); rewards are scored asynchronously while later rounds roll out; each round's
group-relative advantages (over `advantage.population` prompts) drive the image (Flow-GRPO) and text (GSPO)
losses; rounds without signal are redrawn and the round gradients are normalised as the reference's into one
AdamW update (rl/accumulation.py, docs/training.md). Everything a resumed run needs (params, optimizer, step,
data-iterator state) is checkpointed; all randomness derives from (seed, step, round), so a killed run resumes
exactly.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from alphagrpo_jax import checkpointing, cli, integrity, metrics as metrics_lib, paths, plugins, run_config
from alphagrpo_jax.data.prompts import PromptRecords, round_dataset
from alphagrpo_jax.data.sources import prompt_files
from alphagrpo_jax.parallel import distributed, hostdata, mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.reward.label import describe as describe_reward
from alphagrpo_jax.reward.service import build_reward_fn
from alphagrpo_jax.rl import accumulation, advantages, tasks as tasks_lib
from alphagrpo_jax.rl.grid import sample_grid
from alphagrpo_jax.rl.guards import StepGuard
from alphagrpo_jax.rl.learner import add_grads
from alphagrpo_jax.rl.tasks import held_out_eval
from alphagrpo_jax.rl.trainer_state import build, checkpoint_target, round_key
from alphagrpo_jax.rl.validate import check_train_config

if TYPE_CHECKING:
    from alphagrpo_jax.reward.service import RewardResult

log = logging.getLogger("alphagrpo_jax.train")


def hparams(config) -> dict:
    """The config's scalar and short-string leaves ({dotted key: value}), for TensorBoard's HPARAMS tab."""
    out = {}
    for key, value in run_config.flatten(config).items():
        if isinstance(value, (list, tuple)) and len(str(value)) <= 100:
            value = str(value)
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 100):
            out[key] = value
    return out


def think_table(prompts, texts, rewards, reward_name: str) -> str:
    """A Markdown table of the eval samples' prompt, think text and reward (TensorBoard's text plugin)."""
    def cell(x):
        return str(x).replace("|", "\\|").replace("\n", " ")

    rows = [f"| prompt | think | reward ({reward_name}) |", "|---|---|---|"]
    rows += [f"| {cell(p)} | {cell(t)} | {v:.3f} |" for p, t, v in zip(prompts, texts, rewards)]
    return "\n".join(rows)


def train(config) -> dict:
    """Runs (or resumes) the training run of `config`; returns {"eval": [held-out eval rows], "final_step": N,
    "preempted_at": N (only when preempted)}."""
    return run(config)[0]


def run(config):
    """(train's results, the trained Learner): in-process callers (tests) read the final params from it."""
    plugins.load(config)  # the config's plug-ins register their components, prompt sources, transforms
    check_train_config(config)  # every key, file and reward endpoint, before any model loads (UsageError)
    metrics_lib.check_wandb(config.log.get("wandb", ""))
    distributed.maybe_initialize()
    mesh = mesh_lib.mesh_from_config(config)
    rules = rules_lib.merge_rules(rules_lib.DEFAULT_RULES, dict(config.get("rules", {}) or {}))
    workdir = config.workdir
    paths.makedirs(workdir)
    run_config.record(config, jax.process_index())
    timer = metrics_lib.PhaseTimer()
    # Active: library code (the rollouts' text and image parts) times sub-phases into it via metrics.phase.
    with rules_lib.use_rules(mesh, rules), timer.active():
        return _train(config, mesh, workdir, timer)


def _train(config, mesh, workdir, timer):
    log.info("mesh: %s", mesh_lib.describe(mesh))
    rel, rollout, learner, schedule = build(config, mesh)
    tasks = tasks_lib.from_config(config, rollout)
    train_path, eval_path = prompt_files(config)
    r = config.rollout
    # Every process iterates the same rounds; each scores its own block of a round's samples.
    data = round_dataset(train_path, prompts_per_round=r.prompts_per_round, seed=config.seed)
    data_it = iter(data)
    eval_records = list(PromptRecords(eval_path))[: config.eval.num_prompts] if eval_path else []
    reward_fn = writer = ckpt = bar = None
    try:
        reward_fn = build_reward_fn(config.reward)
        writer = metrics_lib.MetricsWriter(workdir, tensorboard=config.log.tensorboard,
                                           wandb_project=config.log.get("wandb", ""), config=config)
        ckpt = checkpointing.CheckpointManager(paths.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                                               every=config.checkpoint.every)
        ckpt.install_preemption_handler()
        start = 0
        if ckpt.latest_step() is not None:
            state, extras = ckpt.restore(checkpoint_target(learner))  # the newest intact step (verified)
            learner.trainable, learner.opt_state = state["params"], state["opt"]
            data_it.set_state(extras["data"])
            start = int(extras["step"])
            log.info("resumed from step %d", start)
        writer.truncate(start or -1)  # what a killed run logged after its checkpoint (all: step 0 too) is logged again
        reward_name = describe_reward(config.reward.weights)
        if not start:  # a run's config and hyperparameters, once (a resumed run keeps its first ones)
            writer.write_text(0, "config", "    " + run_config.to_yaml(config).rstrip("\n").replace("\n", "\n    "))
            writer.write_hparams(hparams(config), ["eval/reward", "reward/mean"])
        results: dict = {}

        def run_eval(step):
            if not eval_records:
                return
            # The eval's own rollout sub-phases go to a throwaway timer, not into the next step's row.
            with timer("eval"), metrics_lib.PhaseTimer().active():
                ev = held_out_eval(config, learner.model(), rel, eval_records, reward_fn, tasks)
            writer.write(step, ev.metrics)
            results["eval"].append({"step": step, **ev.metrics})
            n = min(config.log.grid_size, len(ev.prompts))
            # The reward first (a long think text is cut at the cell's last line), saying what it sums.
            captions = [f"reward={v:.2f} ({reward_name}) | {p} | {t}"
                        for p, t, v in zip(ev.prompts[:n], ev.texts[:n], ev.rewards[:n])]
            grid = sample_grid(ev.images[:n], captions, paths.join(workdir, f"samples_step{step:05d}.png"))
            writer.write_image(step, "eval/samples", grid)
            writer.write_text(step, "eval/think", think_table(ev.prompts[:n], ev.texts[:n], ev.rewards[:n],
                                                              reward_name))
            log.info("eval step %d: %s", step, {k: round(v, 4) for k, v in ev.metrics.items() if k.count("/") == 1})

        # The run's earlier evals (a resumed run's summary spans the whole run); an eval a kill interrupted after its
        # step's checkpoint is run again.
        results["eval"] = ([r for r in metrics_lib.read_metrics(writer.path) if "eval/reward" in r]
                           if start and paths.exists(writer.path) else [])
        done = [r["step"] for r in results["eval"]]
        due = bool(config.eval.every) and start % config.eval.every == 0 and start not in done
        if jax.process_count() > 1:  # process 0 (the one that writes metrics) decides for all: an eval is collective
            due = bool(multihost_utils.broadcast_one_to_all(np.int32(due)))
        if due:
            run_eval(start)
        bar = metrics_lib.progress(total=config.total_steps, initial=start, desc="grpo", unit="step")

        def show(row):  # the bar's postfix: this step's mean reward and the latest held-out eval reward
            postfix = {"reward": f"{row['reward/mean']:.3f}"}
            if results["eval"]:
                postfix["eval"] = f"{results['eval'][-1]['eval/reward']:.3f}"
            bar.set_postfix(postfix)

        guard = StepGuard(config.train.max_nonfinite_steps, r.rounds_per_step)
        calls = {name: tasks_lib.backward_calls(task, learner.loss_config) for name, task in tasks.items()}
        for step in range(start + 1, config.total_steps + 1):
            step_tasks = accumulation.step_kinds(config, step)
            plan = accumulation.from_config(config, step_tasks, calls)
            rounds: list = []

            def roll(name):  # rolls out the step's next round (index len(rounds): keys and windows continue it)
                rnd, task = len(rounds), tasks[name]
                window_start = tasks_lib.draw_window_start(task, np.random.default_rng((config.seed, step, rnd)))
                with timer(f"rollout_{name}"):
                    rd = task.start_round(learner.model(), rel, next(data_it), reward_fn,
                                          round_key(config.seed, step, rnd), window_start)
                    jax.block_until_ready(rd.result.rollout.trajectory)
                rounds.append(rd)
                return rnd

            for name in step_tasks:
                roll(name)
            queue = plan.blocks()
            acc, used, extra_rounds, stats, extra = None, 0, 0, [], {}
            while queue:
                block = queue.pop(0)
                rds = [rounds[i] for i in block]
                with timer("reward_wait"):
                    got = [rd.rewards() for rd in rds]
                for g in got:
                    extra.update(g.metrics)
                # One estimate over the block's populations (consecutive prompts of its rounds).
                adv = advantages.compute(config.advantage.name, np.concatenate([g.rewards for g in got]),
                                         population=plan.population, std=config.advantage.std, eps=config.advantage.eps)
                adv = np.split(adv, len(rds))
                for rd, g, a in zip(rds, got, adv):
                    ro = rd.result.rollout
                    stats.append(RoundStats(g.result, g.rewards, a, hostdata.to_host(ro.think_len),
                                            hostdata.to_host(ro.think_truncated)))
                if all(np.all(a == 0) for a in adv) or not any(g.has_signal for g in got):
                    what = f"step {step} rounds {block} ({rds[0].task}): no learning signal (all advantages 0 / " \
                           f"nothing improved)"
                    if plan.skipped == "redraw" and extra_rounds + len(block) <= plan.max_extra_rounds:
                        log.info("%s, redrawn", what)
                        queue.append([roll(rds[0].task) for _ in block])
                        extra_rounds += len(block)
                    elif plan.skipped == "redraw":
                        log.warning("%s; train.max_extra_rounds = %d redrawn rounds used up: the update has %d "
                                    "round(s) fewer", what, plan.max_extra_rounds, len(block))
                    else:
                        log.info("%s, round(s) skipped", what)
                    for i in block:
                        rounds[i] = None
                    continue
                for rd, a in zip(rds, adv):
                    task = tasks[rd.task]
                    with timer("train"):
                        grads, m = learner.grads(rd.result.rollout, jnp.asarray(a.reshape(-1)),
                                                 task.rollout_config.image, task.text_loss_weight,
                                                 scale=plan.round_scale())
                        acc = grads if acc is None else add_grads(acc, grads)
                        jax.block_until_ready(acc)
                    used += 1
                for i in block:
                    rounds[i] = None  # its rollout is no longer needed (a redrawn step may hold many)
            row = step_metrics(stats, m if used else {}, rollout.think)
            row.update(extra)
            row["rounds_used"], row["rounds_extra"] = used, extra_rounds
            row["grad/divisor"], row["adv/population"] = plan.divisor(used), plan.population * r.group_size
            if guard.update_ok(step, acc, used, row):  # no signal / non-finite loss or grads: no update (rl/guards.py)
                with timer("train"):
                    row["grad_norm"] = float(learner.apply(acc, plan.divisor(used)))
                    guard.check_params(step, learner.trainable)
            row["lr"] = float(schedule(step - 1))
            row.update(timer.pop())
            writer.write(step, row)
            bar.update(1)
            show(row)
            if ckpt.should_save(step) or step == config.total_steps:
                ckpt.save(step, {"params": learner.trainable, "opt": learner.opt_state},
                          {"step": step, "data": data_it.get_state()})
            if config.eval.every and step % config.eval.every == 0:
                run_eval(step)
                show(row)
            if ckpt.preempted(step) and step < config.total_steps:
                log.warning("preempted: saved step %d, exiting", step)
                results["preempted_at"] = step
                break
    finally:  # also on an error: async checkpoint writes finish, the reward client's connections close
        for resource in (bar, ckpt, writer, reward_fn):
            if resource is not None:
                resource.close()
    results["final_step"] = step if config.total_steps > start else start
    return results, learner


@dataclasses.dataclass
class RoundStats:
    """What a step's metrics row reads of one used round."""
    reward_result: RewardResult   # the whole round's, as scored
    rewards: np.ndarray           # [P, G] training rewards
    advantages: np.ndarray        # [P, G]
    think_len: np.ndarray         # [B] host copies
    think_truncated: np.ndarray   # [B]


def step_metrics(stats: list[RoundStats], loss_metrics: dict, think: bool) -> dict:
    """Reward/advantage/think statistics of a step's rounds plus the (last used round's) loss metrics; think
    statistics when the rollout `think`s."""
    rewards = np.concatenate([s.rewards.reshape(-1) for s in stats])
    adv = np.concatenate([s.advantages.reshape(-1) for s in stats])
    row = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
           "reward/group_std": float(np.mean([s.rewards.std(axis=1).mean() for s in stats])),
           "adv/mean": float(adv.mean()), "adv/abs_mean": float(np.abs(adv).mean()),
           "adv/zero_frac": float(np.mean(adv == 0))}
    results = [s.reward_result for s in stats]
    for name in results[0].components:
        row[f"reward/{name}"] = float(np.mean(np.concatenate([rw.components[name] for rw in results])))
    tags: dict[str, list[float]] = {}
    for rw in results:
        for info in rw.info:
            for k, v in info.items():
                if "/tag/" in k:
                    tags.setdefault(k, []).append(v)
    row.update({f"reward/{k}": float(np.mean(v)) for k, v in tags.items()})
    if any("dvreward/from_text" in rw.counts for rw in results):  # 0/1 scores (reward.allow_text_scores)
        row["dvreward/from_text"] = float(sum(rw.counts.get("dvreward/from_text", 0) for rw in results))
    if think:
        row.update({"think/len": float(np.concatenate([s.think_len for s in stats]).mean()),
                    "think/truncated": float(np.concatenate([s.think_truncated for s in stats]).mean())})
    row.update({k: float(v) for k, v in loss_metrics.items()})
    return row


def main(config) -> None:
    try:
        out = train(config)
    except (integrity.NonFiniteError, checkpointing.CheckpointDamagedError) as e:
        raise SystemExit(f"error: {e}") from e  # one line, exit 1
    if "preempted_at" in out:  # no final summary: the run is not finished; the scheduler should requeue it
        print(f"preempted at step {out['preempted_at']}; checkpoint saved; rerun the same command to resume")
        raise SystemExit(checkpointing.PREEMPTED_EXIT_CODE)
    if "eval" in out and out["eval"]:
        first, last = out["eval"][0], out["eval"][-1]
        print(f"held-out reward: step {first['step']}: {first['eval/reward']:.4f} -> "
              f"step {last['step']}: {last['eval/reward']:.4f}")


if __name__ == "__main__":
    cli.run(main)
