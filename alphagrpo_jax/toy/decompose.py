"""Exact DVReward decomposition of toy prompts, and the question grammar the verifier parses back.

Every question comes from one fixed template, so its text alone determines a `Query` (`parse_question`); the
verifier gets nothing else over HTTP. "Yes" always means the image is right. Semantic templates and tags:

    Existence  "Is there a circle?"
    Attribute  "Is there a red circle?"                      color bound to shape
    Count      "Is there exactly one red circle?" | "Are there exactly two red circles?" (color optional)
    Count      "Is there exactly one shape in the image?" | "Are there exactly three shapes in the image?"
    Attribute  "Is the red circle large?" (small|large)
    Spatial    "Is the red circle on the left side of the image?" | "... on the right side of the image?"
               | "... at the top of the image?" | "... at the bottom of the image?" | "... in the center of
               the image?"
    Spatial    "Is the red circle to the left of the blue square?" (to the right of | above | below)

"The red circle" is existential: the answer is yes when some red circle satisfies the predicate (and no when
there is none). Quality questions are the same five for every prompt (`QUALITY`).
"""
from __future__ import annotations

import dataclasses
import re

from alphagrpo_jax.reward.records import Question, QuestionSet
from alphagrpo_jax.toy import world
from alphagrpo_jax.toy.prompts import PromptSpec, format_prompt, parse, validate

NUMBER_WORDS = ("one", "two", "three", "four", "five")
LOCATION_PHRASES = {"left": "on the left side of the image", "right": "on the right side of the image",
                    "top": "at the top of the image", "bottom": "at the bottom of the image",
                    "center": "in the center of the image"}
RELATION_PHRASES = {"left_of": "to the left of", "right_of": "to the right of", "above": "above", "below": "below"}
QUALITY = {  # name -> (question, tag)
    "edges": ("Are the shapes' edges sharp?", "Geometry"),
    "forms": ("Is every shape a clean circle, square or triangle?", "Geometry"),
    "background": ("Is the background clean?", "Texture"),
    "fill": ("Is each shape filled with one uniform color?", "Texture"),
    "stray": ("Is the image free of stray blobs?", "Coherence"),
}
QUERY_KINDS = ("exists", "count", "total", "size", "location", "relation", "quality")


class UnknownQuestion(ValueError):
    """A question text that none of the toy templates produces."""


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed question. `value`: size / location / relation / quality name; `other`: relation's object b."""

    kind: str
    shape: str | None = None
    color: str | None = None  # None in shape-only existence and count questions
    number: int | None = None
    value: str | None = None
    other: tuple[str, str] | None = None  # (color, shape)


def question_text(q: Query) -> str:
    """The template text of a query (inverse of `parse_question`)."""
    thing = f"{q.color} {q.shape}" if q.color else f"{q.shape}"
    if q.kind == "exists":
        return f"Is there a {thing}?"
    if q.kind in ("count", "total"):
        noun = thing if q.kind == "count" else "shape"
        tail = "" if q.kind == "count" else " in the image"
        if q.number == 1:
            return f"Is there exactly one {noun}{tail}?"
        return f"Are there exactly {NUMBER_WORDS[q.number - 1]} {noun}s{tail}?"
    if q.kind == "size":
        return f"Is the {thing} {q.value}?"
    if q.kind == "location":
        return f"Is the {thing} {LOCATION_PHRASES[q.value]}?"
    if q.kind == "relation":
        return f"Is the {thing} {RELATION_PHRASES[q.value]} the {q.other[0]} {q.other[1]}?"
    if q.kind == "quality":
        return QUALITY[q.value][0]
    raise ValueError(f"toy/decompose.py Query.kind: expected one of {QUERY_KINDS}, got {q.kind!r}")


def _alt(words) -> str:
    return "(" + "|".join(re.escape(w) for w in words) + ")"


_C, _S, _N = _alt(world.COLORS), _alt(world.SHAPES), _alt(NUMBER_WORDS[1:])
_PATTERNS = [  # (compiled pattern, builder from match groups)
    (rf"is there a {_S}\?", lambda g: Query("exists", g[0])),
    (rf"is there a {_C} {_S}\?", lambda g: Query("exists", g[1], g[0])),
    (rf"is there exactly one (?:{_C} )?{_S}\?", lambda g: Query("count", g[1], g[0], 1)),
    (rf"are there exactly {_N} (?:{_C} )?{_S}s\?",
     lambda g: Query("count", g[2], g[1], NUMBER_WORDS.index(g[0]) + 1)),
    (r"is there exactly one shape in the image\?", lambda g: Query("total", number=1)),
    (rf"are there exactly {_N} shapes in the image\?", lambda g: Query("total", number=NUMBER_WORDS.index(g[0]) + 1)),
    (rf"is the {_C} {_S} {_alt(world.SIZES)}\?", lambda g: Query("size", g[1], g[0], value=g[2])),
    (rf"is the {_C} {_S} {_alt(LOCATION_PHRASES.values())}\?",
     lambda g: Query("location", g[1], g[0], value=_key(LOCATION_PHRASES, g[2]))),
    (rf"is the {_C} {_S} {_alt(RELATION_PHRASES.values())} the {_C} {_S}\?",
     lambda g: Query("relation", g[1], g[0], value=_key(RELATION_PHRASES, g[2]), other=(g[3], g[4]))),
] + [(re.escape(text.lower()), lambda g, name=name: Query("quality", value=name))
     for name, (text, _) in QUALITY.items()]
