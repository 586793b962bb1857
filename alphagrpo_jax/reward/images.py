"""Images to and from `data:` URIs, the way OpenAI-compatible chat APIs take them.

Input images are uint8 HWC numpy arrays (C in 1, 3, 4; HW also accepted) or PIL images.
"""
from __future__ import annotations

import base64
import binascii
import io
import re

import numpy as np
from PIL import Image

IMAGE_FORMATS = ("jpeg", "png")
_DATA_URI = re.compile(r"^data:image/(?P<fmt>[a-zA-Z0-9.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def to_pil(image, where: str = "image") -> Image.Image:
    """A PIL RGB image from a PIL image or a uint8 [H, W, C] / [H, W] array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 pixels in [0, 255], got dtype {arr.dtype} "
                         "(convert float images with (x * 255).round().clip(0, 255).astype(np.uint8))")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(f"{where}: expected shape [H, W, C] with C in (1, 3, 4) (channels last), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")


def encode_data_uri(image, fmt: str = "jpeg", quality: int = 95, where: str = "image") -> str:
    """`data:image/<fmt>;base64,...` for one image. JPEG `quality` in 1..100; PNG is lossless."""
    fmt = fmt.lower()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {IMAGE_FORMATS}, got {fmt!r}")
    pil = to_pil(image, where)
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=int(quality))
    else:
        pil.save(buf, format="PNG")
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_data_uri(uri: str) -> Image.Image:
    """The PIL image (RGB) inside a base64 `data:image/...` URI; ValueError if it is not one."""
    m = _DATA_URI.match(uri) if isinstance(uri, str) else None
    if m is None:
        head = uri[:40] if isinstance(uri, str) else type(uri).__name__
        raise ValueError(f"image_url: expected 'data:image/<fmt>;base64,...', got {head!r}")
    try:
        raw = base64.b64decode(m["data"], validate=True)
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (binascii.Error, OSError) as e:
        raise ValueError(f"image_url: could not decode the {m['fmt']} payload: {e}") from None
    return img.convert("RGB")
