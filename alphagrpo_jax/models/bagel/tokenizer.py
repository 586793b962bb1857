"""BAGEL's text tokenizer: the release's Qwen2.5 tokenizer files, loaded offline with transformers.

`encode` adds no special tokens (upstream calls `tokenizer.encode(text)` on a Qwen2Tokenizer, which adds
none); text segments are framed by the caller as [bos] + encode(text) + [eos] (spec §2.1). The four ids BAGEL
uses (`TokenIds`: <|im_start|>, <|im_end|>, <|vision_start|>, <|vision_end|>) are checked against the folder.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel.config import TokenIds

SPECIAL_TOKENS = {  # TokenIds field -> token text
    "bos": "<|im_start|>",
    "eos": "<|im_end|>",
    "start_of_image": "<|vision_start|>",
    "end_of_image": "<|vision_end|>",
}


class TokenizerError(UsageError):
    """The release folder's tokenizer files are missing or do not match the model config (a usage error)."""


@dataclasses.dataclass(frozen=True)
class BagelTokenizer:
    hf: Any  # a transformers tokenizer
    token_ids: TokenIds
    folder: str

    @property
    def bos(self) -> int:
        return self.token_ids.bos

    @property
    def eos(self) -> int:
        return self.token_ids.eos

    @property
    def start_of_image(self) -> int:
        return self.token_ids.start_of_image

    @property
    def end_of_image(self) -> int:
        return self.token_ids.end_of_image

    def __len__(self) -> int:
        """Number of token ids the tokenizer can produce (151665 for Qwen2.5; the LLM pads rows to 152064)."""
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"BagelTokenizer.encode: expected str, got {type(text).__name__}")
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens,
                              clean_up_tokenization_spaces=False)


@dataclasses.dataclass(frozen=True)
class MissingTokenizer:
    """Stands in for the tokenizer of a release folder without tokenizer files (image-only work: latents,
    the VAE, token ids given directly). Any text use raises the TokenizerError `load_tokenizer` would have."""
    message: str

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise TokenizerError(self.message)

    def __len__(self) -> int:
        raise TokenizerError(self.message)


def missing_files(folder: str) -> str | None:
    """Why `folder` holds no tokenizer files (a one-line TokenizerError message), or None when it does."""
    if not paths.isdir(folder):
        return f"tokenizer folder {folder!r} does not exist"
    has = lambda *names: all(paths.exists(paths.join(folder, n)) for n in names)  # noqa: E731
    if not has("tokenizer.json") and not has("vocab.json", "merges.txt"):
        missing = [n for n in ("vocab.json", "merges.txt") if not has(n)]
        return (f"{folder}: missing {' and '.join(missing)}; expected the release's tokenizer files "
                f"(tokenizer.json, or vocab.json + merges.txt)")
    return None


def load_tokenizer(folder: str | os.PathLike, token_ids: TokenIds) -> BagelTokenizer:
    """Loads `folder` (tokenizer.json or vocab.json + merges.txt, plus tokenizer_config.json) without network.

    Raises TokenizerError naming the folder if it cannot be loaded or a special token does not map to the id
    configured in `token_ids`.
    """
    folder = os.fspath(folder)
    missing = missing_files(folder)
    if missing is not None:
        raise TokenizerError(missing)
    local = paths.local_copy(folder, skip_suffixes=(".safetensors",))  # gs://: its small files, fetched
    # transformers is used for tokenizers only; its start-up notice about missing PyTorch is noise here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(local, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TokenizerError(f"cannot load a tokenizer from {folder!r}: {e}") from e
    vocab = hf.get_vocab()
    for field, token in SPECIAL_TOKENS.items():
        want = getattr(token_ids, field)
        got = vocab.get(token)
        if got != want:
            raise TokenizerError(f"tokenizer {folder!r}: {token} has id {got}, but TokenIds.{field} is {want}")
    return BagelTokenizer(hf=hf, token_ids=token_ids, folder=folder)
