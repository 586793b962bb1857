"""Self-Reflective Refinement (SRR) at inference (`generate --refine`): draw, judge, and while the image does not
satisfy the prompt, reflect (a decoded think text) and redraw from [system] [own image: VAE, then ViT]
[reflection prompt]. `srr_items` (that context) is shared with SRR training (rl/tasks/srr.py).

Gates (what "satisfies" means):
- "self": the model's own yes/no answers to the prompt's decomposed questions in understanding mode
  ([ViT image] [question] -> P(yes) from the log-likelihoods of the answers "yes" and "no"), aggregated like
  DVReward; no external verifier.
- "dvreward": a reward function (DVReward through an endpoint, or the toy verifier) above a threshold.
- "oracle": the evaluator itself decides (every semantic question answered yes by the reward function's
  verifier). This reproduces the reference's benchmark protocol (`--only_wrong`: refine only images the
  benchmark's evaluator marked wrong) and is labelled as such: it uses the evaluation oracle at inference.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from alphagrpo_jax.models.bagel import image_transform
from alphagrpo_jax.reward.dvreward import aggregate
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling import text as text_lib
from alphagrpo_jax.sampling.pipeline import EDIT_GUIDANCE
from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT, reflection_prompt, think_system_prompt

GATES = ("self", "dvreward", "oracle")


def image_items(image: np.ndarray, vae_transform, vit_transform) -> list[ctx_lib.Item]:
    """A generated picture (uint8 HWC) as BAGEL's conditioning image: VAE latents, then ViT tokens."""
    vae_img = vae_transform.resize(Image.fromarray(image))
    return ctx_lib.condition_image(image_transform.to_pixels(vae_img), vit_transform(vae_img))


def srr_items(text_item, prompt: str, image: np.ndarray, vae_transform, vit_transform, system: str,
              reflection: str = REFLECTION_PROMPT):
    """(conditional, text-unconditional, image-unconditional) item lists of one reflect-and-redraw request:
    [system][image][reflection prompt] | [system][image] | [system][reflection prompt]. `reflection`: the
    reflection prompt's template (`{prompt}` = the request)."""
    sys_items = [text_item(system)]
    img = image_items(image, vae_transform, vit_transform)
    reflect = [text_item(reflection_prompt(prompt, reflection))]
    return sys_items + img + reflect, sys_items + img, sys_items + reflect


def self_verify(pipe, image: np.ndarray, questions: list[str], seed: int = 0) -> np.ndarray:
    """P(yes) per question from the model's own understanding: sigmoid(log p("yes") - log p("no"))."""
    tok = pipe.release.tokenizer
    vit = ctx_lib.VitImage(pipe.vit_transform(image_transform.to_rgb(Image.fromarray(image))))
    samples = [[vit, ctx_lib.Text(tuple(tok.encode(q)))] for q in questions]
    ctx = pipe.build(samples, jax.random.key(seed))
    eos = pipe.cfg.tokens.eos
    answers = [tok.encode("yes") + [eos], tok.encode("no") + [eos]]
    t = max(len(a) for a in answers)
    scores = []
    for a in answers:
        ids = jnp.asarray([a + [0] * (t - len(a))] * len(questions), jnp.int32)
        lp = text_lib.continuation_log_probs(pipe.release.model, ctx.cache, ctx.cache.length, ctx.rope, ids)
        scores.append(np.asarray(lp)[:, : len(a)].sum(axis=1))
    return 1.0 / (1.0 + np.exp(-(scores[0] - scores[1])))


@dataclasses.dataclass
class RefineRound:
    image: np.ndarray
    text: str | None        # the think text (round 0, think mode) or the reflection (later rounds)
    score: float            # the gate's score of this image
    satisfied: bool


def judge(pipe, image, prompt, record, gate: str, reward_fn, threshold: float) -> tuple[float, bool]:
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    if gate == "self":
        sem = self_verify(pipe, image, [q.question for q in record.semantic])
        qual = self_verify(pipe, image, [q.question for q in record.quality]) if record.quality else []
        score = aggregate(list(sem), list(qual))[0]
        return score, score >= threshold
    if reward_fn is None:
        raise ValueError(f"gate {gate!r} needs a reward function (verifier)")
    res = reward_fn([image], [prompt], [record])
    if gate == "dvreward":
        score = float(res.rewards[0])
        return score, score >= threshold
    details = next(iter(res.details.values()))[0]
    semantic = [q.p_yes for q in details if q.kind == "semantic"]
    return float(res.rewards[0]), all(p is not None and p > 0.5 for p in semantic)


def refine(pipe, prompt: str, record, rounds: int, *, gate: str = "self", reward_fn=None, threshold: float = 0.9,
           think: bool = True, height: int, width: int, seed: int = 0, num_timesteps: int | None = None,
           shift: float | None = None, t2i_cfg: dict | None = None, edit_cfg: dict | None = None,
           think_sampler: text_lib.TextSamplerConfig | None = None,
           reflection: str = REFLECTION_PROMPT,
           on_round: Callable[[int, RefineRound], None] | None = None) -> list[RefineRound]:
    """The initial draw plus up to `rounds` reflect-and-redraw rounds, stopping once the gate is satisfied.
    `on_round(k, round)`: called as each round (0: the initial draw) is judged, before the next one starts.
    `reflection`: the reflection prompt's template (sampling/prompts.py); the system prompt is the model's.
    `num_timesteps`, `shift` and the guidance keywords not in `t2i_cfg` / `edit_cfg` (None / missing): the
    pipeline's defaults (redraws: with pipeline.EDIT_GUIDANCE)."""
    t2i_cfg = t2i_cfg or {}
    edit_cfg = dict(EDIT_GUIDANCE, **(edit_cfg or {}))
    schedule = {k: v for k, v in dict(num_timesteps=num_timesteps, shift=shift).items() if v is not None}
    common = dict(height=height, width=width, think_sampler=think_sampler, **schedule)
    g = pipe.generate_images([prompt], think=think, seed=seed, **common, **t2i_cfg)[0]
    score, ok = judge(pipe, g.image, prompt, record, gate, reward_fn, threshold)
    report = on_round or (lambda k, rd: None)
    out = [RefineRound(g.image, g.think, score, ok)]
    report(0, out[0])
    text_item = pipe._text
    for r in range(rounds):
        if out[-1].satisfied:
            break
        cond, tu, iu = srr_items(lambda s: text_item(s), prompt, out[-1].image, pipe.vae_transform,
                                 pipe.vit_transform, think_system_prompt(pipe.cfg), reflection)
        g = pipe.generate_from_items([cond], [tu], [iu], think=True, seed=seed + 1 + r, **common, **edit_cfg)[0]
        score, ok = judge(pipe, g.image, prompt, record, gate, reward_fn, threshold)
        out.append(RefineRound(g.image, g.think, score, ok))
        report(r + 1, out[-1])
    return out
