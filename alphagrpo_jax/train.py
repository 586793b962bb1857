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

import logging

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
from alphagrpo_jax.rl import accumulation, advantages
from alphagrpo_jax.rl.config import srr_configs
from alphagrpo_jax.rl.grid import sample_grid
from alphagrpo_jax.rl.guards import StepGuard
from alphagrpo_jax.rl.learner import add_grads
from alphagrpo_jax.rl.rounds import start_round
from alphagrpo_jax.rl.trainer_state import build, checkpoint_target, held_out_eval, round_key
from alphagrpo_jax.rl.validate import check_train_config

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


def _train(config, mesh, workdir, timer) -> dict:
    log.info("mesh: %s", mesh_lib.describe(mesh))
    rel, rcfg, learner, schedule = build(config, mesh)
    train_path, eval_path = prompt_files(config)
    r = config.rollout
    # Every process iterates the same rounds; each scores its own block of a round's samples.
    data = round_dataset(train_path, prompts_per_round=r.prompts_per_round, seed=config.seed)
    data_it = iter(data)
    eval_records = list(PromptRecords(eval_path))[: config.eval.num_prompts] if eval_path else []
    reward_fn = build_reward_fn(config.reward)
    writer = ckpt = bar = None
    try:
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
        kinds = tuple(config.task.kinds)
        srr_cfgs = srr_configs(config, rcfg.system_prompt) if "srr" in kinds else None

        def run_eval(step):
            if not eval_records:
                return
            # The eval's own rollout sub-phases go to a throwaway timer, not into the next step's row.
            with timer("eval"), metrics_lib.PhaseTimer().active():
                ev = held_out_eval(config, learner.model(), rel, eval_records, reward_fn, rcfg, srr_cfgs)
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
        calls = {kind: accumulation.backward_calls(cfg_k.image.sde_window, learner.lcfg.train_image,
                                                   learner.lcfg.train_text)
                 for kind, cfg_k in (("rt2i", rcfg), ("srr", srr_cfgs[0] if srr_cfgs else None)) if cfg_k}
        for step in range(start + 1, config.total_steps + 1):
            kinds_k = accumulation.step_kinds(config, step)
            plan = accumulation.from_config(config, kinds_k, calls)
            rounds: list = []

            def roll(kind):  # rolls out the step's next round (index len(rounds): keys and windows continue it)
                rnd = len(rounds)
                cfg_k = rcfg if kind == "rt2i" else srr_cfgs[0]
                ws = (cfg_k.draw_window_start(np.random.default_rng((config.seed, step, rnd)))
                      if cfg_k.image.sde_window else 0)
                with timer(f"rollout_{kind}"):
                    rd = start_round(kind, learner.model(), rel, next(data_it), reward_fn,
                                     round_key(config.seed, step, rnd), ws, rcfg, srr_cfgs)
                    jax.block_until_ready(rd.result.rollout.trajectory)
                rounds.append(rd)
                return rnd

            for kind in kinds_k:
                roll(kind)
            queue = plan.blocks()
            acc, used, extra_rounds, stats, extra = None, 0, 0, [], {}
            while queue:
                block = queue.pop(0)
                rds = [rounds[i] for i in block]
                with timer("reward_wait"):
                    got = [rd.rewards() for rd in rds]
                for _, more, _ in got:
                    extra.update(more)
                # One estimate over the block's populations (consecutive prompts of its rounds).
                adv = advantages.compute(config.advantage.name, np.concatenate([g[0] for g in got]),
                                         population=plan.population, std=config.advantage.std, eps=config.advantage.eps)
                adv = np.split(adv, len(rds))
                for rd, (rewards, _, rw), a in zip(rds, got, adv):
                    ro = rd.result.rollout
                    think = (hostdata.to_host(ro.think_len), hostdata.to_host(ro.think_truncated))
                    stats.append((rw, rewards, a, think))
                improved = any(more.get("srr/any_improved", 1.0) for _, more, _ in got)
                if all(np.all(a == 0) for a in adv) or not improved:
                    what = f"step {step} rounds {block} ({rds[0].kind}): no learning signal (all advantages 0 / " \
                           f"nothing improved)"
                    if plan.skipped == "redraw" and extra_rounds + len(block) <= plan.max_extra_rounds:
                        log.info("%s, redrawn", what)
                        queue.append([roll(rds[0].kind) for _ in block])
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
                    with timer("train"):
                        if rd.kind == "rt2i":
                            scfg, text_w = rcfg.image, None  # loss.text_loss_weight
                        else:
                            scfg, text_w = srr_cfgs[0].image, config.task.srr.text_loss_weight
                        grads, m = learner.grads(rd.result.rollout, jnp.asarray(a.reshape(-1)), scfg, text_w,
                                                 scale=plan.round_scale())
                        acc = grads if acc is None else add_grads(acc, grads)
                        jax.block_until_ready(acc)
                    used += 1
                for i in block:
                    rounds[i] = None  # its rollout is no longer needed (a redrawn step may hold many)
            row = step_metrics(stats, m if used else {}, rcfg)
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
    results["learner"] = learner
    return results


def step_metrics(stats, loss_metrics: dict, rcfg) -> dict:
    """Reward/advantage/think statistics of a step's rounds plus the (last used round's) loss metrics. `stats`:
    per round (RewardResult, [P, G] rewards, [P, G] advantages, (host think_len [B], think_truncated [B]))."""
    rewards = np.concatenate([s[1].reshape(-1) for s in stats])
    adv = np.concatenate([s[2].reshape(-1) for s in stats])
    row = {"reward/mean": float(rewards.mean()), "reward/std": float(rewards.std()),
           "reward/group_std": float(np.mean([s[1].std(axis=1).mean() for s in stats])),
           "adv/mean": float(adv.mean()), "adv/abs_mean": float(np.abs(adv).mean()),
           "adv/zero_frac": float(np.mean(adv == 0))}
    for name in stats[0][0].components:
        row[f"reward/{name}"] = float(np.mean(np.concatenate([s[0].components[name] for s in stats])))
    tags: dict[str, list[float]] = {}
    for rw, *_ in stats:
        for info in rw.info:
            for k, v in info.items():
                if "/tag/" in k:
                    tags.setdefault(k, []).append(v)
    row.update({f"reward/{k}": float(np.mean(v)) for k, v in tags.items()})
    if any("dvreward/from_text" in rw.counts for rw, *_ in stats):  # 0/1 scores (reward.allow_text_scores)
        row["dvreward/from_text"] = float(sum(rw.counts.get("dvreward/from_text", 0) for rw, *_ in stats))
    if rcfg.think:
        lens = np.concatenate([s[3][0] for s in stats])
        trunc = np.concatenate([s[3][1] for s in stats])
        row.update({"think/len": float(lens.mean()), "think/truncated": float(trunc.mean())})
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
