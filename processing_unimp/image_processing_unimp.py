"""Reading item images (PIL, file path or `datasets.Image` dict) as RGB, and the default image processor."""

from __future__ import annotations

import io
import os
from typing import Any

from PIL import Image, UnidentifiedImageError
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil


def make_image_processor(image_size: int = 224) -> CLIPImageProcessorPil:
    """A CLIP-style image processor (resize, centre crop, normalise) that needs only PIL and numpy."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )


def _open(value: Any) -> Image.Image:
    """Open an image given as a PIL image, a path, or a `{"bytes", "path"}` dict."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return Image.open(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return Image.open(value["path"])
        raise ValueError("the image dict has neither `bytes` nor `path`")
    if isinstance(value, (str, os.PathLike)):
        return Image.open(value)
    raise TypeError(f"expected a PIL image, a path or a {{'bytes', 'path'}} dict, got {type(value).__name__}")


def load_rgb_image(value: Any, item_id: str) -> Image.Image:
    """Read an item's image as RGB; transparent images are composited on white, other modes converted.

    Raises a `ValueError` naming the item when the image cannot be read or decoded.
    """
    try:
        image = _open(value)
        image.load()
    except (OSError, ValueError, TypeError, UnidentifiedImageError) as error:
        raise ValueError(f"Item {item_id!r}: field `image` could not be read ({error}).") from error
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
