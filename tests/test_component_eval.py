"""component_eval.py: a trained LoRA checkpoint evaluated with its adapters on each expert separately. With
both experts' adapters it must reproduce the trainer's own held-out eval of that step, and with none the step-0
(base) eval, exactly (same keys, same protocol); further keys give other samples; switching an expert off zeroes
exactly its lora_b slices."""
import os

import jax
import numpy as np
import pytest
from flax import nnx

from alphagrpo_jax import train
from alphagrpo_jax.models.bagel.llm import GEN, UND
from alphagrpo_jax import component_eval

from tests.test_train import tiny_config


def test_variants_match_the_trainers_evals(tmp_path):
    # lr 3e-2: one step must move the adapters enough to change the held-out reward.
    c = tiny_config(tmp_path, 1, {"optim.lr": 3e-2, "eval.every": 1})
    out, learner = train.run(c)
    ev0, ev1 = out["eval"][0]["eval/reward"], out["eval"][1]["eval/reward"]
    assert ev0 != ev1
    # Only `both` besides the base: the single-expert variants' masks are checked below, and every variant runs
    # the same eval loop (check_srr_variants in tests/test_train_srr.py also evaluates `both` only).
    res = component_eval.component_eval(c, keys=2, variants=("both",))
    assert res["step"] == 1 and res["keys"] == 2 and os.path.exists(tmp_path / "component_eval_step1.json")
    assert set(res) == {"step", "keys", "per_key", "paired", "base", "both"}
    base, both = ([r["eval/reward"] for r in res["per_key"][v]] for v in ("base", "both"))
    assert base[0] == ev0 and both[0] == ev1  # key 0 is the trainer's
    assert base[1] != base[0]                 # key 1 draws other samples
    assert res["base"]["eval/reward"] == np.mean(base)
    assert res["paired"]["both"]["eval/reward"][0] == pytest.approx(np.mean(np.subtract(both, base)), abs=1e-12)
    with pytest.raises(ValueError, match="unknown variants.*'policy'"):
        component_eval.component_eval(c, variants=("policy",))

    trained = learner.trainable
    for experts in [(), (UND,), (GEN,), (UND, GEN)]:
        masked = component_eval.keep_experts(trained, experts)
        leaves = lambda t: jax.tree_util.tree_leaves_with_path(t, is_leaf=lambda x: isinstance(x, nnx.Variable))  # noqa
        for (path, a), (_, b) in zip(leaves(trained), leaves(masked)):
            a, b = np.asarray(a.get_value()), np.asarray(b.get_value())
            if str(getattr(path[-1], "key", path[-1])) != "lora_b":
                np.testing.assert_array_equal(a, b)
                continue
            for e in (UND, GEN):  # lora_b [layers, expert, rank, ...]
                np.testing.assert_array_equal(b[:, e], a[:, e] if e in experts else 0)


def test_paired_differences_by_hand():
    per_key = {"base": [{"r": 0.30}, {"r": 0.40}, {"r": 0.35}], "both": [{"r": 0.33}, {"r": 0.41}, {"r": 0.38}]}
    (mean, se), = component_eval.paired_differences(per_key)["both"].values()
    # differences 0.03, 0.01, 0.03: mean 0.07/3, sample std 0.011547, SE = std / sqrt(3)
    assert mean == pytest.approx(0.07 / 3) and se == pytest.approx(0.0115470 / 3 ** 0.5, rel=1e-5)
    assert component_eval.paired_differences({"base": [{"r": 1.0}], "x": [{"r": 1.5}]}) == {"x": {"r": (0.5, 0.0)}}


def check_srr_variants(config, monkeypatch):
    """component_eval of an SRR run's checkpoint (tests/test_train_srr.py calls this after training, to share its
    compile): each variant refines its own first draws and the base's; the base's base-draws eval is its own."""
    from alphagrpo_jax.rl.tasks import srr

    calls = []  # per SRR eval batch: [model that drew stage 1, model that refined]
    stage1, refine = srr.run_stage1, srr.rollout_srr
    monkeypatch.setattr(srr, "run_stage1", lambda m, *a, **k: (calls.append([m]), stage1(m, *a, **k))[1])
    monkeypatch.setattr(srr, "rollout_srr", lambda m, *a, **k: (calls[-1].append(m), refine(m, *a, **k))[1])
    res = component_eval.component_eval(config, keys=1, variants=("both",))  # every variant runs this same path
    (base,), (both,) = res["per_key"]["base"], res["per_key"]["both"]
    srr_keys = [k for k in base if k.startswith("eval_srr/")]
    assert srr_keys and all(k.replace("eval_srr/", "eval_srr_base_draws/") in both for k in srr_keys)
    for k in srr_keys:
        assert base[k.replace("eval_srr/", "eval_srr_base_draws/")] == base[k]
    assert both["eval_srr_base_draws/stage1_reward"] == base["eval_srr/stage1_reward"]  # the same draws
    # base: one SRR eval (its own draws); the variant: its own draws, then one base model's draws.
    assert len(calls) == 3 and all(len(p) == 2 for p in calls)  # 1 + 2 evals of one batch each
    assert calls[0][0] is calls[0][1]
    drawer = calls[2][0]
    for own, on_base in zip(calls[1::2], calls[2::2]):
        assert own[0] is own[1] is on_base[1] and on_base[0] is drawer
    assert len({id(p[1]) for p in calls} | {id(drawer)}) == 3  # base, the variant, the base drawer
