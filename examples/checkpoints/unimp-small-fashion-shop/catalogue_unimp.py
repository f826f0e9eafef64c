"""The item catalogue: item id -> item attributes, backed by an items table in the unified format."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any

import datasets
import pyarrow.parquet as pq

from .schema_unimp import items_dataset

CATALOGUE_FILE = "item_catalogue.parquet"
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str | None) -> set[str]:
    """The lower-cased alphanumeric words of `text`: what a search query is matched on."""
    return set(_WORD.findall((text or "").lower()))


class ItemCatalogue:
    """Read-only lookup of items by id. Images stay encoded (`{"bytes", "path"}`) until a template needs them."""

    def __init__(self, items: datasets.Dataset | Iterable[Mapping[str, Any]]):
        table = items if isinstance(items, datasets.Dataset) else items_dataset(items)
        if "item_id" not in table.column_names:
            raise ValueError("The items table has no `item_id` column.")
        if "image" in table.column_names:
            table = table.cast_column("image", datasets.Image(decode=False))
        self.table = table
        self.item_ids: list[str] = list(table["item_id"])
        self._rows = {item_id: row for row, item_id in enumerate(self.item_ids)}
        if len(self._rows) < len(self.item_ids):
            duplicates = [item_id for item_id, count in Counter(self.item_ids).items() if count > 1]
            raise ValueError(f"Duplicate item ids in the catalogue: {duplicates[:5]}")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._rows

    def __getitem__(self, item_id: str) -> dict[str, Any]:
        if item_id not in self._rows:
            raise KeyError(f"Item {item_id!r} is not in the catalogue.")
        return self.table[self._rows[item_id]]

    def value(self, item_id: str, field: str) -> Any:
        """One attribute of an item, read without the rest of its row; None when the item or the column is missing."""
        if item_id not in self._rows or field not in self.table.column_names:
            return None
        return self.table[field][self._rows[item_id]]

    @property
    def has_images(self) -> bool:
        """Whether any item has an image (a model trained on a catalogue without any never learned to read one)."""
        if "image" not in self.table.column_names:
            return False
        column = self.table.data.column("image")  # arrow: counted without reading a picture
        return column.null_count < len(column)

    def __deepcopy__(self, memo: dict) -> ItemCatalogue:
        """The catalogue is never mutated, so copies (e.g. in `ProcessorMixin.to_dict`) share it."""
        return self

    def extended(self, added: datasets.Dataset) -> ItemCatalogue:
        """A new catalogue with `added`'s items appended (columns either table lacks filled with None)."""
        for name in self.table.column_names:
            if name not in added.column_names:
                added = added.add_column(name, [None] * len(added)).cast_column(name, self.table.features[name])
        added = added.select_columns(self.table.column_names).cast(self.table.features)
        return ItemCatalogue(datasets.concatenate_datasets([self.table, added]))

    @cached_property
    def _items_by_word(self) -> dict[str, list[str]]:
        """word -> the ids of the items whose title or categories hold it (the catalogue is never mutated)."""
        by_word: dict[str, list[str]] = {}
        titles = self.table["title"] if "title" in self.table.column_names else [None] * len(self)
        categories = self.table["categories"] if "categories" in self.table.column_names else [None] * len(self)
        for item_id, title, labels in zip(self.item_ids, titles, categories):
            for word in words(" ".join([title or "", *(labels or [])])):
                by_word.setdefault(word, []).append(item_id)
        return by_word

    def query_word_counts(self, query: str | None) -> Counter[str]:
        """item id -> how many of the query's words its title and categories hold (items holding none left out)."""
        return Counter(item_id for word in words(query) for item_id in self._items_by_word.get(word, ()))

    def texts(self, fields: Iterable[str]) -> Iterator[str]:
        """Every non-empty text value of `fields` (lists joined), e.g. to train a tokenizer."""
        for field in fields:
            if field not in self.table.column_names:
                continue
            for value in self.table[field]:
                if isinstance(value, list):
                    value = " ".join(map(str, value))
                if value is not None and str(value).strip():
                    yield str(value)

    def save(self, directory: str | os.PathLike) -> str:
        """Write the catalogue (images embedded) next to the processor files; returns the file path."""
        path = os.path.join(directory, CATALOGUE_FILE)
        self.table.to_parquet(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ItemCatalogue:
        """Read a catalogue written by `save`."""
        return cls(datasets.Dataset(pq.read_table(path)))
