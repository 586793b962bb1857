"""The programmatic verifier: P(yes) for a toy template question about an image, by image analysis.

    p = answer("Is there a red circle?", image)          # image: uint8 [S, S, 3] (or [S, S, 4] / [S, S])
    ps = score_record(record, image)                     # [n_questions] float64, semantic then quality

Pipeline (numpy only; ~1 ms per 32x32 image, shared by all questions of a record):
1. Segmentation: each pixel takes the nearest of black + the palette if within `COLOR_TOL` (RGB distance),
   else it is "unassigned". Colour is a hard decision; everything after it is soft.
2. 4-connected components of same-coloured pixels (min-label propagation with pointer jumping).
3. Per component, in canvas units (an S-px image is scaled by S/32): area, box, and four shape features (IoU
   with each shape drawn in the box, fill ratio, corner occupancy, aspect). Shape posterior = softmax over
   {circle, square, triangle, junk} of Gaussian log-likelihoods (junk = a constant: ~3.5 sigma from every
   shape); objectness = logistic(area - MIN_AREA) * logistic(MAX_EXTENT - extent).
   q(component is a <color> <shape>) = objectness * P(shape) * [color].
4. Answers: existence = noisy-OR of q; counts = Poisson-binomial P(N = n) over the components' q; predicates
   (size, location, relation) = noisy-OR of q * logistic(margin / width), margins from world.py in pixels.
   Quality: logistics of measured blur, noise and blob sizes (thresholds below).
So a partly right image (clipped, lopsided, misplaced, an extra half object) scores in between; on clean
renders every answer is right by several logistic widths (P(yes) ~0.997 / ~0.002).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image, ImageDraw

from alphagrpo_jax.reward.images import to_pil
from alphagrpo_jax.reward.records import QuestionSet, record_from_json
from alphagrpo_jax.toy import world
from alphagrpo_jax.toy.decompose import Query, parse_question

COLOR_TOL = 150.0  # RGB distance: pixels farther from every palette colour (and black) are unassigned
CLEAN_TOL = 48.0  # RGB distance: pixels farther than this from every palette colour count as off-palette
MIN_AREA, AREA_WIDTH = 12.0, 2.0  # canvas px^2: smaller components are blobs, not objects
MAX_EXTENT, EXTENT_WIDTH = 20.0, 1.0  # canvas px: larger components are not objects (a large object is 13 px;
# without this cap an all-red canvas would be a perfect "red square")
SIZE_SPLIT, SIZE_WIDTH = 10.0, 0.5  # canvas px: box side between small (7) and large (13)
POS_WIDTH = 0.5  # canvas px: logistic width of location / relation margins
# Shape likelihood, Gaussian in four features (spread: how far a drawn-by-hand shape may stray):
# 1 - IoU with the shape drawn in the component's own box; fill ratio area / box area (rendered: circle 0.76,
# square 1, triangle 0.51); filled box-corner pixels (circle 0, square 4, triangle 2 of 4); log(width / height).
# IoU rejects non-shapes (an L has the fill and corners of a triangle); fill and corners keep a lopsided or
# clipped shape partly credited (IoU alone drops a one-pixel-clipped 7 px triangle to ~0).
IOU_SIGMA, FILL_SIGMA, CORNER_SIGMA, ASPECT_SIGMA = 0.15, 0.07, 0.25, 0.2
_FILL = np.array([{"circle": 0.76, "square": 1.0, "triangle": 0.51}[s] for s in world.SHAPES])
_CORNERS = np.array([{"circle": 0.0, "square": 1.0, "triangle": 0.5}[s] for s in world.SHAPES])
MIN_SHAPE_AREA = 4.0  # canvas px^2: smaller components are not compared with templates (they are junk)
JUNK_LOGLIK = -6.0  # log-likelihood of "no shape": a component ~3.5 sigma from every prototype is junk
# Quality thresholds (value, logistic width): blob size in canvas px^2 (a blob is a component that is not an
# object, or a patch of unassigned pixels away from components), off-palette fraction of the object edge ring,
# mean RGB deviation of the background and of object interiors. Clean renders score >= 0.99 on each.
BLOB_AREA = (2.5, 0.75)
EDGE_BLUR = (0.15, 0.03)
BACKGROUND_NOISE = (10.0, 2.0)
FILL_NOISE = (16.0, 3.0)

_REF = np.array([world.BACKGROUND] + [world.PALETTE[c] for c in world.COLORS], np.float32)  # [8, 3]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


@functools.lru_cache(maxsize=1024)
def _templates(w: int, h: int) -> np.ndarray:
    """bool [3, h, w]: circle, square and triangle drawn to fill a w x h box, exactly as world.render does."""
    out = []
    for shape in world.SHAPES:
        img = Image.new("1", (w, h), 0)
        draw = ImageDraw.Draw(img)
        if shape == "circle":
            draw.ellipse([0, 0, w - 1, h - 1], fill=1)
        elif shape == "square":
            draw.rectangle([0, 0, w - 1, h - 1], fill=1)
        else:
            draw.polygon([((w - 1) / 2, 0), (0, h - 1), (w - 1, h - 1)], fill=1)
        out.append(np.asarray(img, bool))
    return np.stack(out)


def label_components(cls: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of equal positive values of `cls` [H, W]: labels [H, W] (-1 elsewhere), count."""
    h, w = cls.shape
    fg = cls > 0
    big = h * w
    lab = np.where(fg, np.arange(big).reshape(h, w), big)
    while True:
        new = lab.copy()
        for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                     ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):
            same = fg[a] & fg[b] & (cls[a] == cls[b])
            new[a] = np.where(same, np.minimum(new[a], lab[b]), new[a])
            new[b] = np.where(same, np.minimum(new[b], lab[a]), new[b])
        flat = new.ravel()
        for _ in range(4):  # pointer jumping: a label is a pixel of the same component; follow its label
            flat[fg.ravel()] = flat[flat[fg.ravel()]]
        if np.array_equal(new, lab):
            break
        lab = new
    roots, compact = np.unique(lab[fg], return_inverse=True)
    out = np.full((h, w), -1, np.int64)
    out[fg] = compact
    return out, len(roots)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 (8-neighbour) dilation (separable: rows, then columns)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    rows = out.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One image's segmentation summary. Per-component arrays have length n; units are canvas pixels."""

    color: np.ndarray  # [n] int: index into world.COLORS
    area: np.ndarray  # [n]
    centre: np.ndarray  # [n, 2] (x, y) box centres
    extent: np.ndarray  # [n] max(box width, height)
    objectness: np.ndarray  # [n] P(large enough to be an object)
    p_shape: np.ndarray  # [n, 4] P(circle, square, triangle, junk)
    quality: dict  # quality question name -> P(yes)
    canvas: int = world.CANVAS

    def q(self, shape: str | None = None, color: str | None = None) -> np.ndarray:
        """[n] P(component is a <color> <shape>); None = any color / any shape."""
        p = self.objectness * (1.0 - self.p_shape[:, 3] if shape is None
                               else self.p_shape[:, world.SHAPES.index(shape)])
        return p if color is None else p * (self.color == world.COLORS.index(color))


