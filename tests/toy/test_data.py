"""Toy dataset: the CLI builds array_record files (no TensorFlow) and prompt files; grain reads them back."""
import json

import numpy as np
import pytest

from alphagrpo_jax.data.prompts import PromptRecords
from alphagrpo_jax.toy import data, prompts, verifier, world

N_TRAIN, N_EVAL, SEED = 40, 14, 5


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    data.main(["--out", str(out), "--num-train", str(N_TRAIN), "--num-eval", str(N_EVAL), "--seed", str(SEED),
               "--train-prompts-per-category", "6", "--eval-prompts-per-category", "3"])
    return out, data.dataset_dir(out, N_TRAIN, N_EVAL, SEED)


def test_examples_are_the_generated_ones(built):
    _, path = built
    for split, n in (("train", N_TRAIN), ("eval", N_EVAL)):
        src = data.data_source(path, split)
        assert len(src) == n
        pools = {c: prompts.split_prompts(split, c) for c in prompts.CATEGORIES}
        rows = sorted((data.decode_example(src[i]) for i in range(n)), key=lambda e: int(e["index"]))
        assert [int(e["index"]) for e in rows] == list(range(n))
        for e in rows:
            want = data.make_example(split, int(e["index"]), SEED, pools)
            np.testing.assert_array_equal(e["image"], want["image"])
            assert {k: e[k] for k in ("prompt", "category", "spec", "scene")} == \
                {k: want[k] for k in ("prompt", "category", "spec", "scene")}
            spec = prompts.PromptSpec.from_json(e["spec"])
            assert prompts.split_of(spec) == split and prompts.format_prompt(spec) == e["prompt"]
            scene = world.Scene.from_json(json.loads(e["scene"]))
            np.testing.assert_array_equal(world.render(scene), e["image"])
        assert {e["category"] for e in rows} == set(prompts.CATEGORIES)


def test_prompt_files_hold_verifiable_records(built):
    out, _ = built
    for split, per in (("train", 6), ("eval", 3)):
        recs = PromptRecords(out / "prompts" / f"{split}.jsonl", strict_tags=True)
        assert len(recs) == per * len(prompts.CATEGORIES)
        assert [r.original_index for r in recs] == list(range(len(recs)))
        for rec in recs:
            spec = prompts.PromptSpec.from_json(rec.extra["spec"])
            assert prompts.split_of(spec) == split
            img = world.render(prompts.sample_scene(spec, np.random.default_rng(rec.original_index)))
            assert (verifier.score_record(rec, img) > 0.5).all()


def test_grain_reader_batches_shards_and_restores(built):
    _, path = built
    ds = data.toy_dataset(path, "train", batch_size=4, seed=1, shard_index=0, shard_count=1)
    it = iter(ds)
    first = next(it)
    assert first["image"].shape == (4, world.CANVAS, world.CANVAS, 3) and first["image"].dtype == np.uint8
    assert first["prompt"].shape == (4,) and isinstance(first["prompt"][0], np.str_)
    next(it)
    state = it.get_state()
    want = [next(it)["index"].tolist() for _ in range(12)]  # crosses into the second epoch
    again = iter(ds)
    again.set_state(state)
    assert [next(again)["index"].tolist() for _ in range(12)] == want
    halves = [{i for b in data.toy_dataset(path, "eval", batch_size=1, num_epochs=1, shard_index=k, shard_count=2)
               for i in b["index"].tolist()} for k in range(2)]
    assert halves[0].isdisjoint(halves[1]) and halves[0] | halves[1] == set(range(N_EVAL))


def test_errors_name_what_was_expected(built, tmp_path):
    _, path = built
    with pytest.raises(ValueError, match="split"):
        data.data_source(path, "validation")
    with pytest.raises(FileNotFoundError, match="dataset_info.json"):
        data.data_source(tmp_path, "train")
    with pytest.raises(ValueError, match="num_train"):
        data.make_config(-1, 1, 0)
