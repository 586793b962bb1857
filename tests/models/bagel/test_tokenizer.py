"""Tokenizer: real Qwen2.5 vocabulary vs tiktoken, special ids, and the goldens' byte-level tiny folder."""
import json
import unicodedata

import numpy as np
import pytest

from alphagrpo_jax.models.bagel import config
from alphagrpo_jax.models.bagel.tokenizer import TokenizerError, load_tokenizer

TEXTS = [
    "A red cube on a blue table.",
    "  leading, double  and trailing spaces   ",
    "digits 1234567890, 3.14159 and 1e-5",
    "line1\nline2\r\n\n\ttab\t end\n",
    "café naïve Straße 日本語のテキスト 한국어 Ελληνικά",
    "emoji 🎉👍🏽 and e\u0301 (a combining accent, NFC-normalised)",
    "don't I'LL we're THEY'VE",
    "!!!???...;; <think> plan </think> (x**2)",
    "def f(x):\n    return {'a': [1, 2]}\n",
    "<|im_start|>hi<|im_end|>",
    "",
]


@pytest.fixture(scope="module")
def qwen(qwen25_tokenizer_dir):
    return load_tokenizer(qwen25_tokenizer_dir, config.TokenIds())


@pytest.mark.parametrize("text", TEXTS)
def test_encode_equals_tiktoken_and_round_trips(qwen, qwen_tiktoken, text):
    ids = qwen.encode(text)
    assert ids == qwen_tiktoken.encode(text)
    assert qwen.decode(ids) == unicodedata.normalize("NFC", text)


def test_qwen25_special_ids(qwen):
    assert (qwen.bos, qwen.eos, qwen.start_of_image, qwen.end_of_image) == (151644, 151645, 151652, 151653)
    assert len(qwen) == 151665
    assert qwen.encode("<|vision_start|><|vision_end|><|endoftext|>") == [151652, 151653, 151643]
    assert qwen.decode([qwen.bos, 9707, qwen.eos]) == "<|im_start|>Hello<|im_end|>"
    assert qwen.decode([qwen.bos, 9707, qwen.eos], skip_special_tokens=True) == "Hello"


def test_mismatched_token_ids_are_a_clear_error(qwen25_tokenizer_dir):
    wrong = config.TokenIds(start_of_image=151654)
    with pytest.raises(TokenizerError, match=r"<\|vision_start\|> has id 151652, but TokenIds.start_of_image is "
                                             r"151654") as err:
        load_tokenizer(qwen25_tokenizer_dir, wrong)
    assert str(qwen25_tokenizer_dir) in str(err.value)


def test_missing_or_broken_folder(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope", config.TokenIds())
    with pytest.raises(TokenizerError, match=rf"^{tmp_path}: missing vocab.json and merges.txt; expected"):
        load_tokenizer(tmp_path, config.TokenIds())
    (tmp_path / "vocab.json").write_text("{not json")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(TokenizerError, match="cannot load a tokenizer from"):
        load_tokenizer(tmp_path, config.TokenIds())


def test_goldens_tiny_folder_reproduces_stored_ids(goldens_dir):
    tok = load_tokenizer(goldens_dir, config.tiny_a().tokens)
    texts = json.loads((goldens_dir / "cases_meta.json").read_text())["texts"]
    for text, npz, key in [("a", "a_text_prefill", "input_ids"), ("u", "u_understanding", "input_ids"),
                           ("d1", "d1_t2i", "prompt_ids"), ("d2", "d2_edit", "prompt_ids")]:
        ids = np.load(goldens_dir / f"{npz}.npz")[key].tolist()
        assert [tok.bos] + tok.encode(texts[text]) + [tok.eos] == ids, text
        assert tok.decode(ids[1:-1]) == texts[text]
