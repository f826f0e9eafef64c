"""Figures that the examples write beside their results (never shipped with a model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from ..image_processing_unimp import load_rgb_image


def image_grid(rows: Sequence[Sequence[Any]], scale: int = 3, padding: int = 2) -> Image.Image:
    """One RGB picture of rows of images (PIL or image dicts), each enlarged `scale` times, on a white ground."""
    pictures = [[load_rgb_image(image, f"row {r}, column {c}") for c, image in enumerate(row)]
                for r, row in enumerate(rows)]
    width = max(picture.width for row in pictures for picture in row) * scale
    height = max(picture.height for row in pictures for picture in row) * scale
    columns = max(len(row) for row in pictures)
    grid = Image.new("RGB", (columns * (width + padding) + padding, len(pictures) * (height + padding) + padding),
                     "white")
    for r, row in enumerate(pictures):
        for c, picture in enumerate(row):
            enlarged = picture.resize((width, height), Image.Resampling.NEAREST)
            grid.paste(enlarged, (padding + c * (width + padding), padding + r * (height + padding)))
    return grid


__all__ = ["image_grid"]
