"""Content item rows on the processor side: what the model reads of an item (its text token ids and pooled image
features), and `add_items`, which grows a trained model's catalogue from content alone, without retraining."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .image_processing_unimp import load_rgb_image
from .schema_unimp import items_dataset

CONTENT_FIELDS = ("title", "categories", "description")
"""The item fields whose words make the text part of a content row, in this order."""


def item_text(attributes: Mapping[str, Any]) -> str:
    """The item's content words: its `CONTENT_FIELDS` values, lists joined, missing ones left out."""
    values = [attributes.get(field) for field in CONTENT_FIELDS]
    return " ".join(" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in values if v)


def content_inputs(model, processor, items: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(text_ids (n, L) padded with -1, image_features (n, F), zeros without an image)` of `items`.

    Raises a `ValueError` naming the item when its image cannot be read.
    """
    length = model.config.item_text_length
    texts = [item_text(item) for item in items]
    encoded = processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    text_ids = torch.full((len(items), length), -1, dtype=torch.long)
    for row, ids in enumerate(encoded):
        text_ids[row, : min(length, len(ids))] = torch.tensor(ids[:length], dtype=torch.long)
    images = {row: load_rgb_image(item["image"], item["item_id"]) for row, item in enumerate(items)
              if item.get("image") is not None}
    vision = model.config.vision_config.hidden_size * model.config.item_image_grid**2
    features = torch.zeros(len(items), vision)
    if images:
        rows = sorted(images)
        device = next(model.parameters()).device
        for start in range(0, len(rows), 256):
            part = rows[start : start + 256]
            pixels = processor.image_processor([images[r] for r in part], return_tensors="pt")["pixel_values"]
            features[part] = model.item_image_features(pixels.to(device)).cpu()
    return text_ids, features


def fill_item_content(model, processor) -> int:
    """Give every catalogue item of `processor` a content row in `model` (a model built with item_rows='content'
    and an empty table); returns how many."""
    items = [_attributes(processor, item_id) for item_id in processor.item_ids]
    text_ids, features = content_inputs(model, processor, items)
    model.add_item_content(torch.tensor(processor.item_token_ids), text_ids, features,
                           residual_std=model.config.initializer_range)
    return len(items)


def add_items(model, processor, items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Add `items` (unified-format dicts: `item_id`, text fields, optional `image`) to a trained model and its
    processor: new item tokens whose rows are computed from content. Everything is checked and computed before
    anything changes, so a bad item leaves both as they were. Returns the added ids."""
    if model.config.item_rows != "content":
        raise ValueError("add_items needs a model with content item rows (config.item_rows='content').")
    ids = [item.get("item_id") for item in items]
    processor.check_new_items(ids)
    if processor.catalogue is not None and not processor.catalogue.has_images:
        # trained without images, its image projection never learned: new items are read as their text
        items = [{k: v for k, v in item.items() if k != "image"} for item in items]
    for item in items:
        if not item_text(item) and item.get("image") is None:
            raise ValueError(f"Item {item['item_id']!r}: no content (fields {CONTENT_FIELDS} and `image` are empty).")
    text_ids, features = content_inputs(model, processor, items)
    table = items_dataset([dict(item) for item in items])
    token_ids = processor.add_items(ids, table)
    model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    model.add_item_content(torch.tensor(token_ids), text_ids, features)
    return ids


def _attributes(processor, item_id: str) -> dict[str, Any]:
    catalogue = processor.catalogue
    return {"item_id": item_id, **(dict(catalogue[item_id]) if catalogue is not None and item_id in catalogue else {})}
