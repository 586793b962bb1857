"""Verifier: >= 99% thresholded accuracy on ground-truth and wrong images, calibrated partial scores,
quality questions, connected components, and the record-level API."""
import collections
import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from alphagrpo_jax.toy import decompose as D
from alphagrpo_jax.toy import prompts, verifier, world

QUALITY_TEXT = {name: text for name, (text, _) in D.QUALITY.items()}


def _cases(seed=0, per_category=8, eval_per_category=4):
    """(record, scene, kind) for ground truth and every perturbation of one scene per prompt."""
    rng = np.random.default_rng(seed)
    specs = prompts.prompt_set("train", per_category, seed) + prompts.prompt_set("eval", eval_per_category, seed)
    for spec in specs:
        rec = D.decompose(spec)
        scene = prompts.sample_scene(spec, rng)
        yield rec, scene, "gt"
        for kind in world.PERTURBATIONS:
            try:
                yield rec, world.perturb(scene, kind, rng), kind
            except ValueError:  # no room for that perturbation in this layout
                continue


def _accuracy(transform=lambda img: img):
    right, truths = collections.defaultdict(list), collections.defaultdict(list)
    for rec, scene, kind in _cases():
        ps = verifier.score_record(rec, transform(world.render(scene)))
        for q, p in zip(rec.semantic, ps):
            truth = D.scene_answer(q.question, scene)
            group = "gt" if kind == "gt" else "perturbed"
            right[group].append((p > 0.5) == truth)
            truths[group].append(truth)
    return {g: float(np.mean(v)) for g, v in right.items()}, {g: len(v) for g, v in right.items()}, truths


def test_accuracy_on_ground_truth_and_wrong_images():
    acc, counts, truths = _accuracy()
    print(f"verifier accuracy: {acc} over {counts} questions")
    assert counts["gt"] >= 300 and counts["perturbed"] >= 2000
    assert 0.2 < 1 - np.mean(truths["perturbed"]) < 0.8  # wrong images really make many answers "no"
    assert all(truths["gt"])
    assert acc["gt"] >= 0.99 and acc["perturbed"] >= 0.99


def test_accuracy_is_scale_invariant():
    acc, _, _ = _accuracy(lambda img: img.repeat(2, 0).repeat(2, 1))  # 64x64, nearest upsampling
    assert acc["gt"] >= 0.99 and acc["perturbed"] >= 0.99


def test_accuracy_survives_lossless_chroma_jpeg():
    def jpeg444(img):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95, subsampling=0)
        return np.asarray(Image.open(buf).convert("RGB"))
    acc, _, _ = _accuracy(jpeg444)
    assert acc["gt"] >= 0.99 and acc["perturbed"] >= 0.99


def _erase_right(shape, size, question):
    scene = world.Scene((world.Obj("red", shape, size, (16.5, 16.5)),))
    img = world.render(scene)
    x0, _, x1, _ = scene.objects[0].box
    out = []
    for k in range(x1 - x0 + 1):
        cut = img.copy()
        cut[:, x1 - k:x1] = 0
        out.append(verifier.answer(question, cut))
    return np.array(out)


@pytest.mark.parametrize("shape", world.SHAPES)
@pytest.mark.parametrize("size", world.SIZES)
def test_erasing_an_object_lowers_its_score_smoothly(shape, size):
    p = _erase_right(shape, size, f"Is there a red {shape}?")
    assert p[0] > 0.99 and p[-1] < 0.01 and p.max() == p[0]
    assert np.any((p > 0.1) & (p < 0.9)), p  # a partly erased object scores in between
    if shape != "triangle":  # a clipped triangle can become a right triangle again, so only these are monotone
        assert np.all(np.diff(p) <= 1e-9), p


def test_position_score_follows_the_margin():
    p = []
    for x0 in range(20):
        obj = world.Obj("red", "circle", "small", (0.0, 0.0)).moved_to(x0, 10)
        p.append(verifier.answer("Is the red circle on the left side of the image?", world.render(world.Scene((obj,)))))
    p = np.array(p)
    assert p[0] > 0.99 and p[-1] < 0.01 and np.all(np.diff(p) <= 1e-9)
    assert np.any((p > 0.1) & (p < 0.9))


def test_count_with_a_partial_extra_object_is_in_between():
    scene = world.Scene((world.Obj("blue", "square", "large", (8.5, 8.5)),
                         world.Obj("blue", "square", "large", (22.5, 22.5))))
    img = world.render(scene)
    q1, q2 = "Is there exactly one blue square?", "Are there exactly two blue squares?"
    full = verifier.answer_many([q1, q2], img)
    partial = img.copy()
    partial[16:29, 22:29] = 0  # erase half of the second square
    half = verifier.answer_many([q1, q2], partial)
    gone = img.copy()
    gone[16:29, 16:29] = 0
    none = verifier.answer_many([q1, q2], gone)
    assert full[1] > 0.99 and none[0] > 0.99
    assert full[1] > half[1] > none[1] and none[0] > half[0] > full[0]
    assert 0.05 < half[0] < 0.95


