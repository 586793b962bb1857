"""Question sets: one typed record per prompt, stored as JSONL.

The on-disk shape is the reference decomposition format (AlphaGRPO `scripts/decompose.py`):

    {"prompt": str, "original_index": int,
     "semantic_questions": [{"question_type": "semantic", "question": str, "is_valid": bool, "tag": str}, ...],
     "quality_questions":  [{"question_type": "quality",  "question": str, "is_valid": bool, "tag": str}, ...]}

Fields we do not know are kept (record- and question-level `extra`) and written back unchanged, so released
prompt files round-trip. Tags are normalised to their canonical spelling when they match one of the known
categories case-insensitively; unknown tags are an error only with `strict_tags=True` (our own decomposer
writes strictly, released files are read as they are).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from alphagrpo_jax import paths

SEMANTIC_TAGS = ("Style", "Environment", "Viewpoint", "Existence", "Count", "Attribute", "Action", "Spatial",
                 "Text", "Negative")
QUALITY_TAGS = ("Geometry", "Anatomy", "Texture", "Coherence", "Lighting", "Physics", "Legibility", "Aesthetics")
QUESTION_KINDS = ("semantic", "quality")
_TAGS_BY_KIND = {"semantic": SEMANTIC_TAGS, "quality": QUALITY_TAGS}
_LIST_FIELD = {"semantic": "semantic_questions", "quality": "quality_questions"}
_QUESTION_KEYS = ("question_type", "question", "is_valid", "tag")
_RECORD_KEYS = ("prompt", "original_index", "semantic_questions", "quality_questions")


class RecordError(ValueError):
    """A record (or one line of a records file) does not have the expected shape."""


def canonical_tag(tag: str, kind: str) -> str | None:
    """The canonical spelling of `tag` among `kind`'s categories (case/space-insensitive), else None."""
    key = tag.strip().lower()
    for name in _TAGS_BY_KIND[kind]:
        if name.lower() == key:
            return name
    return None


@dataclasses.dataclass(frozen=True)
class Question:
    """One yes/no question; "yes" always means the image is right/good."""

    kind: str  # "semantic" | "quality" (the file's `question_type`)
    question: str
    tag: str | None = None  # one of SEMANTIC_TAGS / QUALITY_TAGS; unknown spellings kept unless strict
    is_valid: bool = True
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"question_type": self.kind, "question": self.question, "is_valid": self.is_valid,
                               "tag": self.tag}
        out.update(self.extra)
        return out


@dataclasses.dataclass(frozen=True)
class QuestionSet:
    """All questions for one prompt. `original_index` is the prompt's position in its source prompt list."""

    prompt: str
    semantic: tuple[Question, ...]
    quality: tuple[Question, ...]
    original_index: int | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def questions(self) -> tuple[Question, ...]:
        return self.semantic + self.quality

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt}
        if self.original_index is not None:
            out["original_index"] = self.original_index
        out["semantic_questions"] = [q.to_json() for q in self.semantic]
        out["quality_questions"] = [q.to_json() for q in self.quality]
        out.update(self.extra)
        return out

    def to_line(self) -> str:
        """One JSONL line, newline included. Non-ASCII text stays readable (UTF-8 file)."""
        return json.dumps(self.to_json(), ensure_ascii=False) + "\n"


def _question_from_json(obj: Any, kind: str, where: str, strict_tags: bool) -> Question:
    if isinstance(obj, str):  # the reference scorer also accepts bare question strings
        obj = {"question": obj}
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected an object with a 'question' field, got {type(obj).__name__}")
    text = obj.get("question")
    if not isinstance(text, str) or not text.strip():
        raise RecordError(f"{where}.question: expected a non-empty string, got {text!r}")
    qtype = obj.get("question_type", kind)
    if qtype != kind:
        raise RecordError(f"{where}.question_type: expected {kind!r} in {_LIST_FIELD[kind]}, got {qtype!r}")
    is_valid = obj.get("is_valid", True)
    if not isinstance(is_valid, bool):
        raise RecordError(f"{where}.is_valid: expected true/false, got {is_valid!r}")
    tag = obj.get("tag")
    if tag is not None:
        if not isinstance(tag, str):
            raise RecordError(f"{where}.tag: expected a string, got {tag!r}")
        canon = canonical_tag(tag, kind)
        if canon is None and strict_tags:
            raise RecordError(f"{where}.tag: {tag!r} is not a {kind} tag; expected one of {_TAGS_BY_KIND[kind]}")
        tag = canon or tag
    elif strict_tags:
        raise RecordError(f"{where}.tag: missing; expected one of {_TAGS_BY_KIND[kind]}")
    extra = {k: v for k, v in obj.items() if k not in _QUESTION_KEYS}
    return Question(kind=kind, question=text, tag=tag, is_valid=is_valid, extra=extra)


def record_from_json(obj: Any, where: str = "record", strict_tags: bool = False) -> QuestionSet:
    """Validates and converts one decoded JSON object. `where` prefixes error messages (e.g. "file.jsonl:12")."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordError(f"{where}: field 'prompt': expected a non-empty string, got {prompt!r}")
    index = obj.get("original_index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise RecordError(f"{where}: field 'original_index': expected an integer >= 0, got {index!r}")
    groups = {}
    for kind, field in _LIST_FIELD.items():
        items = obj.get(field)
        if not isinstance(items, list):
            raise RecordError(f"{where}: field '{field}': expected a list of questions, got {items!r}")
        groups[kind] = tuple(_question_from_json(q, kind, f"{where}: field '{field}[{i}]'", strict_tags)
                             for i, q in enumerate(items))
    extra = {k: v for k, v in obj.items() if k not in _RECORD_KEYS}
    return QuestionSet(prompt=prompt, semantic=groups["semantic"], quality=groups["quality"],
                       original_index=index, extra=extra)


def parse_line(line: str, where: str, strict_tags: bool = False) -> QuestionSet:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise RecordError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    return record_from_json(obj, where, strict_tags)


def iter_numbered_records(path: str | os.PathLike, strict_tags: bool = False) -> Iterator[tuple[int, QuestionSet]]:
    """(line number, record) for each non-blank line of a JSONL file. Errors name `path:line`."""
    with paths.open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, parse_line(line, f"{os.fspath(path)}:{lineno}", strict_tags)


def read_records(path: str | os.PathLike, strict_tags: bool = False) -> list[QuestionSet]:
    """All records of a JSONL file; a repeated `original_index` is an error (it would double-weight a prompt)."""
    records, seen = [], {}
    for lineno, rec in iter_numbered_records(path, strict_tags):
        if rec.original_index is not None:
            if rec.original_index in seen:
                raise RecordError(f"{os.fspath(path)}:{lineno}: field 'original_index': {rec.original_index} "
                                  f"already used on line {seen[rec.original_index]}")
            seen[rec.original_index] = lineno
        records.append(rec)
    return records


def write_records(path: str | os.PathLike, records: Iterable[QuestionSet]) -> None:
    """Writes a whole JSONL file atomically (paths.write_text: local or gs://)."""
    paths.write_text(path, "".join(rec.to_line() for rec in records))