def _shape_probs(labels, area, box) -> np.ndarray:
    """[n, 4] P(circle, square, triangle, junk) per component from the four shape features."""
    x0, y0, x1, y1 = box
    n, w, h = len(area), x1 - x0, y1 - y0
    miss = np.ones((n, len(world.SHAPES)))  # 1 - IoU with each shape's template; tiny components keep 1
    for i in np.nonzero(area >= MIN_SHAPE_AREA)[0]:
        mask = labels[y0[i]:y1[i], x0[i]:x1[i]] == i
        t = _templates(int(w[i]), int(h[i]))
        miss[i] = 1.0 - (t & mask).sum((1, 2)) / (t | mask).sum((1, 2))
    k = np.arange(n)
    corners = sum(labels[yy, xx] == k for yy, xx in ((y0, x0), (y0, x1 - 1), (y1 - 1, x0), (y1 - 1, x1 - 1))) / 4
    fill = np.bincount(labels[labels >= 0], minlength=n) / (w * h)
    loglik = -0.5 * ((miss / IOU_SIGMA) ** 2 + ((fill[:, None] - _FILL) / FILL_SIGMA) ** 2
                     + ((corners[:, None] - _CORNERS) / CORNER_SIGMA) ** 2
                     + (np.log(w / h) / ASPECT_SIGMA)[:, None] ** 2)
    logits = np.concatenate([loglik, np.full((n, 1), JUNK_LOGLIK)], -1)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _quality(cls, dmin, labels, area, shapeness, objectness, p_junk, s) -> dict:
    """P(yes) of each quality question (decompose.QUALITY names). Areas in canvas px^2, s = image px per
    canvas px."""
    fg = labels >= 0
    obj_px = np.append(shapeness, 0.0)[labels] > 0.5  # label -1 (no component) reads the appended 0
    near_obj = _dilate(obj_px)
    ring = near_obj & ~(obj_px & ~_dilate(~obj_px))  # object pixels on the boundary plus one pixel outside
    edge_blur = float((dmin[ring] > CLEAN_TOL).mean()) if ring.any() else 0.0
    loose_px = (cls < 0) & ~_dilate(fg)  # off-palette patches away from components
    loose_area = np.zeros(0)
    if loose_px.any():
        loose, n_loose = label_components(loose_px.astype(np.int64))
        loose_area = np.bincount(loose[loose >= 0], minlength=n_loose) / s ** 2
    p_blob = np.concatenate([(1.0 - shapeness) * _sigmoid((area - BLOB_AREA[0]) / BLOB_AREA[1]),
                             _sigmoid((loose_area - BLOB_AREA[0]) / BLOB_AREA[1])])
    bg = (cls == 0) & ~_dilate(near_obj)
    bg_noise = float(dmin[bg].mean()) if bg.any() else 0.0
    interior = obj_px & _inner(labels)
    fill_noise = float(dmin[interior].mean()) if interior.any() else 0.0
    return {
        "edges": float(_sigmoid((EDGE_BLUR[0] - edge_blur) / EDGE_BLUR[1])),
        "forms": float(np.prod(1.0 - objectness * p_junk)),
        "background": float(_sigmoid((BACKGROUND_NOISE[0] - bg_noise) / BACKGROUND_NOISE[1])),
        "fill": float(_sigmoid((FILL_NOISE[0] - fill_noise) / FILL_NOISE[1])),
        "stray": float(np.prod(1.0 - p_blob)),
    }