def _quality(img):
    return dict(zip(QUALITY_TEXT, verifier.answer_many(list(QUALITY_TEXT.values()), img)))


def test_quality_questions():
    rng = np.random.default_rng(0)
    scene = world.Scene((world.Obj("red", "circle", "large", (10.5, 10.5)),
                         world.Obj("blue", "square", "small", (24.5, 22.5))))
    img = world.render(scene)
    clean = _quality(img)
    assert min(clean.values()) > 0.98, clean
    blurred = _quality(np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(1))))
    assert blurred["edges"] < 0.5 and blurred["background"] > 0.5
    noisy = _quality(np.clip(img + rng.normal(0, 30, img.shape), 0, 255).astype(np.uint8))
    assert noisy["background"] < 0.5
    inside = img.astype(float)
    mask = img.any(-1)
    inside[mask] += rng.normal(0, 40, (mask.sum(), 3))
    inside = _quality(np.clip(inside, 0, 255).astype(np.uint8))
    assert inside["fill"] < 0.5 and inside["background"] > 0.5 and inside["stray"] > 0.5
    speck = img.copy()
    speck[2:4, 28:30] = world.PALETTE["green"]
    speck = _quality(speck)
    assert speck["stray"] < 0.5 and speck["forms"] > 0.9 and speck["edges"] > 0.9
    grey = img.copy()
    grey[27:30, 1:4] = 128  # an off-palette patch is a blob too
    assert _quality(grey)["stray"] < 0.5
    junk = img.copy()
    junk[26:30, 2:12] = world.PALETTE["green"]
    junk[22:26, 2:4] = world.PALETTE["green"]  # an L: no circle, square or triangle
    junk = _quality(junk)
    assert junk["forms"] < 0.5 and junk["stray"] < 0.5


def _reference_labels(cls):
    """Breadth-first 4-connected labelling, for comparison."""
    h, w = cls.shape
    lab = -np.ones((h, w), int)
    n = 0
    for y in range(h):
        for x in range(w):
            if cls[y, x] > 0 and lab[y, x] < 0:
                stack, lab[y, x] = [(y, x)], n
                while stack:
                    cy, cx = stack.pop()
                    for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                        if 0 <= ny < h and 0 <= nx < w and lab[ny, nx] < 0 and cls[ny, nx] == cls[cy, cx]:
                            lab[ny, nx] = n
                            stack.append((ny, nx))
                n += 1
    return lab, n


def test_connected_components_match_breadth_first_search():
    rng = np.random.default_rng(0)
    spiral = np.zeros((16, 16), int)
    spiral[1, 1:15] = spiral[1:15, 14] = spiral[14, 1:15] = spiral[3:15, 1] = spiral[3, 1:12] = 1
    spiral[3:12, 11] = spiral[11, 4:12] = spiral[5:12, 4] = spiral[5, 4:9] = 1
    for cls in [spiral] + [rng.integers(0, 3, (20, 24)) * (rng.random((20, 24)) < p) for p in (0.4, 0.6, 0.8)]:
        got, n = verifier.label_components(cls)
        want, m = _reference_labels(cls)
        assert n == m
        # same partition: labels correspond one to one
        pairs = set(zip(got[cls > 0].tolist(), want[cls > 0].tolist()))
        assert len(pairs) == n and (got[cls <= 0] == -1).all()


def test_record_api_and_errors():
    rec = D.decompose(prompts.parse("two green triangles"))
    scene = prompts.sample_scene(prompts.parse("two green triangles"), np.random.default_rng(0))
    img = world.render(scene)
    ps = verifier.score_record(rec, img)
    assert ps.shape == (len(rec.questions),)
    np.testing.assert_allclose(ps, [verifier.answer(q.question, img) for q in rec.questions])
    np.testing.assert_allclose(verifier.score_record(rec.to_json(), Image.fromarray(img)), ps)
    assert (ps > 0.98).all()
    with pytest.raises(D.UnknownQuestion, match="Is there a dog"):
        verifier.answer_many(["Is there a circle?", "Is there a dog?"], img)
    with pytest.raises(ValueError, match="uint8"):
        verifier.answer("Is there a circle?", img.astype(np.float32))
    with pytest.raises(ValueError, match="square image"):
        verifier.answer("Is there a circle?", img[:, :20])


def test_a_canvas_filled_with_the_colour_is_not_the_object():
    rec = D.decompose(prompts.parse("a red square"))
    flood = np.zeros((32, 32, 3), np.uint8)
    flood[..., 0] = 255
    ps = verifier.score_record(rec, flood)
    assert (ps[:len(rec.semantic)] < 0.01).all()
    assert dict(zip([q.question for q in rec.quality], ps[len(rec.semantic):]))[QUALITY_TEXT["stray"]] < 0.01
