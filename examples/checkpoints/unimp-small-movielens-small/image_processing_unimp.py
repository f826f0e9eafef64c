"""Reading item images (PIL, file path or `datasets.Image` dict) as RGB, and the default image processor.

Every image is bounded before it is decoded: its header gives its size, and one of more than `MAX_IMAGE_PIXELS`
pixels is refused before any pixel is decompressed or resized (PIL's own decompression-bomb guard stays on), or,
for a trusted local caller (`downscale=True`), downscaled to that many pixels (a JPEG already while it is decoded).
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

from PIL import Image, UnidentifiedImageError
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

MAX_IMAGE_PIXELS = 4096 * 4096
"""The most pixels an item image may have (16.8 M); larger ones are refused from their header, before decoding."""


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


class ImageTooLargeError(ValueError):
    """An image over a byte or pixel limit; its message names the item and the limit."""


def check_image_pixels(image: Image.Image, item_id: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Raise `ImageTooLargeError` when `image` (opened, perhaps not yet decoded) has more than `max_pixels`."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"Item {item_id!r}: field `image` is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels; send a smaller image."
        )


def _downscaled(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """`image` resized to at most `max_pixels` pixels, its aspect ratio kept (a JPEG is decoded at 1/2, 1/4 or 1/8
    scale on the way; PIL reduces by a whole factor first, then box-filters the rest)."""
    if max_pixels is None or image.width * image.height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (image.width * image.height))
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    if size[0] * size[1] > max_pixels:  # a very thin image: its short side stays one pixel
        size = (min(size[0], max_pixels), min(size[1], max_pixels))
    image.draft(None, size)  # JPEG only; never smaller than `size`
    if image.size == size:
        return image
    if image.mode.startswith("I;16"):  # PIL cannot reduce 16-bit modes; 32-bit "I" keeps every value
        image = image.convert("I")
    return image.resize(size, Image.Resampling.BOX, reducing_gap=1.0)


def load_rgb_image(
    value: Any, item_id: str, max_pixels: int | None = MAX_IMAGE_PIXELS, downscale: bool = False
) -> Image.Image:
    """Read an item's image as RGB; transparent images are composited on white, other modes converted.

    An image of more than `max_pixels` pixels is refused from its header, before it is decoded, or with `downscale`
    (a trusted local caller's photo) reduced to `max_pixels`. Raises a `ValueError` naming the item when the image
    is refused or cannot be read or decoded.
    """
    try:
        image = _open(value)
        if downscale:
            image = _downscaled(image, max_pixels)
        check_image_pixels(image, item_id, max_pixels)
        image.load()
        check_image_pixels(image, item_id, max_pixels)  # a format may pick a larger frame when it decodes
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:  # PIL's guard, from the header
        raise ImageTooLargeError(f"Item {item_id!r}: field `image` is over the pixel limit ({error})") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"Item {item_id!r}: field `image` could not be read (not an image PIL can decode).") from error
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Item {item_id!r}: field `image` could not be read ({error}).") from error
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
