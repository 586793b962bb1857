"""World: rendering is exact and deterministic, sampled scenes satisfy their spec, perturbations stay valid."""
import numpy as np
import pytest

from alphagrpo_jax.toy import prompts, world
from alphagrpo_jax.toy.decompose import scene_answer, semantic_queries


def _colours(img):
    return {tuple(int(v) for v in c) for c in img.reshape(-1, 3)}


def test_render_is_exact_palette_boxes():
    objs = tuple(world.Obj(c, s, z, (0.0, 0.0)) for c, s, z in
                 (("red", "circle", "small"), ("cyan", "square", "large"), ("white", "triangle", "large")))
    scene = world.Scene((objs[0].moved_to(1, 2), objs[1].moved_to(12, 0), objs[2].moved_to(10, 17)))
    world.validate_scene(scene)
    img = world.render(scene)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert _colours(img) == {world.BACKGROUND, world.PALETTE["red"], world.PALETTE["cyan"], world.PALETTE["white"]}
    for o in scene.objects:  # every shape fills exactly its box's extent in both axes
        ys, xs = np.nonzero((img == world.PALETTE[o.color]).all(-1))
        x0, y0, x1, y1 = o.box
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
        assert ((xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2) == o.centre


def test_rendering_and_sampling_are_deterministic():
    spec = prompts.parse("three yellow triangles")
    a = [world.render(prompts.sample_scene(spec, np.random.default_rng(7))) for _ in range(2)]
    b = world.render(prompts.sample_scene(spec, np.random.default_rng(8)))
    np.testing.assert_array_equal(a[0], a[1])
    assert not np.array_equal(a[0], b)


def test_every_prompt_has_a_valid_scene_that_satisfies_it():
    rng = np.random.default_rng(0)
    for category in prompts.CATEGORIES:
        for spec in prompts.enumerate_prompts(category)[::3]:
            scene = prompts.sample_scene(spec, rng)
            world.validate_scene(scene)
            assert len(scene.objects) == sum(o.count for o in spec.objects)
            for q in semantic_queries(spec):
                assert scene_answer(q, scene), (prompts.format_prompt(spec), q)


def test_scene_json_round_trip():
    scene = prompts.sample_scene(prompts.parse("a small red circle and a large blue square"),
                                 np.random.default_rng(3))
    assert world.Scene.from_json(scene.to_json()) == scene


@pytest.mark.parametrize("kind", world.PERTURBATIONS)
def test_perturbations_are_valid_and_change_the_scene(kind):
    spec = prompts.parse("a red circle to the left of a blue square")
    for seed in range(10):
        rng = np.random.default_rng(seed)
        scene = prompts.sample_scene(spec, rng)
        out = world.perturb(scene, kind, rng)
        world.validate_scene(out)
        assert out != scene
        assert len(out.objects) == len(scene.objects) + {"add": 1, "remove": -1}.get(kind, 0)


def test_bad_inputs_name_the_field():
    with pytest.raises(ValueError, match="Obj.color"):
        world.Obj("orange", "circle", "small", (5.0, 5.0))
    overlapping = world.Scene((world.Obj("red", "circle", "small", (5.5, 5.5)),
                               world.Obj("blue", "circle", "small", (8.5, 5.5))))
    with pytest.raises(ValueError, match="overlaps"):
        world.validate_scene(overlapping)
    with pytest.raises(ValueError, match="no valid layout"):
        world.place([world.Wanted("red", "square", "large", "center")] * 2, np.random.default_rng(0), tries=3)
