"""Prompts that steer the model are settable (text or file:PATH) from the training config, the generate CLI and
the reward config; an explicit setting wins over the release's recorded think prompt; bad settings are one-line
errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from alphagrpo_jax import plugins
from alphagrpo_jax.models.bagel import config as config_lib, packing
from alphagrpo_jax.rl.config import rollout_config, think_system_setting
from alphagrpo_jax.rl.tasks.srr import SRR
from alphagrpo_jax.sampling import prompts
from alphagrpo_jax.sampling.srr import srr_items
from alphagrpo_jax.toy import transforms as toy_transforms
from configs import toy_srr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_prompt_text_is_the_text_or_a_files_text(tmp_path):
    assert prompts.prompt_text("", "k") is None and prompts.prompt_text(None, "k") is None
    assert prompts.prompt_text("Plan, then draw.", "k") == "Plan, then draw."
    f = tmp_path / "p.txt"
    f.write_text("line one\nline two\n")
    assert prompts.prompt_text(f"file:{f}", "k") == "line one\nline two"  # one trailing newline dropped
    with pytest.raises(prompts.PromptError, match=r"^prompts.reflection: prompt file '.*missing.txt' not found"):
        prompts.prompt_text(f"file:{tmp_path / 'missing.txt'}", "prompts.reflection")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(prompts.PromptError, match="is empty"):
        prompts.prompt_text(f"file:{tmp_path / 'empty.txt'}", "k")


def test_reflection_template_needs_the_request():
    assert prompts.reflection_prompt("a red circle", "Fix {prompt} now.") == "Fix a red circle now."
    assert "a red circle" in prompts.reflection_prompt("a red circle")
    assert prompts.reflection_prompt("a {b}", "Do {prompt} {x}") == "Do a {b} {x}"  # no str.format surprises
    with pytest.raises(prompts.PromptError, match=r"must contain \{prompt\}"):
        prompts.reflection_prompt("x", "Fix the image.")


def test_explicit_think_prompt_wins_over_the_release(tmp_path):
    c = toy_srr.get_config()
    rel = config_lib.from_release_dir(os.path.join(REPO, "assets", "toy_base"))
    assert rel.think_system_prompt  # the toy base records the prompt it was trained with
    assert prompts.think_system_prompt(rel) == rel.think_system_prompt
    assert prompts.think_system_prompt(rel.replace(think_system_prompt=None)) == prompts.GEN_THINK_SYSTEM_PROMPT
    assert think_system_setting(c) == {}  # unset: the release's prompt stays
    (tmp_path / "sys.txt").write_text("Sketch a plan in <think></think>, then draw.\n")
    c.prompts.think_system = f"file:{tmp_path / 'sys.txt'}"
    over = think_system_setting(c)
    assert prompts.think_system_prompt(rel.replace(**over)) == "Sketch a plan in <think></think>, then draw."


def test_configured_reflection_prompt_reaches_the_srr_context(tmp_path):
    c = toy_srr.get_config()
    plugins.load(c)  # the toy config's transforms come from its plug-in, as in every program
    (tmp_path / "r.txt").write_text("Request: {prompt}. What is wrong? Say how to fix it.")
    c.prompts.reflection = f"file:{tmp_path / 'r.txt'}"
    srr = SRR.from_config(c, rollout_config(c, "SYS")).srr
    assert srr.reflection_prompt == "Request: {prompt}. What is wrong? Say how to fix it."
    texts = []
    cond, _, iu = srr_items(lambda s: texts.append(s) or packing.Text(tuple(s.encode())), "a red circle",
                            np.zeros((32, 32, 3), np.uint8), toy_transforms.VAE_TRANSFORM,
                            toy_transforms.VIT_TRANSFORM, "SYS", srr.reflection_prompt)
    assert "Request: a red circle. What is wrong? Say how to fix it." in texts
    c.prompts.reflection = "no placeholder"
    with pytest.raises(prompts.PromptError, match=r"prompts.reflection: .*\{prompt\}"):
        SRR.from_config(c, rollout_config(c, "SYS"))


def test_resolve_config_prompts_records_file_texts(tmp_path):
    c = toy_srr.get_config()
    (tmp_path / "v.txt").write_text("Answer yes or no.\n")
    c.reward.verifier_system_prompt = f"file:{tmp_path / 'v.txt'}"
    c.prompts.reflection = "Again: {prompt}"
    prompts.resolve_config_prompts(c)
    assert c.reward.verifier_system_prompt == "Answer yes or no." and c.prompts.reflection == "Again: {prompt}"
    assert c.prompts.think_system == ""


def test_verifier_system_prompt_reaches_the_scorer(tmp_path):
    from alphagrpo_jax.reward import verifier
    from alphagrpo_jax.reward.components import verifier_prompt_setting
    from alphagrpo_jax.reward.dvreward import VerifierSettings
    from alphagrpo_jax.reward.service import reward_config

    c = reward_config()
    assert VerifierSettings(**verifier_prompt_setting(c)).system_prompt == verifier.VERIFIER_SYSTEM_PROMPT
    (tmp_path / "v.txt").write_text("Say yes or no.")
    c.verifier_system_prompt = f"file:{tmp_path / 'v.txt'}"
    settings = VerifierSettings(**verifier_prompt_setting(c))
    body = verifier.verifier_payload("data:,", "Is it red?", system_prompt=settings.system_prompt)
    assert body["messages"][0] == {"role": "system", "content": "Say yes or no."}


def test_generate_rejects_a_missing_prompt_file_before_loading(tmp_path):
    r = subprocess.run([sys.executable, "-m", "alphagrpo_jax.generate", "--checkpoint", str(tmp_path / "none"),
                        "--prompt", "a red circle", "--out", str(tmp_path / "x.png"),
                        "--think-system-prompt", f"file:{tmp_path / 'nope.txt'}"],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: --think-system-prompt: prompt file '{tmp_path / 'nope.txt'}' not found (expected text or "
        "file:PATH)"]


def test_no_default_claims_to_be_someone_elses_wording():
    src = open(prompts.__file__).read()
    assert "BAGEL's" not in src and "reference's" not in src