def analyse(image) -> Analysis:
    """Segments a square RGB image (uint8) and summarises its components and quality measures."""
    img = np.asarray(to_pil(image, "toy verifier image"), np.float32)
    size = img.shape[0]
    if img.shape[1] != size:
        raise ValueError(f"toy verifier image: expected a square image, got shape {img.shape}")
    s = size / world.CANVAS  # image px per canvas px
    dist = np.sqrt(((img[:, :, None, :] - _REF) ** 2).sum(-1))  # [H, W, 8]
    nearest, dmin = dist.argmin(-1), dist.min(-1)
    cls = np.where(dmin <= COLOR_TOL, nearest, -1)
    labels, n = label_components(cls)
    fg = labels >= 0
    lab = labels[fg]
    ys, xs = np.nonzero(fg)
    x0, y0 = np.full(n, size), np.full(n, size)
    x1, y1 = np.zeros(n, int), np.zeros(n, int)
    np.minimum.at(x0, lab, xs)
    np.minimum.at(y0, lab, ys)
    np.maximum.at(x1, lab, xs + 1)
    np.maximum.at(y1, lab, ys + 1)
    color = np.zeros(n, int)
    color[lab] = cls[fg] - 1
    area = np.bincount(lab, minlength=n) / s ** 2
    extent = np.maximum(x1 - x0, y1 - y0) / s
    p_shape = _shape_probs(labels, area, (x0, y0, x1, y1))
    # Objects are big enough to be more than a blob, and small enough to leave the canvas a background.
    objectness = _sigmoid((area - MIN_AREA) / AREA_WIDTH) * _sigmoid((MAX_EXTENT - extent) / EXTENT_WIDTH)
    shapeness = objectness * (1.0 - p_shape[:, 3])
    quality = _quality(cls, dmin, labels, area, shapeness, objectness, p_shape[:, 3], s)
    centre = np.stack([(x0 + x1) / 2, (y0 + y1) / 2], -1) / s
    return Analysis(color, area, centre, extent, objectness, p_shape, quality)


