"""The toy world as a plug-in (alphagrpo_jax/toy/plugin.py): a config naming it makes the toy's names known to
the library's registries; without it they are unknown (the library never imports the toy)."""
import subprocess
import sys

import ml_collections
import numpy as np

from alphagrpo_jax import plugins
from alphagrpo_jax.data import sft_sources, sources
from alphagrpo_jax.models.bagel.image_transform import TRANSFORMS
from alphagrpo_jax.reward.components import COMPONENTS
from alphagrpo_jax.reward.decomposers import DECOMPOSERS
from alphagrpo_jax.reward.records import read_records
from alphagrpo_jax.toy import decompose, prompts, transforms


def test_the_library_alone_knows_no_toy_names():
    code = ("import sys, alphagrpo_jax.train, alphagrpo_jax.sft, alphagrpo_jax.generate, alphagrpo_jax.component_eval\n"
            "from alphagrpo_jax.models.bagel.image_transform import TRANSFORMS\n"
            "from alphagrpo_jax.reward.components import COMPONENTS\n"
            "from alphagrpo_jax.data.sources import PROMPT_SOURCES\n"
            "assert not any(m.startswith('alphagrpo_jax.toy') for m in sys.modules), sorted(sys.modules)\n"
            "print(sorted(TRANSFORMS), sorted(COMPONENTS), sorted(PROMPT_SOURCES))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[0] == "['bagel'] ['dvreward', 'think_format'] ['files']"


def test_a_config_naming_the_plugin_registers_its_names(tmp_path):
    c = ml_collections.ConfigDict(dict(plugins=("alphagrpo_jax.toy.plugin",), workdir=str(tmp_path), seed=0,
                                       data=dict(prompt_source="toy"),
                                       toy=dict(train_per_category=2, eval_per_category=1)))
    assert plugins.load(c) == ("alphagrpo_jax.toy.plugin",)
    assert TRANSFORMS["toy"] == (transforms.VAE_TRANSFORM, transforms.VIT_TRANSFORM)
    assert "toy_dvreward" in COMPONENTS and "toy" in sft_sources.SFT_SOURCES
    assert DECOMPOSERS["toy"]("a red circle") == decompose.decompose(prompts.parse("a red circle"))
    train, held_out = sources.prompt_files(c)
    assert train == str(tmp_path / "data" / "prompts" / "train.jsonl")
    n = len(prompts.CATEGORIES)
    assert (len(read_records(train)), len(read_records(held_out))) == (2 * n, n)
    assert sources.prompt_files(c) == (train, held_out)  # written once, then reused


def test_the_sft_eval_scores_with_the_toy_reward_component():
    """One scoring implementation: the SFT eval's reward is toy/reward.py's `score_image` (DVReward's geometric
    aggregation of the exact verifier's answers)."""
    from alphagrpo_jax.reward.dvreward import aggregate
    from alphagrpo_jax.toy import reward, verifier, world

    spec = prompts.parse("two red circles")
    rec = decompose.decompose(spec)
    image = world.render(prompts.sample_scene(spec, 0))
    p = verifier.score_record(rec, image)
    expected = aggregate(p[: len(rec.semantic)].tolist(), p[len(rec.semantic):].tolist())[0]
    assert np.isclose(reward.score_image(rec, image).overall, expected, rtol=0, atol=0)
