"""The unified data format: item and interaction tables as `datasets.Features`, and task samples.

Every data source is converted to these two tables; the dataset builders turn a user's time-ordered
interactions into task samples, which the processor templates render (see README, "Data format").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import datasets

TASKS: tuple[str, ...] = ("recommend", "search", "rate_explain", "select", "generate_image")
"""The tasks in task-id order: a sample's `task_ids` entry is its index here."""

ITEM_FEATURES = datasets.Features(
    {
        "item_id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "description": datasets.Value("string"),
        "categories": datasets.Sequence(datasets.Value("string")),
        "brand": datasets.Value("string"),
        "price": datasets.Value("float32"),
        "image": datasets.Image(),
    }
)
"""Columns of the items table; any value may be None except `item_id`. Extra columns are allowed."""

INTERACTION_FEATURES = datasets.Features(
    {
        "user_id": datasets.Value("string"),
        "item_id": datasets.Value("string"),
        "timestamp": datasets.Value("int64"),
        "rating": datasets.Value("float32"),
        "review": datasets.Value("string"),
        "summary": datasets.Value("string"),
        "explanation": datasets.Value("string"),
    }
)
"""Columns of the interactions table; any value may be None except `user_id`, `item_id`, `timestamp`."""

INTERACTION_FIELDS = frozenset({"user_id", "timestamp", "rating", "review", "summary", "explanation"})
"""Keys of a history entry that describe the user's interaction with the item, not the item itself."""


def check_task(task: Any) -> str:
    """`task` if it is one of `TASKS`, else a ValueError that lists them."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; expected one of {', '.join(TASKS)}.")
    return task


def item_id_of(reference: str | Mapping[str, Any]) -> Any:
    """The item id of a history entry, target or candidate: a bare id, or a dict's `item_id`."""
    return reference if isinstance(reference, str) else reference.get("item_id")


def check_rating(rating: Any, item_id: Any) -> float | None:
    """A history entry's `rating` as a float, None when absent; a rating that is not a finite number is refused
    with an error naming the item, so a NaN or infinite rating never reaches a prompt or a table silently."""
    if rating is None:
        return None
    if isinstance(rating, bool) or not isinstance(rating, numbers.Real):
        raise TypeError(f"Item {item_id!r}: field `rating` must be a number, got {rating!r} ({type(rating).__name__}).")
    if not math.isfinite(rating):
        raise ValueError(f"Item {item_id!r}: field `rating` is {rating}, not a finite number.")
    return float(rating)


_REQUIRED = {"items": ("item_id",), "interactions": ("user_id", "item_id", "timestamp")}


def _table(rows: Iterable[Mapping[str, Any]], features: datasets.Features, name: str) -> datasets.Dataset:
    """Build a table from plain dicts: schema columns first with the schema's types, extra columns inferred."""
    rows = [dict(row) for row in rows]
    for position, row in enumerate(rows):
        for column in _REQUIRED[name]:
            if row.get(column) is None:
                raise ValueError(f"{name} row {position} has no `{column}`; it is required.")
        if name == "interactions":
            check_rating(row.get("rating"), row["item_id"])
    extra = list(dict.fromkeys(column for row in rows for column in row if column not in features))
    if extra:
        inferred = datasets.Dataset.from_list([{column: row.get(column) for column in extra} for row in rows])
        features = datasets.Features({**features, **inferred.features})
    rows = [{column: row.get(column) for column in features} for row in rows]
    return datasets.Dataset.from_list(rows, features=features)


def items_dataset(items: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Items table (`ITEM_FEATURES` plus any extra columns) from a list of item dicts."""
    return _table(items, ITEM_FEATURES, "items")


def interactions_dataset(rows: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Interactions table (`INTERACTION_FEATURES` plus any extra columns) from a list of dicts."""
    return _table(rows, INTERACTION_FEATURES, "interactions")
