"""A release's sampling settings: `generation_config.json` in the release folder, over the library defaults.

    {"height": 32, "width": 32, "num_timesteps": 25, "cfg_text": 2.0, "cfg_interval": [0.4, 1.0], "shift": 3.0,
     "think_tokens": 96, "think_temperature": 0.3, "transform": "toy", "plugins": ["alphagrpo_jax.toy.plugin"]}

Every key is optional. `resolve` gives each setting from (first that is set): the caller's value (a command-line
flag), the release's generation_config.json, the library default below. Library defaults are BAGEL-7B's
inference settings, except the image side (the largest the release's latent grid holds, at most 1024 px) and the
shift (the release's `inference_timestep_shift`). `plugins` are modules that register the `transform` name.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from alphagrpo_jax import paths
from alphagrpo_jax.errors import UsageError
from alphagrpo_jax.models.bagel import image_transform
from alphagrpo_jax.sampling import context as ctx_lib
from alphagrpo_jax.sampling.prompts import REFLECTION_PROMPT, VLM_THINK_SYSTEM_PROMPT, think_system_prompt

FILE = "generation_config.json"


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    height: int | None = None            # px; None = the largest side the release's latent grid holds, <= 1024
    width: int | None = None
    num_timesteps: int = 50              # timestep grid points (steps = this - 1)
    cfg_text: float = 4.0
    cfg_img: float | None = None         # None: 2.0 when editing, else 1.0 (Pipeline.generate_images)
    cfg_interval: tuple[float, float] = (0.4, 1.0)
    shift: float | None = None           # None = the release's inference_timestep_shift
    think_tokens: int = 1024
    think_temperature: float = 0.3
    cache_size: int | None = None        # KV slots per sample; None = what the context needs (`cache_size_for`)
    transform: str = "bagel"             # image_transform.TRANSFORMS name for input images
    plugins: tuple[str, ...] = ()        # modules that register `transform`


FIELDS = {f.name for f in dataclasses.fields(GenerationConfig)}


def read(release_dir: str) -> dict:
    """The release's generation_config.json as a dict of known keys ({} when the file is absent)."""
    path = paths.join(release_dir, FILE)
    if not paths.exists(path):
        return {}
    try:
        d = json.loads(paths.read_text(path))
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict):
        raise UsageError(f"{path}: expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - FIELDS)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; expected some of {sorted(FIELDS)}")
    if "cfg_interval" in d:
        d["cfg_interval"] = tuple(d["cfg_interval"])
    if "plugins" in d:
        d["plugins"] = tuple(d["plugins"])
    return d


def write(folder: str, settings: GenerationConfig | dict) -> str:
    """Writes generation_config.json (keys whose value is None are left out: the reader's default applies)."""
    d = dataclasses.asdict(settings) if isinstance(settings, GenerationConfig) else dict(settings)
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}
    unknown = sorted(set(d) - FIELDS)
    if unknown:
        raise ValueError(f"generation config: unknown key {unknown[0]!r}; expected some of {sorted(FIELDS)}")
    path = paths.join(folder, FILE)
    paths.write_text(path, json.dumps(d, indent=1) + "\n")
    return path


def resolve(release_dir: str, cfg, **given) -> GenerationConfig:
    """Settings for `release_dir` (its BagelConfig `cfg`): `given` values that are not None win, then the file's,
    then the defaults; height/width/shift are filled from the release when still unset."""
    values = {**read(release_dir), **{k: v for k, v in given.items() if v is not None}}
    g = GenerationConfig(**values)
    side = min(1024, cfg.max_latent_size * cfg.latent_downsample)
    return dataclasses.replace(g, height=g.height or side, width=g.width or side,
                               shift=cfg.inference_timestep_shift if g.shift is None else g.shift)


def check_size(cfg, height: int, width: int, where: str = "--height/--width") -> None:
    """An image size the release can draw, or a one-line UsageError naming the limit (before anything compiles)."""
    d, m = cfg.latent_downsample, cfg.max_latent_size
    if height < d or width < d or height % d or width % d:
        raise UsageError(f"{where}: {height}x{width} px is not drawable: sides must be positive multiples of the "
                         f"latent downsample {d} px")
    if height // d > m or width // d > m:
        raise UsageError(f"{where}: {height}x{width} px is a {height // d}x{width // d} latent grid, beyond the "
                         f"release's max_latent_size {m} (at most {m * d}x{m * d} px)")


def context_cache_size(pipe, prompts, *, think: bool, think_tokens: int, image=None, understand_tokens=None,
                       refine_size=None, reflection: str = REFLECTION_PROMPT) -> int:
    """KV slots the longest context of a generate call needs: [system] [input image] [prompt] + think tokens;
    with `understand_tokens`, [system] [ViT image] [question] + the answer; with `refine_size` (H, W), also SRR's
    redraw context [system] [own image] [reflection prompt] + think tokens (sampling/srr.py)."""
    from alphagrpo_jax.sampling.srr import srr_items  # deferred: srr imports the pipeline

    cfg, text = pipe.cfg, pipe._text
    if understand_tokens is not None:
        vit = ctx_lib.VitImage(pipe.vit_transform(image_transform.to_rgb(image)))
        system = [text(VLM_THINK_SYSTEM_PROMPT)] if think else []
        return ctx_lib.cache_size_for([system + [vit, text(p)] for p in prompts], cfg, understand_tokens)
    system = [text(think_system_prompt(cfg))] if think else []
    img_items = pipe.condition_items(image)[0] if image is not None else []
    need = ctx_lib.cache_size_for([system + img_items + [text(p)] for p in prompts], cfg, think_tokens if think else 0)
    if refine_size is not None:
        blank = np.zeros((*refine_size, 3), np.uint8)
        rows = [srr_items(text, p, blank, pipe.vae_transform, pipe.vit_transform, think_system_prompt(cfg),
                          reflection)[0] for p in prompts]
        need = max(need, ctx_lib.cache_size_for(rows, cfg, think_tokens))
    return need
