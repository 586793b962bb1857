"""`python -m alphagrpo_jax.generate --refine N`: Self-Reflective Refinement per prompt (generate.py parses the
flags and loads the model; the question sets, the gate's verifier and the rounds are here)."""
import json

from PIL import Image

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.reward.decomposers import DECOMPOSERS
from alphagrpo_jax.reward.records import read_records
from alphagrpo_jax.reward.service import build_reward_fn, reward_config
from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT
from alphagrpo_jax.sampling.srr import refine


def _record_for(args, prompt):
    if args.questions:
        return DECOMPOSERS[args.questions](prompt)
    if not args.records:
        raise UsageError("--refine needs the prompt's decomposed questions: --records FILE or --questions NAME")
    for rec in read_records(args.records):
        if rec.prompt == prompt:
            return rec
    raise UsageError(f"--records {args.records}: no question set for prompt {prompt!r}")


def _reward_fn(args):
    if not (args.gate == "dvreward" or args.oracle_gate):
        return None
    cfg = reward_config()
    if args.verifier_component:
        cfg.weights = {"dvreward": 0.0, "think_format": 0.0, args.verifier_component: 1.0}
    elif args.verifier_endpoint:
        cfg.endpoints, cfg.model = (args.verifier_endpoint,), args.verifier_model
        cfg.weights = {"dvreward": 1.0, "think_format": 0.0}
    else:
        raise UsageError("the dvreward/oracle gate needs --verifier-endpoint URL or --verifier-component NAME")
    cfg.verifier_system_prompt = args.verifier_system_prompt
    return build_reward_fn(cfg)


def run_refine(args, pipe, prompts, think_cfg, _phase) -> int:
    """`generate --refine`: each prompt's draw and reflect-and-redraw rounds, saved and printed as each round is
    judged; `_phase(msg)` prints a phase line. Writes refine.jsonl."""
    paths.makedirs(args.out)
    reward_fn = _reward_fn(args)
    gate = "oracle" if args.oracle_gate else args.gate
    summary = []
    try:
        for i, prompt in enumerate(prompts):
            _phase(f"prompt {i + 1}/{len(prompts)}: {'compiling (first call), ' if i == 0 else ''}drawing ...")

            def on_round(k, rd, i=i, prompt=prompt):
                path = paths.join(args.out, f"{i:04d}_round{k}.png")
                paths.save_image(path, Image.fromarray(rd.image))
                print(f"[{i} round {k}] score={rd.score:.4f} satisfied={rd.satisfied} text={rd.text!r} -> {path}",
                      flush=True)
                summary.append(dict(prompt=prompt, round=k, score=rd.score, satisfied=rd.satisfied, text=rd.text,
                                    image=path, gate=gate + (" (evaluator-gated protocol)" if gate == "oracle" else "")))
                if not rd.satisfied and k < args.refine:
                    _phase(f"prompt {i + 1}/{len(prompts)}: round {k + 1}/{args.refine}: "
                           f"{'compiling (first redraw), ' if i == 0 and k == 0 else ''}reflecting and redrawing ...")

            refine(pipe, prompt, _record_for(args, prompt), args.refine, gate=gate, reward_fn=reward_fn,
                   threshold=args.threshold, think=args.think, height=args.height, width=args.width,
                   seed=args.seed + i, num_timesteps=args.num_steps, shift=args.shift,
                   think_sampler=think_cfg, reflection=args.reflection_prompt or REFLECTION_PROMPT, on_round=on_round)
    finally:
        if reward_fn is not None:
            reward_fn.close()
    paths.write_text(paths.join(args.out, "refine.jsonl"), "".join(json.dumps(row) + "\n" for row in summary))
    return 0
