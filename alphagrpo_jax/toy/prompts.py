"""GenEval-like prompts for the toy world: a structured spec (the ground truth) and one canonical English text.

Categories and their canonical texts (`parse` accepts exactly these and inverts `format_prompt`):

    single_object  "a red circle"
    two_objects    "a red circle and a blue square"                (different shapes)
    counting       "one red circle" | "two green triangles" | "three ..."
    colors         "a red circle and a blue circle"                (same shape, different colors)
    position       "a red circle to the left of a blue square"     (also: to the right of / above / below)
    location       "a red circle on the left" | "... on the right" | "... at the top" | "... at the bottom"
                   | "... in the center"
    size           "a large red circle and a small blue square"    (sizes differ)

The category is a function of the text, so nothing but the text is needed to recover the spec. In prompts with
two objects the objects differ in (color, shape), so "the red circle" in a question names one of them.

Train/eval split (`split_of`): a prompt is "eval" iff it contains one of the held-out combinations below, so
eval measures generalisation to unseen compositions of seen words.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping

import numpy as np

from alphagrpo_jax.toy import world

CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "location", "size")
NUMBERS = ("one", "two", "three")
_RELATION_TEXT = {"left_of": "to the left of", "right_of": "to the right of", "above": "above", "below": "below"}
_LOCATION_TEXT = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
                  "center": "in the center"}

# Held-out combinations: never in a train prompt (any category, any object of it).
HELD_OUT_PAIRS = (("red", "triangle"), ("green", "square"), ("blue", "circle"))
# Per-category held-out compositions of otherwise seen words:
HELD_OUT_COUNTS = (("three", "circle"), ("two", "triangle"))  # counting: (number, shape)
HELD_OUT_COLOR_PAIRS = (frozenset({"yellow", "purple"}), frozenset({"cyan", "white"}))  # two_objects, colors
HELD_OUT_RELATIONS = (("circle", "above", "square"), ("triangle", "left_of", "circle"),
                      ("square", "below", "triangle"), ("square", "right_of", "circle"))  # position: shapes a,rel,b
HELD_OUT_LOCATIONS = (("square", "center"), ("triangle", "left"), ("circle", "bottom"))  # location: shape, where
HELD_OUT_SIZES = (("triangle", "circle"),)  # size: (large shape, small shape)


class PromptError(ValueError):
    """A prompt text or spec outside the toy grammar."""


@dataclasses.dataclass(frozen=True)
class ObjectSpec:
    color: str
    shape: str
    count: int = 1
    size: str | None = None
    location: str | None = None


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None  # position prompts: objects[0] <relation> objects[1]

    def to_json(self) -> dict:
        return {"category": self.category, "objects": [dataclasses.asdict(o) for o in self.objects],
                "relation": self.relation}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, obj) -> PromptSpec:
        if isinstance(obj, str):
            obj = json.loads(obj)
        try:
            spec = cls(obj["category"], tuple(ObjectSpec(**o) for o in obj["objects"]), obj.get("relation"))
        except (KeyError, TypeError) as e:
            raise PromptError(f"toy/prompts.py spec json: expected category/objects[/relation], got {obj!r} "
                              f"({e})") from None
        validate(spec)
        return spec


def _obj_text(o: ObjectSpec, numeral: bool) -> str:
    head = NUMBERS[o.count - 1] if numeral else "a"
    noun = o.shape + ("s" if o.count > 1 else "")
    return " ".join(w for w in (head, o.size, o.color, noun) if w)


def format_prompt(spec: PromptSpec) -> str:
    """The canonical text of a (valid) spec."""
    validate(spec)
    objs = spec.objects
    first = _obj_text(objs[0], spec.category == "counting")
    if spec.category in ("single_object", "counting"):
        return first
    if spec.category == "location":
        return f"{first} {_LOCATION_TEXT[objs[0].location]}"
    if spec.category == "position":
        return f"{first} {_RELATION_TEXT[spec.relation]} {_obj_text(objs[1], False)}"
    return f"{first} and {_obj_text(objs[1], False)}"


def validate(spec: PromptSpec) -> None:
    """Raises PromptError unless `spec` is one of the grammar's prompts."""
    def fail(msg):
        raise PromptError(f"toy/prompts.py spec {spec}: {msg}")

    if spec.category not in CATEGORIES:
        fail(f"category must be one of {CATEGORIES}")
    n_objs = 1 if spec.category in ("single_object", "counting", "location") else 2
    if len(spec.objects) != n_objs:
        fail(f"{spec.category} needs {n_objs} object(s)")
    for o in spec.objects:
        if o.color not in world.COLORS or o.shape not in world.SHAPES:
            fail(f"colors are {world.COLORS}, shapes {world.SHAPES}")
        if o.count != 1 and spec.category != "counting":
            fail("only counting prompts have count != 1")
        if (o.size is not None) != (spec.category == "size") or (o.size and o.size not in world.SIZES):
            fail(f"size prompts (only) give every object a size in {world.SIZES}")
        if (o.location is not None) != (spec.category == "location") or (
                o.location and o.location not in world.LOCATIONS):
            fail(f"location prompts (only) give their object a location in {world.LOCATIONS}")
    if (spec.relation is not None) != (spec.category == "position") or (
            spec.relation and spec.relation not in world.RELATIONS):
        fail(f"position prompts (only) have a relation in {world.RELATIONS}")
    if spec.category == "counting" and not 1 <= spec.objects[0].count <= len(NUMBERS):
        fail(f"count must be in 1..{len(NUMBERS)}")
    if n_objs == 2:
        a, b = spec.objects
        if (a.color, a.shape) == (b.color, b.shape):
            fail("the two objects must differ in color or shape")
        if spec.category == "two_objects" and a.shape == b.shape:
            fail("two_objects needs different shapes (same shape is 'colors')")
        if spec.category == "colors" and a.shape != b.shape:
            fail("colors needs the same shape in two colors")
        if spec.category == "size" and a.size == b.size:
            fail("size needs two different sizes")


