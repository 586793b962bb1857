"""BAGEL-style SFT data from the toy world: example kinds, layout plans, CFG dropout, packed rows (grain).

Kinds (mixture weights in the config; train-split prompts only, `prompts.split_of(spec) == "train"`):
  t2i         [prompt] -> noisy image
  think       [system] [prompt] [<think>plan</think> (CE)] -> noisy image rendered FROM THE PLAN; with
              p_wrong_plan the plan has one mistake (count / colour / shape / size / placement) and the image
              follows it, so a better plan (the RL text policy) shows up in the reward
  understand  [ViT image] [a decomposer question] -> "yes" / "no" (CE); half the images are wrong scenes and
              then the question is one the scene fails
  refine      [system] [wrong image: VAE then ViT] [reflection_prompt(prompt)] [<think>what is wrong + fix
              (CE)</think>] -> noisy image of the corrected scene (the wrong one is a perturbation of it)
The system prompt is the config's (`system_prompt`, ours by default; the release records it as
`think_system_prompt` and the pipeline and rollouts read it from there); the reflection prompt is
sampling/prompts.py's `reflection_prompt`, the one SRR rollouts use. CFG dropout as BAGEL (text p_drop_text,
images p_drop_image), shaped like the sampler's unconditional contexts: t2i -> [] ; think -> [system]; refine ->
[system][images] (text dropped) or [system][reflection prompt] (images dropped, no think).
Plans put each object in a cell of a 3x3 grid (rows top/middle/bottom, columns left/center/right); the scene
centres it there (>= 4 px inside the cell's third), so a correct plan's scene answers every question of its
prompt "yes", and the image is a deterministic function of the plan.
Row r of the dataset is a function of (seed, r): documents are drawn and appended while they fit the row;
a miss ends it (after `fill_retries` more draws). Long kinds miss more often, so the weights are DRAW
probabilities and the realised mix (logged by the trainer) leans to short kinds. Rows batch into a static
`PackedBatch` plus `image_id` (the train step draws one flow time per noisy image).
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
from PIL import Image

from alphagrpo_jax.data.pipeline import build_dataset
from alphagrpo_jax.models.bagel import packing
from alphagrpo_jax.models.bagel.config import BagelConfig
from alphagrpo_jax.models.bagel.pixel_ae import encode_pixels
from alphagrpo_jax.models.bagel.vae import patchify_latent
from alphagrpo_jax.sampling.prompts import GEN_THINK_SYSTEM_PROMPT, reflection_prompt
from alphagrpo_jax.toy import decompose, prompts, world
from alphagrpo_jax.toy.transforms import VIT_TRANSFORM

KINDS = ("t2i", "think", "understand", "refine")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
NUMBER_WORDS = decompose.NUMBER_WORDS
LOCATION_CELLS = {"left": lambda r, c: c == 0, "right": lambda r, c: c == 2, "top": lambda r, c: r == 0,
                  "bottom": lambda r, c: r == 2, "center": lambda r, c: (r, c) == (1, 1)}
RELATION_CELLS = {"left_of": lambda a, b: a[1] < b[1], "right_of": lambda a, b: a[1] > b[1],
                  "above": lambda a, b: a[0] < b[0], "below": lambda a, b: a[0] > b[0]}
KEY_MISTAKE = {"counting": "count", "position": "place", "location": "place", "size": "size",
               "two_objects": "count", "colors": "color", "single_object": "shape"}


@dataclasses.dataclass(frozen=True)
class PlanObj:
    color: str
    shape: str
    size: str
    cell: tuple[int, int]  # (row, col) in the 3x3 grid


def plan_body(plan) -> str:
    objs = ", ".join(f"{o.size} {o.color} {o.shape} at {ROWS[o.cell[0]]} {COLS[o.cell[1]]}" for o in plan)
    return f"{NUMBER_WORDS[len(plan) - 1]} shape{'s' if len(plan) > 1 else ''}: {objs}"


def plan_text(plan) -> str:
    return f"<think>{plan_body(plan)}</think>"


def _cells_ok(spec: prompts.PromptSpec, cells) -> bool:
    if spec.category == "location" and not LOCATION_CELLS[spec.objects[0].location](*cells[0]):
        return False
    return not spec.relation or RELATION_CELLS[spec.relation](cells[0], cells[1])


def sample_plan(spec: prompts.PromptSpec, rng: np.random.Generator) -> tuple:
    """A correct plan: the prompt's objects (sizes drawn where unspecified) in distinct cells that satisfy
    its location / relation."""
    objs = [(o.color, o.shape, o.size or world.SIZES[rng.integers(2)]) for o in spec.objects for _ in range(o.count)]
    while True:
        cells = [divmod(int(c), 3) for c in rng.choice(9, len(objs), replace=False)]
        if _cells_ok(spec, cells):
            return tuple(PlanObj(c, s, z, cell) for (c, s, z), cell in zip(objs, cells))


def render_plan(plan) -> world.Scene | None:
    """The scene of a plan: each object centred in its cell (moved inwards just enough to stay on the canvas),
    or None when two objects would touch (e.g. two large ones in neighbouring cells). Deterministic, so with
    think the image is a function of the plan text."""
    third = world.CANVAS / 3
    objs = []
    for o in plan:
        e = world.EXTENT[o.size]
        c = [min(max((k + 0.5) * third, e / 2), world.CANVAS - e / 2) for k in o.cell[::-1]]  # (x, y)
        objs.append(world.Obj(o.color, o.shape, o.size, (0.0, 0.0)).moved_to(round(c[0] - e / 2),
                                                                              round(c[1] - e / 2)))
    scene = world.Scene(tuple(objs))
    try:
        world.validate_scene(scene)
    except ValueError:
        return None
    return scene


def correct_scene(spec, rng):
    """(plan, scene) with a correct plan; plans with no layout (e.g. two large objects in adjacent cells) are
    redrawn."""
    while True:
        plan = sample_plan(spec, rng)
        scene = render_plan(plan)
        if scene is not None:
            return plan, scene


def failed_queries(spec, scene) -> list[decompose.Query]:
    return [q for q in decompose.semantic_queries(spec) if not decompose.scene_answer(q, scene)]


def _mistake(spec, plan, rng):
    """The plan with one mistake (the category's typical one half of the time), or None if it does not apply."""
    kinds = ["color", "shape", "count", "place", "size"]
    key = KEY_MISTAKE[spec.category]
    kind = key if rng.random() < 0.5 else kinds[rng.integers(len(kinds))]
    objs = list(plan)
    k = int(rng.integers(len(objs)))
    if kind in ("color", "shape"):
        pool = world.COLORS if kind == "color" else world.SHAPES
        others = [v for v in pool if v != getattr(objs[k], kind)]
        objs[k] = dataclasses.replace(objs[k], **{kind: others[rng.integers(len(others))]})
    elif kind == "count":
        if len(objs) > 1 and rng.random() < 0.5:
            del objs[k]
        else:
            free = [c for c in range(9) if divmod(c, 3) not in {o.cell for o in objs}]
            objs.append(dataclasses.replace(objs[k], cell=divmod(int(rng.choice(free)), 3)))
    elif kind == "size" and spec.category == "size":
        objs = [dataclasses.replace(o, size=p.size) for o, p in zip(objs, objs[::-1])]
    elif kind == "place" and spec.relation:
        objs[0], objs[1] = (dataclasses.replace(objs[0], cell=objs[1].cell),
                            dataclasses.replace(objs[1], cell=objs[0].cell))
    elif kind == "place" and spec.category == "location":
        used = {o.cell for o in objs}
        bad = [divmod(c, 3) for c in range(9) if not LOCATION_CELLS[spec.objects[0].location](*divmod(c, 3))
               and divmod(c, 3) not in used]
        objs[0] = dataclasses.replace(objs[0], cell=bad[rng.integers(len(bad))])
    else:
        return None
    return tuple(objs)


def wrong_scene(spec, rng):
    """(plan, scene) of a plan with one mistake whose scene fails at least one of the prompt's questions."""
    while True:
        plan = _mistake(spec, sample_plan(spec, rng), rng)
        scene = None if plan is None else render_plan(plan)
        if scene is not None and failed_queries(spec, scene):
            return plan, scene


def failure_phrase(q: decompose.Query) -> str:
    thing = f"{q.color} {q.shape}" if q.color else q.shape
    if q.kind == "exists":
        return f"no {thing}"
    if q.kind in ("count", "total"):
        noun = thing if q.kind == "count" else "shape"
        return f"not {NUMBER_WORDS[q.number - 1]} {noun}{'s' if q.number > 1 else ''}"
    if q.kind == "size":
        return f"the {thing} is not {q.value}"
    if q.kind == "location":
        return f"the {thing} is not {decompose.LOCATION_PHRASES[q.value]}"
    return f"the {thing} is not {decompose.RELATION_PHRASES[q.value]} the {q.other[0]} {q.other[1]}"


def reflection_text(spec, wrong: world.Scene, fix_plan) -> str:
    wrong_parts = "; ".join(failure_phrase(q) for q in failed_queries(spec, wrong))
    return f"<think>wrong: {wrong_parts}. fix: {plan_body(fix_plan)}</think>"


# ------------------------------------------------------------------------------------------------ examples

@dataclasses.dataclass(frozen=True)
class SFTDataConfig:
    seq_len: int = 512            # tokens per packed row
    rows: int = 4                 # rows per batch (this host)
    weights: tuple[float, ...] = (0.15, 0.6, 0.1, 0.15)  # draw probabilities, KINDS order
    p_wrong_plan: float = 0.3
    p_drop_text: float = 0.1
    p_drop_image: float = 0.3
    max_vae_per_row: int = 16
    max_vit_per_row: int = 8
    fill_retries: int = 0
    system_prompt: str = GEN_THINK_SYSTEM_PROMPT  # think/refine documents' system prompt (recorded in the release)

    def __post_init__(self):
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if len(self.weights) != len(KINDS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ValueError(f"toy/sft_data.py weights: expected {len(KINDS)} non-negative weights for {KINDS} "
                             f"with a positive sum, got {self.weights}")
        for f in ("p_wrong_plan", "p_drop_text", "p_drop_image"):
            if not 0 <= getattr(self, f) <= 1:
                raise ValueError(f"toy/sft_data.py {f}: expected a probability, got {getattr(self, f)}")


@functools.cache
def train_specs() -> tuple[prompts.PromptSpec, ...]:
    """Every train-split prompt (held-out combinations excluded), category by category."""
    return tuple(s for c in prompts.CATEGORIES for s in prompts.split_prompts("train", c))


@functools.cache
def _specs_by_category() -> dict[str, tuple]:
    return {c: tuple(s for s in train_specs() if s.category == c) for c in prompts.CATEGORIES}


def draw_spec(rng) -> prompts.PromptSpec:
    """Category uniform, then a prompt uniform within it (as toy/data.py)."""
    pool = _specs_by_category()[prompts.CATEGORIES[rng.integers(len(prompts.CATEGORIES))]]
    return pool[rng.integers(len(pool))]


# A part is ("text", str, loss) | ("vae", uint8 image, noisy) | ("vit", uint8 image).
def make_example(kind: str, rng, dc: SFTDataConfig) -> list[tuple]:
    """One document of `kind` as parts (text still untokenised)."""
    spec = draw_spec(rng)
    prompt = prompts.format_prompt(spec)
    system = ("text", dc.system_prompt, False)
    if kind == "t2i":
        _, scene = correct_scene(spec, rng)
        ctx = [] if rng.random() < dc.p_drop_text else [("text", prompt, False)]
        return ctx + [("vae", world.render(scene), True)]
    if kind == "think":
        plan, scene = wrong_scene(spec, rng) if rng.random() < dc.p_wrong_plan else correct_scene(spec, rng)
        ctx = [] if rng.random() < dc.p_drop_text else [("text", prompt, False), ("text", plan_text(plan), True)]
        return [system] + ctx + [("vae", world.render(scene), True)]
    if kind == "understand":
        yes = rng.random() < 0.5
        _, scene = correct_scene(spec, rng) if yes else wrong_scene(spec, rng)
        pool = decompose.semantic_queries(spec) if yes else failed_queries(spec, scene)
        q = pool[rng.integers(len(pool))]
        return [("vit", world.render(scene)), ("text", decompose.question_text(q), False),
                ("text", "yes" if yes else "no", True)]
    if kind == "refine":
        plan, target = correct_scene(spec, rng)
        wrong = None
        while wrong is None or not failed_queries(spec, wrong):
            try:
                wrong = world.perturb(target, world.PERTURBATIONS[rng.integers(len(world.PERTURBATIONS))], rng)
            except ValueError:  # no room for that perturbation here: draw another
                wrong = None
        drop_text, drop_image = rng.random() < dc.p_drop_text, rng.random() < dc.p_drop_image
        img = world.render(wrong)
        parts = [system]
        parts += [] if drop_image else [("vae", img, False), ("vit", img)]
        parts += [] if drop_text else [("text", reflection_prompt(prompt), False)]
        parts += [] if drop_text or drop_image else [("text", reflection_text(spec, wrong, plan), True)]
        return parts + [("vae", world.render(target), True)]
    raise ValueError(f"toy/sft_data.py kind: expected one of {KINDS}, got {kind!r}")


def corpus(seed: int, num_examples: int, dc: SFTDataConfig = SFTDataConfig()) -> list[str]:
    """Texts for training the tokenizer: every train prompt and the texts of `num_examples` examples."""
    rng = np.random.default_rng([seed, 1 << 20])
    texts = [dc.system_prompt] + [prompts.format_prompt(s) for s in train_specs()]
    for i in range(num_examples):
        texts += [p[1] for p in make_example(KINDS[i % len(KINDS)], rng, dc) if p[0] == "text"]
    return texts


def to_items(parts: list[tuple], encode) -> list[packing.Item]:
    items = []
    for p in parts:
        if p[0] == "text":
            items.append(packing.Text(tuple(encode(p[1])), loss=p[2]))
        elif p[0] == "vae":
            items.append(packing.VaeImage(p[1].astype(np.float32) / np.float32(127.5) - np.float32(1.0), noisy=p[2]))
        else:
            items.append(packing.VitImage(VIT_TRANSFORM(Image.fromarray(p[1]))))
    return items


class RowSource:
    """Random-access grain source: element r = one row of documents ([(kind, items)]), a function of
    (seed, r) only."""

    def __init__(self, cfg: BagelConfig, dc: SFTDataConfig, encode, seed: int, size: int = 2 ** 40):
        self.cfg, self.dc, self.encode, self.seed, self.size = cfg, dc, encode, seed, size
        self.p = np.asarray(dc.weights) / sum(dc.weights)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, r: int):
        rng = np.random.default_rng([self.seed, int(r)])
        docs, used, n_vae, n_vit, misses = [], 0, 0, 0, 0
        while misses <= self.dc.fill_retries:
            kind = KINDS[rng.choice(len(KINDS), p=self.p)]
            items = to_items(make_example(kind, rng, self.dc), self.encode)
            need = sum(packing.item_length(it, self.cfg) for it in items)
            vae = sum(isinstance(it, packing.VaeImage) for it in items)
            vit = sum(isinstance(it, packing.VitImage) for it in items)
            if (used + need > self.dc.seq_len or n_vae + vae > self.dc.max_vae_per_row
                    or n_vit + vit > self.dc.max_vit_per_row):
                if not docs and need > self.dc.seq_len:
                    raise ValueError(f"toy/sft_data.py: a {kind} example needs {need} tokens, more than "
                                     f"seq_len {self.dc.seq_len}")
                misses += 1
                continue
            docs.append((kind, items))
            used, n_vae, n_vit = used + need, n_vae + vae, n_vit + vit
        return docs


def pack_rows(rows, cfg: BagelConfig, dc: SFTDataConfig) -> dict:
    """Rows of documents -> numpy batch: PackedBatch fields (latent_x0 filled by the pixel autoencoder) plus
    image_id [B, L] (noisy image per latent token, -1 elsewhere), kind_counts [len(KINDS)], tokens."""
    if cfg.vae.kind != "pixel":
        raise ValueError("toy/sft_data.py: the host-side latents need the pixel autoencoder (cfg.vae.kind)")
    vae_items = [it for row in rows for _, doc in row for it in doc if isinstance(it, packing.VaeImage)]
    tokens = {}
    if vae_items:
        pix = np.stack([it.pixels for it in vae_items])
        z = encode_pixels(pix, cfg.vae.downsample, cfg.vae.scale_factor, cfg.vae.shift_factor)
        lat = patchify_latent(z, cfg.latent_patch_size)
        tokens = {id(it): lat[i] for i, it in enumerate(vae_items)}
    packed = packing.pack([[doc for _, doc in row] for row in rows], cfg, vae_tokens=tokens, length=dc.seq_len,
                          vit_bucket=(cfg.vit.image_size // cfg.vit.patch_size) ** 2)
    b = packed.batch
    n_vit = len(rows) * dc.max_vit_per_row
    pad = ((0, n_vit - b.vit_patches.shape[0]),) + ((0, 0),) * (b.vit_patches.ndim - 1)
    fields = {f.name: getattr(b, f.name) for f in dataclasses.fields(b)}
    fields.update(vit_patches=np.pad(b.vit_patches, pad), vit_pos=np.pad(b.vit_pos, pad[:2]),
                  vit_valid=np.pad(b.vit_valid, pad[:2]))
    counts = np.zeros(len(KINDS), np.int32)
    for row in rows:
        for kind, _ in row:
            counts[KINDS.index(kind)] += 1
    return dict(batch=fields, image_id=np.where(b.mse_mask, packed.image_id, -1).astype(np.int32),
                kind_counts=counts, tokens=np.asarray(packed.lengths.sum(), np.int32))


def sft_dataset(cfg: BagelConfig, dc: SFTDataConfig, encode, seed: int, shard_index: int | None = None,
                shard_count: int | None = None):
    """grain.IterDataset of packed batches (checkpointable: iterator get_state / set_state)."""
    return build_dataset(RowSource(cfg, dc, encode, seed), batch_size=dc.rows, shuffle=False,
                         batch_fn=lambda rows: pack_rows(rows, cfg, dc), shard_index=shard_index,
                         shard_count=shard_count, read_threads=2)
