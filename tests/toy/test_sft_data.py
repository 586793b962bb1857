"""toy/sft_data.py and toy/tokenizer.py: plans, example layouts as BAGEL defines them, CFG dropout, held-out
prompts, determinism and checkpointable iteration."""
import functools

import numpy as np
import pytest

from alphagrpo_jax.models.bagel import config as config_lib, packing
from alphagrpo_jax.models.bagel.attention import CAUSAL, FULL, NOISE
from alphagrpo_jax.models.bagel.packed_forward import TEXT, VAE, VIT
from alphagrpo_jax.models.bagel.tokenizer import load_tokenizer
from alphagrpo_jax.sampling.prompts import GEN_THINK_SYSTEM_PROMPT
from alphagrpo_jax.toy import decompose, prompts, sft_data, tokenizer, verifier, world

CFG = config_lib.toy()
N_LAT = (32 // CFG.latent_downsample) ** 2  # latent tokens of one toy image


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    folder = tokenizer.build(tmp_path_factory.mktemp("tok"), sft_data.corpus(0, 100), CFG.llm.vocab_size)
    return load_tokenizer(folder, CFG.tokens)


@pytest.fixture(scope="module")
def encode(tok):
    return functools.lru_cache(maxsize=None)(lambda s: tuple(tok.encode(s)))


def test_tokenizer_layout_round_trip_and_compression(tok):
    vocab = tok.hf.get_vocab()
    assert [vocab[t] for t in tokenizer.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    # Merges were learned (ids past the bytes) and none past the vocabulary (the corpus may not fill it).
    assert vocab["A"] == 16 + ord("A")
    assert tokenizer.BYTE_OFFSET + tokenizer.NUM_BYTES < max(vocab.values()) < CFG.llm.vocab_size
    text = "<think>two shapes: large red circle at top left</think> é?"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < CFG.llm.vocab_size
    prompt = "a large red circle and a small blue square"
    assert len(tok.encode(prompt)) <= len(prompt) // 3  # whole words are single tokens
    assert tok.encode(GEN_THINK_SYSTEM_PROMPT) and len(tok.encode(GEN_THINK_SYSTEM_PROMPT)) < 60


def test_plans_render_correct_and_wrong_scenes():
    rng = np.random.default_rng(0)
    for spec in sft_data.train_specs()[::37]:
        plan, scene = sft_data.correct_scene(spec, rng)
        world.validate_scene(scene)
        assert not sft_data.failed_queries(spec, scene), (spec, scene)
        for o, p in zip(scene.objects, plan):
            third = world.CANVAS / 3
            assert all(k * third + 2 <= c <= (k + 1) * third - 2 for k, c in zip(p.cell[::-1], o.centre))
        wplan, wscene = sft_data.wrong_scene(spec, rng)
        assert sft_data.failed_queries(spec, wscene) and len(wscene.objects) == len(wplan)
    text = sft_data.plan_text(plan)
    assert text.startswith("<think>") and text.endswith("</think>")


def _layout(doc):
    packed = packing.pack([[doc]], CFG, length=512)
    return packed.batch, packed


def test_think_example_layout_is_bagels(encode):
    rng = np.random.default_rng(1)
    dc = sft_data.SFTDataConfig(p_wrong_plan=0.0, p_drop_text=0.0)
    parts = sft_data.make_example("think", rng, dc)
    assert [p[0] for p in parts] == ["text", "text", "text", "vae"] and parts[0][1] == GEN_THINK_SYSTEM_PROMPT
    assert [p[2] for p in parts] == [False, False, True, True]
    b, _ = _layout(sft_data.to_items(parts, encode))
    n_sys, n_prompt, n_think = (len(encode(p[1])) + 2 for p in parts[:3])
    t = n_sys + n_prompt + n_think
    np.testing.assert_array_equal(b.positions[0, :t], np.arange(t))  # consecutive text RoPE ids
    assert (b.modes[0, :t] == CAUSAL).all() and (b.kind[0, :t] == TEXT).all()
    think_ids = list(encode(parts[2][1]))
    lab = b.ce_labels[0]
    assert (lab[: n_sys + n_prompt] == -1).all()  # no loss on system prompt and prompt
    np.testing.assert_array_equal(lab[n_sys + n_prompt: t - 1], think_ids + [CFG.tokens.eos])
    assert lab[t - 1] == -1  # im_end predicts nothing (no <|vision_start|> loss)
    img = slice(t, t + N_LAT + 2)  # [vision_start, latents, vision_end] at ONE position, not advancing
    assert (b.positions[0, img] == t).all() and (b.modes[0, img] == NOISE).all()
    assert b.kind[0, t] == b.kind[0, t + N_LAT + 1] == TEXT and (b.kind[0, t + 1: t + N_LAT + 1] == VAE).all()
    np.testing.assert_array_equal(b.mse_mask[0], b.kind[0] == VAE)
    assert (b.segment_ids[0, t + N_LAT + 2:] == 0).all()


def test_refine_example_conditions_on_vae_then_vit(encode):
    rng = np.random.default_rng(2)
    dc = sft_data.SFTDataConfig(p_drop_text=0.0, p_drop_image=0.0)
    parts = sft_data.make_example("refine", rng, dc)
    assert [p[0] for p in parts] == ["text", "vae", "vit", "text", "text", "vae"]
    assert parts[1][2] is False and parts[5][2] is True and parts[4][2] is True
    assert parts[3][1].startswith("You were asked to draw: ") and parts[4][1].startswith("<think>wrong: ")
    b, packed = _layout(sft_data.to_items(parts, encode))
    s = len(encode(parts[0][1])) + 2
    e = s + N_LAT + 2
    vae, vit = slice(s, e), slice(e, e + 6)  # latents / 2x2 ViT patches, plus their markers
    assert (b.positions[0, vae] == s).all() and (b.positions[0, vit] == s + 1).all() and b.positions[0, e + 6] == s + 2
    assert (b.modes[0, vae] == FULL).all() and (b.modes[0, vit] == FULL).all()
    assert (b.kind[0, s + 1: e - 1] == VAE).all() and (b.kind[0, e + 1: e + 5] == VIT).all()
    assert not b.mse_mask[0, vae].any() and b.mse_mask[0].sum() == N_LAT  # only the target image is noisy
    assert len(packed.vae_images) == 2 and not packed.vae_images[0].noisy


def test_understanding_answers_are_right(encode):
    rng = np.random.default_rng(3)
    answers = []
    for _ in range(40):
        vit, question, answer = sft_data.make_example("understand", rng, sft_data.SFTDataConfig())
        assert vit[0] == "vit" and question[2] is False and answer[2] is True
        p_yes = verifier.answer(question[1], vit[1])  # exact on clean renders
        assert (p_yes > 0.5) == (answer[1] == "yes")
        answers.append(answer[1])
    assert 10 < answers.count("yes") < 30


def test_cfg_dropout_keeps_the_system_prompt():
    rng = np.random.default_rng(4)
    drop_text = sft_data.SFTDataConfig(p_drop_text=1.0, p_drop_image=0.0)
    drop_img = sft_data.SFTDataConfig(p_drop_text=0.0, p_drop_image=1.0)
    assert [p[0] for p in sft_data.make_example("t2i", rng, drop_text)] == ["vae"]
    think = sft_data.make_example("think", rng, drop_text)
    assert [p[0] for p in think] == ["text", "vae"] and think[0][1] == GEN_THINK_SYSTEM_PROMPT
    ref = sft_data.make_example("refine", rng, drop_text)
    assert [p[0] for p in ref] == ["text", "vae", "vit", "vae"] and ref[0][1] == GEN_THINK_SYSTEM_PROMPT
    ref = sft_data.make_example("refine", rng, drop_img)
    assert [p[0] for p in ref] == ["text", "text", "vae"] and ref[1][1].startswith("You were asked")


def test_the_configured_system_prompt_opens_think_and_refine_documents():
    dc = sft_data.SFTDataConfig(system_prompt="Think, then draw.")
    rng = np.random.default_rng(5)
    for kind in ("think", "refine"):
        assert sft_data.make_example(kind, rng, dc)[0] == ("text", "Think, then draw.", False)
    texts = sft_data.corpus(0, 8, dc)
    assert "Think, then draw." in texts and GEN_THINK_SYSTEM_PROMPT not in texts


def test_held_out_prompts_are_never_used():
    assert all(prompts.split_of(s) == "train" for s in sft_data.train_specs())
    assert len(sft_data.train_specs()) == sum(len(prompts.split_prompts("train", c)) for c in prompts.CATEGORIES)
    rng = np.random.default_rng(5)
    seen = set()
    for i in range(300):
        for p in sft_data.make_example(sft_data.KINDS[i % 4], rng, sft_data.SFTDataConfig(p_drop_text=0.0)):
            if p[0] != "text":
                continue
            text = p[1].removeprefix("You were asked to draw: ").split(". Your image")[0]
            try:
                seen.add(prompts.parse(text))
            except prompts.PromptError:
                continue
    assert len(seen) > 100 and all(prompts.split_of(s) == "train" for s in seen)


def test_rows_are_deterministic_static_and_resumable(encode):
    dc = sft_data.SFTDataConfig(seq_len=512, rows=2)
    src = sft_data.RowSource(CFG, dc, encode, seed=7)
    a, b = src[3], sft_data.RowSource(CFG, dc, encode, seed=7)[3]
    assert [k for k, _ in a] == [k for k, _ in b]
    assert np.mean([len(src[r]) for r in range(10)]) > 2  # rows pack several documents
    for (_, da), (_, db) in zip(a, b):
        for x, y in zip(da, db):
            assert type(x) is type(y)
            np.testing.assert_array_equal(getattr(x, "ids", getattr(x, "pixels", None)),
                                          getattr(y, "ids", getattr(y, "pixels", None)))
    batch = sft_data.pack_rows([src[0], src[1]], CFG, dc)
    fields = batch["batch"]
    assert fields["kind"].shape == (2, 512) and fields["vit_patches"].shape == (2 * dc.max_vit_per_row, 4, 588)
    assert ((batch["image_id"] >= 0) == fields["mse_mask"]).all()
    assert batch["kind_counts"].sum() == len(src[0]) + len(src[1])
    assert np.abs(fields["latent_x0"][fields["kind"] == VAE]).max() > 1.0  # filled by the pixel autoencoder

    ds = sft_data.sft_dataset(CFG, dc, encode, seed=7, shard_index=0, shard_count=1)
    it = iter(ds)
    next(it)
    state = it.get_state()
    want = next(it)
    it2 = iter(ds)
    it2.set_state(state)
    got = next(it2)
    np.testing.assert_array_equal(got["batch"]["text_ids"], want["batch"]["text_ids"])
    np.testing.assert_array_equal(got["batch"]["latent_x0"], want["batch"]["latent_x0"])


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="weights"):
        sft_data.SFTDataConfig(weights=(1.0, 0.0))
    with pytest.raises(ValueError, match="p_drop_text"):
        sft_data.SFTDataConfig(p_drop_text=1.5)
    with pytest.raises(ValueError, match="kind"):
        sft_data.make_example("caption", np.random.default_rng(0), sft_data.SFTDataConfig())
    assert decompose.NUMBER_WORDS[:3] == prompts.NUMBERS
