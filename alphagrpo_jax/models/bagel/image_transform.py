"""BAGEL's image preprocessing (spec §5.6, upstream data/transforms.py `ImageTransform`).

Size rule (`target_size`), in upstream's order, with Python's banker's `round` everywhere:
  1. scale = max(min(max_size / long, 1), min_size / short); w', h' = snap(round(w*scale)), snap(round(h*scale)),
     snap(v) = max(stride, round(v / stride) * stride).
  2. If w'*h' > max_pixels / img_num: scale = max_pixels / img_num / (w'*h') and re-apply step 1's rounding to
     (w', h'). Quirk kept on purpose: that is an AREA ratio used as a LINEAR factor, so the result lands well
     below the pixel budget.
  3. If max(w', h') > max_size: scale = max_size / max(w', h') and re-apply the rounding.
The resize itself is PIL bicubic. Upstream calls torchvision `F.resize(pil, ..., BICUBIC, antialias=True)`,
which for PIL inputs (what the inferencer passes) returns the image unchanged when the size already matches
and otherwise calls exactly `PIL.Image.resize(size, BICUBIC)`, so the result is bit-identical. Only torch
tensor inputs would take torchvision's own antialiased bicubic kernel (differences of a few levels); we do not
accept tensors.
Pixels: ToTensor + Normalize(0.5, 0.5) = x/127.5 - 1, float32, kept HWC here ([H, W, 3] in [-1, 1]).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

DEFAULT_MAX_PIXELS = 14 * 14 * 9 * 1024  # 1,806,336


def _snap(value: float, stride: int) -> int:
    return max(stride, int(round(value / stride) * stride))


def _apply_scale(w: int, h: int, scale: float, stride: int) -> tuple[int, int]:
    return _snap(round(w * scale), stride), _snap(round(h * scale), stride)


def target_size(w: int, h: int, max_size: int, min_size: int, stride: int,
                max_pixels: int = DEFAULT_MAX_PIXELS, img_num: int = 1) -> tuple[int, int]:
    """(width, height) in pixels -> (width', height'), both multiples of `stride` (see module docstring)."""
    if w < 1 or h < 1:
        raise ValueError(f"image_transform.target_size: image size must be positive, got {w}x{h} (WxH)")
    scale = min(max_size / max(w, h), 1.0)
    scale = max(scale, min_size / min(w, h))
    nw, nh = _apply_scale(w, h, scale, stride)
    if nw * nh > max_pixels / img_num:
        nw, nh = _apply_scale(nw, nh, max_pixels / img_num / (nw * nh), stride)
    if max(nw, nh) > max_size:
        nw, nh = _apply_scale(nw, nh, max_size / max(nw, nh), stride)
    return nw, nh


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy; transparent images are composited on white (as upstream `pil_img2rgb`)."""
    if image.mode == "RGBA" or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def to_pixels(image: Image.Image) -> np.ndarray:
    """PIL image -> float32 [H, W, 3] in [-1, 1] (x/127.5 - 1)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image_transform.to_pixels: expected a PIL image, got {type(image).__name__}")
    return np.asarray(to_rgb(image), dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """Upstream `ImageTransform(max_image_size, min_image_size, image_stride, max_pixels)`."""
    max_size: int
    min_size: int
    stride: int
    max_pixels: int = DEFAULT_MAX_PIXELS

    def target_size(self, w: int, h: int, img_num: int = 1) -> tuple[int, int]:
        return target_size(w, h, self.max_size, self.min_size, self.stride, self.max_pixels, img_num)

    def resize(self, image: Image.Image, img_num: int = 1) -> Image.Image:
        """PIL bicubic resize to `target_size`; the image itself when no resize is needed."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"ImageTransform.resize: expected a PIL image, got {type(image).__name__}")
        size = self.target_size(*image.size, img_num=img_num)
        return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)

    def __call__(self, image: Image.Image, img_num: int = 1) -> np.ndarray:
        """RGB (alpha over white), resize, normalise: float32 [H', W', 3] in [-1, 1]."""
        return to_pixels(self.resize(to_rgb(image), img_num))


VAE_TRANSFORM = ImageTransform(1024, 512, 16)   # conditioning/edit images (inference)
VIT_TRANSFORM = ImageTransform(980, 224, 14)    # understanding images (inference)
VLM_EVAL_TRANSFORM = ImageTransform(980, 378, 14, max_pixels=2_007_040)  # VLM benchmarks / training yaml
# Named (VAE, ViT) transform pairs for an image a model reads back (SRR's first draw: task.srr.transforms;
# generate --transform). Plug-ins add theirs with `register_transform` (the toy world: "toy").
TRANSFORMS: dict[str, tuple[ImageTransform, ImageTransform]] = {"bagel": (VAE_TRANSFORM, VIT_TRANSFORM)}


def register_transform(name: str, vae: ImageTransform, vit: ImageTransform) -> None:
    """Adds the (VAE, ViT) pair `name` to TRANSFORMS (re-registering the same pair is a no-op)."""
    if TRANSFORMS.get(name, (vae, vit)) != (vae, vit):
        raise ValueError(f"image_transform.register_transform: {name!r} is already registered as another pair")
    TRANSFORMS[name] = (vae, vit)
