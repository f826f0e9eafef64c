"""The VQ image tokenizer: item images <-> grids of discrete codes, with a diffusers `VQModel`.

UniMP generates an image as a sequence of `<img_k>` tokens, one per cell of the VQ code grid, read row by row;
the VQ decoder turns the codes back into pixels. `add_image_codes` writes each catalogue item's codes into an
`image_codes` column, which the processor's generate_image template prints after the item's `<answer>`.
diffusers is imported only under `is_diffusers_available()`, so a model without an image tokenizer loads from the Hub
without it (transformers' remote-code import check skips such guarded imports).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.utils import is_diffusers_available

from .image_processing_unimp import load_rgb_image

IMAGE_TOKENIZER_FOLDER = "image_tokenizer"
"""The subfolder of a saved UniMP model that holds its VQ image tokenizer."""


def load_image_tokenizer(path: str | os.PathLike, **kwargs: Any):
    """A `diffusers.VQModel` saved with `save_pretrained` (a folder, or a Hub repo with `subfolder=`), in eval mode."""
    if is_diffusers_available():  # guarded so that a Hub load of a model without an image tokenizer needs no diffusers
        from diffusers import VQModel

        return VQModel.from_pretrained(path, **kwargs).eval()
    raise ImportError(f"Loading the image tokenizer at {path} needs diffusers: pip install diffusers")


def code_grid_size(vq) -> tuple[int, int]:
    """(height, width) of the code grid: the image side halved once per down block after the first."""
    side = vq.config.sample_size // 2 ** (len(vq.config.block_out_channels) - 1)
    return side, side


def images_to_tensor(images: Sequence[Any], size: int, channels: int, item_ids: Sequence[str] | None = None
                     ) -> torch.Tensor:
    """Images (PIL, paths or `{"bytes", "path"}` dicts) as a `(n, channels, size, size)` tensor in [-1, 1].

    One channel reads the images as grayscale; images of another size are resized (bicubic).
    """
    mode = "L" if channels == 1 else "RGB"
    item_ids = item_ids or [f"#{index}" for index in range(len(images))]
    arrays = []
    for image, item_id in zip(images, item_ids):
        picture = load_rgb_image(image, item_id).convert(mode)
        if picture.size != (size, size):
            picture = picture.resize((size, size), Image.Resampling.BICUBIC)
        array = np.asarray(picture, dtype=np.float32)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0


def tokenizer_pixels(vq, images: Sequence[Any], item_ids: Sequence[str] | None = None) -> torch.Tensor:
    """Images as the pixel tensor that `vq` encodes: its `sample_size` and number of input channels."""
    return images_to_tensor(images, vq.config.sample_size, vq.config.in_channels, item_ids)


def tensor_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """A `(n, C, H, W)` tensor in [-1, 1] as PIL images (grayscale for one channel)."""
    array = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    if array.shape[1] == 1:
        return [Image.fromarray(image[0], mode="L") for image in array]
    return [Image.fromarray(image.transpose(1, 2, 0), mode="RGB") for image in array]


@torch.no_grad()
def encode_pixels(vq, pixels: torch.Tensor) -> torch.Tensor:
    """Codes of a `(n, C, S, S)` pixel tensor in [-1, 1]: `(n, h * w)` long, row by row."""
    device = next(vq.parameters()).device
    latents = vq.encode(pixels.to(device, next(vq.parameters()).dtype)).latents
    indices = vq.quantize(latents)[2][2]
    return indices.reshape(pixels.shape[0], -1).long().cpu()


@torch.no_grad()
def decode_pixels(vq, codes: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Pixels `(n, C, S, S)` in [-1, 1] of codes `(n, h * w)` or `(n, h, w)`."""
    height, width = grid or code_grid_size(vq)
    codes = torch.as_tensor(codes, dtype=torch.long).reshape(-1, height * width)
    size = vq.config.num_vq_embeddings
    if codes.numel() and not (0 <= int(codes.min()) and int(codes.max()) < size):
        raise ValueError(f"Image codes must lie in [0, {size}); got {int(codes.min())}..{int(codes.max())}.")
    device = next(vq.parameters()).device
    shape = (codes.shape[0], height, width, vq.config.vq_embed_dim or vq.config.latent_channels)
    quantized = vq.quantize.get_codebook_entry(codes.to(device).reshape(-1), shape)
    return vq.decode(quantized, force_not_quantize=True).sample.clamp(-1, 1).cpu()


def encode_image_codes(vq, images: Sequence[Any], batch_size: int = 256, item_ids: Sequence[str] | None = None
                       ) -> torch.Tensor:
    """Codes of images (PIL, paths or image dicts): a `(n, h * w)` LongTensor, row by row.

    `item_ids` name the images in the error raised for one that cannot be read.
    """
    images = list(images)
    item_ids = list(item_ids) if item_ids is not None else [f"#{index}" for index in range(len(images))]
    codes = [
        encode_pixels(vq, tokenizer_pixels(vq, images[start : start + batch_size],
                                           item_ids[start : start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    height, width = code_grid_size(vq)
    return torch.cat(codes) if codes else torch.zeros((0, height * width), dtype=torch.long)


def decode_image_codes(vq, codes: torch.Tensor | Sequence[Sequence[int]], grid: tuple[int, int] | None = None
                       ) -> list[Image.Image]:
    """PIL images of codes `(n, h * w)` or `(n, h, w)`; `grid` defaults to the tokenizer's code grid."""
    return tensor_to_images(decode_pixels(vq, torch.as_tensor(codes), grid))


def add_image_codes(items, vq, batch_size: int = 256, column: str = "image_codes"):
    """The items `datasets.Dataset` with a list[int] `column` of each item's codes (None for items without image)."""
    import datasets

    if "image" not in items.column_names:
        raise ValueError("The items table has no `image` column, so there is nothing to encode into image codes.")
    images = items.cast_column("image", datasets.Image(decode=False))["image"]
    item_ids = items["item_id"]
    present = [row for row, image in enumerate(images) if image is not None]
    codes = encode_image_codes(
        vq, [images[row] for row in present], batch_size, [item_ids[row] for row in present]
    ).tolist() if present else []
    values: list[list[int] | None] = [None] * len(items)
    for row, row_codes in zip(present, codes):
        values[row] = row_codes
    if column in items.column_names:
        items = items.remove_columns(column)
    return items.add_column(column, values, feature=datasets.List(datasets.Value("int32")))


__all__ = [
    "IMAGE_TOKENIZER_FOLDER",
    "add_image_codes",
    "code_grid_size",
    "decode_image_codes",
    "decode_pixels",
    "encode_image_codes",
    "encode_pixels",
    "images_to_tensor",
    "load_image_tokenizer",
    "tensor_to_images",
    "tokenizer_pixels",
]
