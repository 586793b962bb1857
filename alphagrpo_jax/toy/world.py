"""The toy world: flat-coloured circles, squares and triangles on a black 32x32 canvas.

Coordinates are pixels, x to the right and y downwards; pixel (x, y) covers [x, x+1) x [y, y+1). An object is
drawn inside a square box of side `EXTENT[size]` whose top-left corner is an integer pixel, so its `centre`
(the box centre, the same point the verifier measures from the pixels' bounding box) is x0 + extent/2.

Colours are the seven non-black corners of the RGB cube (every pair is 255 apart, so nearest-colour
segmentation is per-channel thresholding). Rendering is pillow without antialiasing: a ground-truth image holds
only palette colours, so the verifier's segmentation of it is exact.

Spatial predicates are margins in pixels, positive when the predicate holds; `scene_answer` (decompose.py), the
sampler and the verifier (through a logistic of the same margins) all use these functions.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 32
BACKGROUND = (0, 0, 0)
PALETTE = {  # name -> RGB; "purple" is the magenta corner (255, 0, 255)
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
    "purple": (255, 0, 255), "cyan": (0, 255, 255), "white": (255, 255, 255),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
EXTENT = {"small": 7, "large": 13}  # side of the object's box, pixels (at CANVAS = 32)
LOCATIONS = ("left", "right", "top", "bottom", "center")
RELATIONS = ("left_of", "right_of", "above", "below")
GAP = 2  # minimum empty pixels between two objects' boxes: same-coloured objects never touch
RELATION_MIN_OFFSET = 2.0  # "a left of b": b's centre is more than this many pixels right of a's
SAMPLE_MARGIN = 2.0  # sampled scenes satisfy their location predicates by at least this many pixels


@dataclasses.dataclass(frozen=True)
class Obj:
    """One drawn object. `centre` = (x, y) of its box centre in pixels."""

    color: str
    shape: str
    size: str
    centre: tuple[float, float]

    def __post_init__(self):
        _check(self.color, COLORS, "Obj.color")
        _check(self.shape, SHAPES, "Obj.shape")
        _check(self.size, SIZES, "Obj.size")

    @property
    def extent(self) -> int:
        return EXTENT[self.size]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), half-open, integer pixels."""
        x0 = int(round(self.centre[0] - self.extent / 2))
        y0 = int(round(self.centre[1] - self.extent / 2))
        return x0, y0, x0 + self.extent, y0 + self.extent

    def moved_to(self, x0: int, y0: int) -> Obj:
        return dataclasses.replace(self, centre=(x0 + self.extent / 2, y0 + self.extent / 2))


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    canvas: int = CANVAS

    def to_json(self) -> dict:
        return {"canvas": self.canvas, "objects": [dataclasses.asdict(o) for o in self.objects]}

    @classmethod
    def from_json(cls, obj: dict) -> Scene:
        return cls(tuple(Obj(o["color"], o["shape"], o["size"], tuple(o["centre"])) for o in obj["objects"]),
                   int(obj["canvas"]))


def _check(value, allowed: Sequence, where: str) -> None:
    if value not in allowed:
        raise ValueError(f"toy/world.py {where}: expected one of {tuple(allowed)}, got {value!r}")


def location_margin(centre: tuple[float, float], location: str, canvas: int = CANVAS) -> float:
    """Pixels by which `centre` lies inside `location`'s region: the outer thirds of the canvas for
    left/right/top/bottom, the middle third in both axes for center."""
    _check(location, LOCATIONS, "location")
    x, y = centre
    third = canvas / 3
    if location == "left":
        return third - x
    if location == "right":
        return x - 2 * third
    if location == "top":
        return third - y
    if location == "bottom":
        return y - 2 * third
    return third / 2 - np.maximum(abs(x - canvas / 2), abs(y - canvas / 2))


def relation_margin(a: tuple[float, float], b: tuple[float, float], relation: str) -> float:
    """Pixels by which "a <relation> b" holds along the relation's axis only (as GenEval judges it)."""
    _check(relation, RELATIONS, "relation")
    dx, dy = b[0] - a[0], b[1] - a[1]
    offset = {"left_of": dx, "right_of": -dx, "above": dy, "below": -dy}[relation]
    return offset - RELATION_MIN_OFFSET


def boxes_apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = GAP) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def validate_scene(scene: Scene) -> None:
    """Raises ValueError unless every object is inside the canvas and all boxes are GAP apart."""
    for i, o in enumerate(scene.objects):
        x0, y0, x1, y1 = o.box
        if x0 < 0 or y0 < 0 or x1 > scene.canvas or y1 > scene.canvas:
            raise ValueError(f"toy/world.py Scene.objects[{i}]: box {o.box} outside the {scene.canvas}px canvas")
        for j in range(i):
            if not boxes_apart(o.box, scene.objects[j].box):
                raise ValueError(f"toy/world.py Scene.objects[{i}] overlaps objects[{j}] (need {GAP}px gap)")