def _inner(labels: np.ndarray) -> np.ndarray:
    """bool [H, W]: labelled pixels whose four 4-neighbours (inside the image) carry the same label."""
    same = labels >= 0
    same[1:] &= labels[1:] == labels[:-1]
    same[:-1] &= labels[:-1] == labels[1:]
    same[:, 1:] &= labels[:, 1:] == labels[:, :-1]
    same[:, :-1] &= labels[:, :-1] == labels[:, 1:]
    return same


def _noisy_or(p: np.ndarray) -> float:
    return float(1.0 - np.prod(1.0 - p))


def _prob_count(p: np.ndarray, n: int) -> float:
    """P(exactly n successes) of independent Bernoulli(p_i) (Poisson-binomial, by dynamic programming)."""
    dist = np.zeros(max(n, len(p)) + 2)
    dist[0] = 1.0
    for pi in p:
        dist[1:] = dist[1:] * (1.0 - pi) + dist[:-1] * pi
        dist[0] *= 1.0 - pi
    return float(dist[n])


def answer_query(q: Query, a: Analysis) -> float:
    """P(yes) for a parsed query given an image analysis."""
    if q.kind == "quality":
        return a.quality[q.value]
    if q.kind == "total":
        return _prob_count(a.q(), q.number)
    hits = a.q(q.shape, q.color)
    if q.kind == "exists":
        return _noisy_or(hits)
    if q.kind == "count":
        return _prob_count(hits, q.number)
    if q.kind == "size":
        p_large = _sigmoid((a.extent - SIZE_SPLIT) / SIZE_WIDTH)
        return _noisy_or(hits * (p_large if q.value == "large" else 1.0 - p_large))
    if q.kind == "location":
        margin = world.location_margin((a.centre[:, 0], a.centre[:, 1]), q.value, a.canvas)
        return _noisy_or(hits * _sigmoid(margin / POS_WIDTH))
    others = a.q(q.other[1], q.other[0])
    margin = world.relation_margin((a.centre[:, None, 0], a.centre[:, None, 1]),
                                   (a.centre[None, :, 0], a.centre[None, :, 1]), q.value)
    pair = hits[:, None] * others[None, :] * _sigmoid(margin / POS_WIDTH)
    np.fill_diagonal(pair, 0.0)  # one component cannot be both objects
    return _noisy_or(pair)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Query:
    return parse_question(text)


def answer(question: str, image) -> float:
    """P(yes) in [0, 1] for one template question; UnknownQuestion for any other text."""
    return answer_query(_parse(question), analyse(image))


def answer_many(questions, image) -> np.ndarray:
    """[len(questions)] P(yes), analysing the image once. All questions are parsed before any image work."""
    queries = [_parse(q) for q in questions]
    a = analyse(image)
    return np.array([answer_query(q, a) for q in queries], np.float64)


def score_record(record: QuestionSet | dict, image) -> np.ndarray:
    """[n_semantic + n_quality] P(yes) for every question of a record (semantic first, as `record.questions`)."""
    if not isinstance(record, QuestionSet):
        record = record_from_json(record)
    return answer_many([q.question for q in record.questions], image)
