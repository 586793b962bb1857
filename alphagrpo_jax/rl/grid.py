"""A PNG grid of samples with their think text and reward (for the workdir and the docs)."""
from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from alphagrpo_jax import paths


def sample_grid(images: np.ndarray, captions: list[str], path: str, columns: int = 4, scale: int = 4,
                text_width: int = 30, text_lines: int = 7) -> np.ndarray:
    """images [N, H, W, 3] uint8 -> one PNG at `path` (local or gs://): each cell the (upscaled, nearest) image
    over its caption. Returns the grid [H', W', 3] uint8 (e.g. for TensorBoard)."""
    n, h, w, _ = images.shape
    font = ImageFont.load_default()
    line_h = 11
    cell_w, cell_h = max(w * scale, text_width * 6 + 8), h * scale + text_lines * line_h + 8
    rows = -(-n // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        canvas.paste(Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST), (x + 4, y + 4))
        lines = textwrap.wrap(captions[i], text_width)[:text_lines]
        for j, line in enumerate(lines):
            draw.text((x + 4, y + h * scale + 6 + j * line_h), line, fill="black", font=font)
    paths.save_image(path, canvas)
    return np.asarray(canvas)