def _parse_object(words: list[str], i: int, text: str) -> tuple[ObjectSpec, bool, int]:
    """(object, numeral-led, next index) for `[a|one|two|three] [small|large] color shape[s]` at words[i]."""
    def fail(msg):
        raise PromptError(f"toy/prompts.py parse({text!r}): word {i + 1}: {msg}")

    if i >= len(words):
        fail("expected an object phrase, the text ended")
    head = words[i]
    if head != "a" and head not in NUMBERS:
        fail(f"expected 'a' or a number in {NUMBERS}, got {head!r}")
    count = 1 if head == "a" else NUMBERS.index(head) + 1
    i += 1
    size = None
    if i < len(words) and words[i] in world.SIZES:
        size, i = words[i], i + 1
    if i + 1 >= len(words) or words[i] not in world.COLORS:
        fail(f"expected a color in {world.COLORS}, got {words[i] if i < len(words) else 'the end'!r}")
    color, noun = words[i], words[i + 1]
    shape = noun[:-1] if count > 1 and noun.endswith("s") else noun
    if shape not in world.SHAPES or (count > 1) != (noun != shape):
        fail(f"expected a shape in {world.SHAPES} (plural iff the number is > 1), got {noun!r}")
    return ObjectSpec(color, shape, count, size), head != "a", i + 2


def parse(text: str) -> PromptSpec:
    """The spec of a canonical prompt text; PromptError naming the offending word otherwise."""
    words = text.strip().split()
    first, numeral, i = _parse_object(words, 0, text)
    rest = " ".join(words[i:])
    if not rest:
        spec = PromptSpec("counting" if numeral else "single_object", (first,))
    elif rest in _LOCATION_TEXT.values():
        loc = next(k for k, v in _LOCATION_TEXT.items() if v == rest)
        spec = PromptSpec("location", (dataclasses.replace(first, location=loc),))
    else:
        relation = next((k for k, v in _RELATION_TEXT.items() if rest.startswith(v + " ")), None)
        joiner = _RELATION_TEXT[relation] if relation else "and"
        if not relation and not rest.startswith("and "):
            raise PromptError(f"toy/prompts.py parse({text!r}): after the first object expected 'and', a "
                              f"relation {tuple(_RELATION_TEXT.values())} or a location "
                              f"{tuple(_LOCATION_TEXT.values())}, got {rest!r}")
        second, numeral2, j = _parse_object(words, i + len(joiner.split()), text)
        if j != len(words):
            raise PromptError(f"toy/prompts.py parse({text!r}): unexpected words after the second object: "
                              f"{' '.join(words[j:])!r}")
        if numeral or numeral2:
            raise PromptError(f"toy/prompts.py parse({text!r}): numbers only in single-object counting prompts")
        if relation:
            category = "position"
        elif first.size or second.size:
            category = "size"
        else:
            category = "colors" if first.shape == second.shape else "two_objects"
        spec = PromptSpec(category, (first, second), relation)
    validate(spec)
    if format_prompt(spec) != " ".join(words):
        raise PromptError(f"toy/prompts.py parse({text!r}): not canonical; expected {format_prompt(spec)!r}")
    return spec


