"""The toy model's tokenizer: a 512-id byte-level BPE in Qwen2's file format, trained on the toy texts.

Ids: 0..4 are <|endoftext|>, <|im_start|>, <|im_end|>, <|vision_start|>, <|vision_end|> (the toy TokenIds:
bos 1, eos 2, start/end of image 3/4), 5..15 unused, 16 + b for every byte b (as the goldens' tokenizer), and
272.. one id per BPE merge. The folder (vocab.json, merges.txt, tokenizer_config.json) loads with
`models/bagel/tokenizer.load_tokenizer` (transformers' Qwen2Tokenizer: Qwen2's pre-tokenizer regex, then the
merges in rank order), so any text still encodes (unknown words fall back to bytes) and decodes exactly.

Why merges: byte-level text made the toy sequences ~3x longer than the images they condition, and SFT on 2
CPU cores is token-bound. `train_merges` is plain BPE over pre-token counts: the most frequent adjacent pair
is merged first (ties broken by the pair's text), deterministically.
"""
from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable, Sequence

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
BYTE_OFFSET = 16
NUM_BYTES = 256


def byte_symbols() -> list[str]:
    """GPT-2's byte -> unicode alphabet (what Qwen2's ByteLevel pre-tokenizer emits), indexed by byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    out, extra = [], 0
    for b in range(NUM_BYTES):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def write_folder(folder: str | os.PathLike, merges: Sequence[tuple[str, str]] = ()) -> None:
    """Writes vocab.json / merges.txt / tokenizer_config.json: specials, 256 bytes at 16 + b, then one id per
    merge (in rank order) from 16 + 256 on."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({sym: BYTE_OFFSET + b for b, sym in enumerate(byte_symbols())})
    for a, b in merges:
        if a + b in vocab:
            raise ValueError(f"toy/tokenizer.py: merge {a!r} + {b!r} makes a token that already exists")
        vocab[a + b] = len(vocab) - len(SPECIAL_TOKENS) + BYTE_OFFSET
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    added = {str(i): dict(content=tok, lstrip=False, normalized=False, rstrip=False, single_word=False,
                          special=True) for i, tok in enumerate(SPECIAL_TOKENS)}
    config = dict(tokenizer_class="Qwen2Tokenizer", added_tokens_decoder=added, bos_token=None,
                  eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, model_max_length=32768,
                  clean_up_tokenization_spaces=False, errors="replace", split_special_tokens=False,
                  add_prefix_space=False)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)


def _load_hf(folder: str):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def pretoken_counts(texts: Iterable[str], folder: str) -> collections.Counter:
    """Counts of Qwen2 pre-tokens (in byte-symbol form, e.g. 'Ġred') using the tokenizer files in `folder`."""
    pre = _load_hf(folder).backend_tokenizer.pre_tokenizer
    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(p for p, _ in pre.pre_tokenize_str(text))
    return counts


def train_merges(counts: collections.Counter, num_merges: int) -> list[tuple[str, str]]:
    """Up to `num_merges` BPE merges (fewer if every pre-token is already one symbol)."""
    words = {tuple(w): n for w, n in counts.items()}
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges:
        pairs: collections.Counter = collections.Counter()
        for w, n in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def build(folder: str | os.PathLike, texts: Iterable[str], vocab_size: int = 512) -> str:
    """Trains merges on `texts` and writes the tokenizer folder; returns its path. Deterministic in `texts`."""
    base = BYTE_OFFSET + NUM_BYTES
    if vocab_size < base:
        raise ValueError(f"toy/tokenizer.py: vocab_size must be >= {base} (specials + bytes), got {vocab_size}")
    folder = os.fspath(folder)
    write_folder(folder)  # bytes only: its pre-tokenizer splits the corpus
    merges = train_merges(pretoken_counts(texts, folder), vocab_size - base)
    write_folder(folder, merges)
    return folder