def render(scene: Scene) -> np.ndarray:
    """uint8 [canvas, canvas, 3] image of `scene` (no antialiasing: only palette colours appear)."""
    img = Image.new("RGB", (scene.canvas, scene.canvas), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        x0, y0, x1, y1 = o.box
        fill = PALETTE[o.color]
        if o.shape == "circle":
            draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        else:  # apex up, base on the box's bottom row
            draw.polygon([(x0 + (o.extent - 1) / 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)], fill=fill)
    return np.asarray(img, dtype=np.uint8)


def free_corners(extent: int, placed: Sequence[Obj], canvas: int = CANVAS, location: str | None = None,
                 relation: tuple[str, Obj] | None = None) -> np.ndarray:
    """bool [n, n] over top-left corners (y0, x0), n = canvas - extent + 1: where a box of side `extent` fits
    GAP away from every `placed` object, with its centre `SAMPLE_MARGIN` inside `location`, and (for
    relation = (rel, other)) with the new object "rel other" by whole-box separation along rel's axis."""
    n = canvas - extent + 1
    x0 = np.arange(n)[None, :]
    y0 = np.arange(n)[:, None]
    ok = np.ones((n, n), bool)
    for o in placed:
        bx0, by0, bx1, by1 = o.box
        ok &= (x0 + extent + GAP <= bx0) | (bx1 + GAP <= x0) | (y0 + extent + GAP <= by0) | (by1 + GAP <= y0)
    cx, cy = x0 + extent / 2, y0 + extent / 2
    if location is not None:
        ok &= location_margin((cx, cy), location, canvas) >= SAMPLE_MARGIN
    if relation is not None:
        rel, other = relation
        bx0, by0, bx1, by1 = other.box
        ok &= {"left_of": x0 + extent + GAP <= bx0, "right_of": bx1 + GAP <= x0,
               "above": y0 + extent + GAP <= by0, "below": by1 + GAP <= y0}[rel]
    return ok


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One object a scene must contain; None fields are drawn at random."""

    color: str
    shape: str
    size: str | None = None
    location: str | None = None


def place(wanted: Sequence[Wanted], rng: np.random.Generator, relation: tuple[int, str, int] | None = None,
          canvas: int = CANVAS, tries: int = 50) -> Scene:
    """A random valid scene with exactly the `wanted` objects (in that order). `relation` = (i, rel, j) makes
    object i "rel" object j. Each object's corner is uniform over the still-free corners; a dead end restarts.
    Deterministic given `rng`'s state."""
    if relation is not None and not (0 <= relation[0] < len(wanted) and 0 <= relation[2] < len(wanted)
                                     and relation[0] != relation[2]):
        raise ValueError(f"toy/world.py place: relation {relation} must name two distinct objects of {len(wanted)}")
    for _ in range(tries):
        placed: list[Obj] = []
        for k, w in enumerate(wanted):
            size = w.size if w.size is not None else SIZES[rng.integers(len(SIZES))]
            obj = Obj(w.color, w.shape, size, (0.0, 0.0))
            rel = None
            if relation is not None and k == max(relation[0], relation[2]):
                i, r, j = relation
                # the later of the two is placed relative to the earlier one: invert r if the later is j
                inverse = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
                rel = (r, placed[j]) if k == i else (inverse[r], placed[i])
            ok = free_corners(obj.extent, placed, canvas, w.location, rel)
            ys, xs = np.nonzero(ok)
            if len(xs) == 0:
                break
            pick = rng.integers(len(xs))
            placed.append(obj.moved_to(int(xs[pick]), int(ys[pick])))
        else:
            return Scene(tuple(placed), canvas)
    raise ValueError(f"toy/world.py place: no valid layout for {list(wanted)} with relation {relation} "
                     f"after {tries} tries")


PERTURBATIONS = ("color", "shape", "size", "add", "remove", "move", "mirror_x", "mirror_y")


def perturb(scene: Scene, kind: str, rng: np.random.Generator) -> Scene:
    """A valid scene that differs from `scene` in one way (a wrong image for a prompt `scene` satisfied):
    color/shape/size of one object changed, an object added (color and shape of one present) or removed, one
    object moved to a random free place, or the whole layout mirrored left-right / top-bottom."""
    _check(kind, PERTURBATIONS, "perturb kind")
    objs = list(scene.objects)
    if not objs:
        raise ValueError("toy/world.py perturb: the scene has no objects")
    k = int(rng.integers(len(objs)))
    o = objs[k]
    if kind in ("color", "shape"):
        pool = COLORS if kind == "color" else SHAPES
        others = [v for v in pool if v != getattr(o, kind)]
        objs[k] = dataclasses.replace(o, **{kind: others[rng.integers(len(others))]})
    elif kind == "remove":
        del objs[k]
    elif kind in ("mirror_x", "mirror_y"):
        axis = 0 if kind == "mirror_x" else 1
        objs = [dataclasses.replace(p, centre=tuple(scene.canvas - c if a == axis else c
                                                    for a, c in enumerate(p.centre))) for p in objs]
    else:
        if kind == "size":
            o = dataclasses.replace(o, size="large" if o.size == "small" else "small")
        rest = objs[:k] + objs[k + 1:] if kind != "add" else objs
        ok = free_corners(o.extent, rest, scene.canvas)
        if kind == "add" and not ok.any():  # no room for a copy of that size: a small one may still fit
            o = dataclasses.replace(o, size="small")
            ok = free_corners(o.extent, rest, scene.canvas)
        x0, y0, x1, y1 = o.box
        if kind == "move":  # force a real move: at least one extent away
            ny, nx = np.indices(ok.shape)
            ok &= np.maximum(abs(nx - x0), abs(ny - y0)) >= o.extent
        elif kind == "size" and 0 <= y0 < ok.shape[0] and 0 <= x0 < ok.shape[1] and ok[y0, x0]:
            ok = np.zeros_like(ok)
            ok[y0, x0] = True  # keep the place when the resized object still fits there
        ys, xs = np.nonzero(ok)
        if len(xs) == 0:
            raise ValueError(f"toy/world.py perturb: no room to {kind} {o}")
        pick = int(rng.integers(len(xs)))
        moved = o.moved_to(int(xs[pick]), int(ys[pick]))
        if kind == "add":
            objs.append(moved)
        else:
            objs[k] = moved
    out = Scene(tuple(objs), scene.canvas)
    validate_scene(out)
    return out