def enumerate_prompts(category: str) -> list[PromptSpec]:
    """Every prompt of `category`, in a fixed order."""
    if category not in CATEGORIES:
        raise PromptError(f"toy/prompts.py category: expected one of {CATEGORIES}, got {category!r}")
    pairs = list(itertools.product(world.COLORS, world.SHAPES))
    one = [ObjectSpec(c, s) for c, s in pairs]
    two = [(a, b) for a in one for b in one if (a.color, a.shape) != (b.color, b.shape)]
    if category == "single_object":
        specs = [PromptSpec(category, (o,)) for o in one]
    elif category == "counting":
        specs = [PromptSpec(category, (dataclasses.replace(o, count=n),)) for o in one
                 for n in range(1, len(NUMBERS) + 1)]
    elif category == "location":
        specs = [PromptSpec(category, (dataclasses.replace(o, location=loc),)) for o in one
                 for loc in world.LOCATIONS]
    elif category == "two_objects":
        specs = [PromptSpec(category, p) for p in two if p[0].shape != p[1].shape]
    elif category == "colors":
        specs = [PromptSpec(category, p) for p in two if p[0].shape == p[1].shape]
    elif category == "position":
        specs = [PromptSpec(category, p, r) for p in two for r in world.RELATIONS]
    else:
        specs = [PromptSpec(category, (dataclasses.replace(a, size=sa), dataclasses.replace(b, size=sb)))
                 for a, b in two for sa, sb in (("large", "small"), ("small", "large"))]
    return specs


def held_out_reasons(spec: PromptSpec) -> list[str]:
    """Which held-out combinations `spec` contains (empty for a train prompt)."""
    reasons = [f"pair {o.color} {o.shape}" for o in spec.objects if (o.color, o.shape) in HELD_OUT_PAIRS]
    objs = spec.objects
    if spec.category == "counting" and (NUMBERS[objs[0].count - 1], objs[0].shape) in HELD_OUT_COUNTS:
        reasons.append(f"count {NUMBERS[objs[0].count - 1]} {objs[0].shape}")
    if spec.category in ("two_objects", "colors") and frozenset({objs[0].color, objs[1].color}) in \
            HELD_OUT_COLOR_PAIRS:
        reasons.append(f"colors {objs[0].color}+{objs[1].color}")
    if spec.category == "position" and (objs[0].shape, spec.relation, objs[1].shape) in HELD_OUT_RELATIONS:
        reasons.append(f"relation {objs[0].shape} {spec.relation} {objs[1].shape}")
    if spec.category == "location" and (objs[0].shape, objs[0].location) in HELD_OUT_LOCATIONS:
        reasons.append(f"location {objs[0].shape} {objs[0].location}")
    if spec.category == "size":
        large, small = (objs[0], objs[1]) if objs[0].size == "large" else (objs[1], objs[0])
        if (large.shape, small.shape) in HELD_OUT_SIZES:
            reasons.append(f"size large {large.shape} small {small.shape}")
    return reasons


def split_of(spec: PromptSpec) -> str:
    return "eval" if held_out_reasons(spec) else "train"


def split_prompts(split: str, category: str) -> list[PromptSpec]:
    """All prompts of one category in one split, in the fixed enumeration order."""
    if split not in ("train", "eval"):
        raise PromptError(f"toy/prompts.py split: expected 'train' or 'eval', got {split!r}")
    return [s for s in enumerate_prompts(category) if split_of(s) == split]


def prompt_set(split: str, per_category: int | Mapping[str, int] | None = None,
               seed: int = 0) -> list[PromptSpec]:
    """Prompts of `split`, category by category in CATEGORIES order. per_category: how many of each (an int
    for all, a mapping for some; None = all of them); a category with fewer prompts than asked gives all it has.
    The subset is the first `want` of a seeded permutation, kept in enumeration order: with one seed, a
    larger request contains every prompt of a smaller one."""
    if per_category is not None and not isinstance(per_category, Mapping):
        per_category = {c: int(per_category) for c in CATEGORIES}
    out = []
    for ci, category in enumerate(CATEGORIES):
        pool = split_prompts(split, category)
        want = len(pool) if per_category is None else per_category.get(category, 0)
        if want < 0:
            raise PromptError(f"toy/prompts.py prompt_set: per_category[{category!r}] = {want} < 0")
        if want >= len(pool):
            out.extend(pool)
            continue
        rng = np.random.default_rng([seed, ci])
        out.extend(pool[i] for i in sorted(rng.permutation(len(pool))[:want]))
    return out


def sample_scene(spec: PromptSpec, rng: np.random.Generator | int, canvas: int = world.CANVAS) -> world.Scene:
    """A random valid scene that satisfies `spec` and holds nothing else (sizes not in the spec are random).
    Deterministic given the Generator's state (or an int seed)."""
    validate(spec)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    wanted = [world.Wanted(o.color, o.shape, o.size, o.location) for o in spec.objects for _ in range(o.count)]
    relation = (0, spec.relation, 1) if spec.relation else None
    return world.place(wanted, rng, relation, canvas)
