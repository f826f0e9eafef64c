"""Shared fixtures."""

import copy
import io
from collections.abc import Callable

import pytest
from PIL import Image

from processing_unimp import UniMPProcessor


def _png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 12), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def catalogue_items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Five items covering every image form (PIL, path, bytes dict, none) and missing fields."""
    path = tmp_path_factory.mktemp("images") / "hat.png"
    Image.new("RGB", (16, 16), "green").save(path)
    return [
        {"item_id": "A1", "title": "Red running shoes", "brand": "Acme", "categories": ["Shoes", "Sport"],
         "price": 59.99, "image": Image.new("RGB", (8, 8), "red"), "image_codes": [1, 2, 3, 0]},
        {"item_id": "B2", "title": "Blue cotton shirt", "description": "A soft shirt", "image_codes": [3, 3, 1, 0]},
        {"item_id": "C3", "title": "Green hat", "image": str(path)},
        {"item_id": "D4", "title": "Yellow socks", "image": {"bytes": _png_bytes("yellow"), "path": None}},
        {"item_id": "E5"},
    ]


@pytest.fixture(scope="session")
def processor(catalogue_items: list[dict]) -> UniMPProcessor:
    """A processor with a small trained tokenizer, 16-pixel images, and a 4-code image codebook."""
    return UniMPProcessor.from_catalogue(catalogue_items, vocab_size=300, image_size=16, codebook_size=4)


@pytest.fixture
def make_processor(processor: UniMPProcessor) -> Callable[..., UniMPProcessor]:
    """A processor with the fixture's catalogue and a copy of its tokenizer, with some settings changed."""

    def make(**overrides) -> UniMPProcessor:
        settings = {"item_ids": processor.item_ids, "codebook_size": 4, "catalogue": processor.catalogue, **overrides}
        return UniMPProcessor(processor.image_processor, copy.deepcopy(processor.tokenizer), **settings)

    return make
