"""Gradient norm of one stored RT2I round of the toy base under both normalisations (2026-12-06-grad-scale.md).

    PYTHONPATH=$PWD python docs/results/2026-12-06-grad-scale.py   # from the repository root
"""
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from alphagrpo_jax import plugins, train
from alphagrpo_jax.parallel import mesh as mesh_lib, rules as rules_lib
from alphagrpo_jax.data.prompts import round_dataset
from alphagrpo_jax.reward.service import build_reward_fn
from alphagrpo_jax.rl import accumulation, advantages
from alphagrpo_jax.rl.tasks.rt2i import RT2I
from configs import toy_rt2i

c = toy_rt2i.get_config()
plugins.load(c)  # the toy world: toy_dvreward, the toy prompt source
c.workdir = tempfile.mkdtemp()
# The reference's round geometry and window: 8 prompts x 14 samples, a 10-step SDE window starting in [0, 1].
c.rollout.update(dict(prompts_per_round=8, group_size=14, rounds_per_step=1))
c.rollout.image.update(dict(num_timesteps=12, sde_window=10, sde_window_range=(0, 11)))
mesh = mesh_lib.mesh_from_config(c)
with rules_lib.use_rules(mesh, rules_lib.DEFAULT_RULES):
    rel, rcfg, learner, _ = train.build(c, mesh)
    train_path, _ = train.prompt_files(c)
    records = next(iter(round_dataset(train_path, prompts_per_round=8, seed=c.seed)))
    reward_fn = build_reward_fn(c.reward)
    t = time.time()
    rd = RT2I.from_config(c, rcfg).start_round(learner.model(), rel, records, reward_fn, train.round_key(c.seed, 1, 0),
                                               rcfg.draw_window_start(np.random.default_rng((c.seed, 1, 0))))
    rewards = rd.rewards().rewards
    print("rollout s", time.time() - t, "reward mean", rewards.mean())
    calls = {"rt2i": accumulation.backward_calls(rcfg.image.sde_window, True, True)}
    for norm, pop in (("round_mean", 0), ("reference", 8)):
        c.loss.grad_normalization, c.advantage.population = norm, pop
        plan = accumulation.from_config(c, ("rt2i",), calls)  # an update made of this round
        adv = advantages.compute("grpo", rewards, population=plan.population)
        g, m = learner.grads(rd.result.rollout, jnp.asarray(adv.reshape(-1)), scale=plan.round_scale())
        n = float(jnp.sqrt(sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree.leaves(g))))
        print(f"{norm}: round scale {plan.round_scale()}, divisor {plan.divisor(1)}, update grad norm "
              f"{n / plan.divisor(1):.5f} (clip 1.0); loss/total {float(m['loss/total']):.5f}")
    reward_fn.close()