_PATTERNS = [(re.compile(p), build) for p, build in _PATTERNS]


def _key(table: dict, phrase: str) -> str:
    return next(k for k, v in table.items() if v == phrase)


def parse_question(text: str) -> Query:
    """The query of a template question (case and runs of whitespace ignored); UnknownQuestion otherwise."""
    norm = " ".join(str(text).split()).lower()
    for pattern, build in _PATTERNS:
        m = pattern.fullmatch(norm)
        if m:
            return build(m.groups())
    raise UnknownQuestion(
        f"toy verifier: unknown question {text!r}; it answers only the templates of alphagrpo_jax/toy/"
        f"decompose.py, e.g. 'Is there a red circle?', 'Are there exactly two green triangles?', 'Is the red "
        f"circle to the left of the blue square?', or one of {[q for q, _ in QUALITY.values()]}")


def _tag(q: Query) -> str:
    if q.kind == "exists":
        return "Attribute" if q.color else "Existence"
    return {"count": "Count", "total": "Count", "size": "Attribute", "location": "Spatial",
            "relation": "Spatial"}[q.kind]


def semantic_queries(spec: PromptSpec) -> list[Query]:
    """The semantic queries of a prompt, without duplicates, in a fixed order."""
    validate(spec)
    objs = spec.objects
    out = [Query("exists", o.shape) for o in objs]
    out += [Query("exists", o.shape, o.color) for o in objs]
    if spec.category == "counting":
        out.append(Query("count", objs[0].shape, objs[0].color, objs[0].count))
    if spec.category == "colors":  # both colors of one shape: also how many of that shape there are
        out.append(Query("count", objs[0].shape, None, 2))
    out += [Query("size", o.shape, o.color, value=o.size) for o in objs if o.size]
    out += [Query("location", o.shape, o.color, value=o.location) for o in objs if o.location]
    if spec.relation:
        a, b = objs
        out.append(Query("relation", a.shape, a.color, value=spec.relation, other=(b.color, b.shape)))
    out.append(Query("total", number=sum(o.count for o in objs)))
    return list(dict.fromkeys(out))


def decompose(spec: PromptSpec, index: int | None = None) -> QuestionSet:
    """The DVReward record of one prompt: its canonical text, semantic and quality questions (strict tags);
    `category` and `spec` (the ground truth, as JSON) ride along as extra record fields."""
    semantic = tuple(Question("semantic", question_text(q), _tag(q)) for q in semantic_queries(spec))
    quality = tuple(Question("quality", text, tag) for text, tag in QUALITY.values())
    return QuestionSet(prompt=format_prompt(spec), semantic=semantic, quality=quality, original_index=index,
                       extra={"category": spec.category, "spec": spec.to_json()})



def decompose_text(prompt: str) -> QuestionSet:
    """The DVReward record of a toy prompt's text (it must follow the toy grammar, prompts.parse)."""
    return decompose(parse(prompt))

def _matches(o: world.Obj, shape: str | None, color: str | None) -> bool:
    return (shape is None or o.shape == shape) and (color is None or o.color == color)


def scene_answer(q: Query | str, scene: world.Scene) -> bool:
    """The exact answer to a query about a scene, from its geometry (rendered scenes are clean, so every
    quality question is yes)."""
    if isinstance(q, str):
        q = parse_question(q)
    objs = scene.objects
    hits = [o for o in objs if _matches(o, q.shape, q.color)]
    if q.kind == "exists":
        return bool(hits)
    if q.kind == "count":
        return len(hits) == q.number
    if q.kind == "total":
        return len(objs) == q.number
    if q.kind == "size":
        return any(o.size == q.value for o in hits)
    if q.kind == "location":
        return any(world.location_margin(o.centre, q.value, scene.canvas) > 0 for o in hits)
    if q.kind == "relation":
        others = [o for o in objs if _matches(o, q.other[1], q.other[0])]
        return any(world.relation_margin(a.centre, b.centre, q.value) > 0 for a in hits for b in others if a is not b)
    return True
