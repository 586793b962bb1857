"""Inference-time SRR: the loop stops as soon as the gate is satisfied, every round's image, text and score are
returned, the oracle gate needs every semantic question answered yes, and the self gate uses the model's own
yes/no likelihoods."""
import numpy as np
import pytest

from alphagrpo_jax.models.bagel import release
from alphagrpo_jax.parallel import mesh as mesh_lib
from alphagrpo_jax.reward.dvreward import QuestionScore
from alphagrpo_jax.reward.records import Question, QuestionSet
from alphagrpo_jax.reward.service import RewardResult
from alphagrpo_jax.sampling import srr
from alphagrpo_jax.sampling.pipeline import Pipeline
from alphagrpo_jax.sampling.text import TextSamplerConfig
from alphagrpo_jax.toy import transforms as toy_transforms
from tests.models.bagel.parity_utils import GOLDENS

RECORD = QuestionSet("a red circle", [Question("semantic", "Is there a red circle?", "Existence")],
                     [Question("quality", "Is the background clean?", "Coherence")])


class ScriptedVerifier:
    """Returns the next scripted (reward, semantic P(yes)) per call."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, images, prompts, records):
        r, p = self.script[self.calls]
        self.calls += 1
        q = QuestionScore("semantic", "Is there a red circle?", "Existence", p, "logprobs")
        return RewardResult(np.array([r], np.float32), {}, [{}], [], {}, {"dvreward": [(q,)]})


@pytest.fixture(scope="module")
def pipe():
    rel = release.load_release(str(GOLDENS), mesh_lib.make_mesh({"fsdp": -1}), param_dtype="float32",
                               dtype="float32")
    return Pipeline(rel, cache_size=512, vae_transform=toy_transforms.VAE_TRANSFORM,
                    vit_transform=toy_transforms.VIT_TRANSFORM)


KW = dict(think=False, height=32, width=32, num_timesteps=3, think_sampler=TextSamplerConfig(max_new_tokens=4))


def test_dvreward_gate_stops_when_satisfied(pipe):
    v = ScriptedVerifier([(0.2, 0.1), (0.5, 0.4), (0.95, 0.9), (0.99, 0.99)])
    seen = []  # (round, verifier calls so far): each round is reported as soon as it is judged
    rounds = srr.refine(pipe, "a red circle", RECORD, 5, gate="dvreward", reward_fn=v, threshold=0.9,
                        on_round=lambda k, rd: seen.append((k, v.calls, rd)), **KW)
    assert [(k, calls) for k, calls, _ in seen] == [(0, 1), (1, 2), (2, 3)]
    assert [rd for _, _, rd in seen] == rounds
    assert [r.score for r in rounds] == pytest.approx([0.2, 0.5, 0.95])
    assert [r.satisfied for r in rounds] == [False, False, True] and v.calls == 3
    assert rounds[0].text is None and all(isinstance(r.text, str) for r in rounds[1:])  # reflections
    assert all(r.image.shape == (32, 32, 3) for r in rounds)


def test_oracle_gate_needs_all_semantic_yes(pipe):
    v = ScriptedVerifier([(0.99, 0.3), (0.2, 0.8)])  # a high reward is not enough; the evaluator must say yes
    rounds = srr.refine(pipe, "a red circle", RECORD, 3, gate="oracle", reward_fn=v, **KW)
    assert [r.satisfied for r in rounds] == [False, True]


def test_self_gate_uses_the_models_answers(pipe):
    img = np.zeros((32, 32, 3), np.uint8)
    p = srr.self_verify(pipe, img, ["Is there a red circle?", "Is the background clean?"])
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))
    rounds = srr.refine(pipe, "a red circle", RECORD, 1, gate="self", threshold=0.0, **KW)
    assert len(rounds) == 1 and rounds[0].satisfied  # threshold 0: the first image already passes
