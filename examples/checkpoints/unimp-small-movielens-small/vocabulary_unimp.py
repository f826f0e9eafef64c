"""Names of the tokens UniMP adds to a tokenizer, and the seeded item-token order."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"
ANSWER_TOKEN = "<answer>"


def item_token(index: int) -> str:
    """Token of the item at position `index` of the item vocabulary."""
    return f"<item_{index}>"


def slot_token(index: int) -> str:
    """Token that labels the `index`-th candidate of a selection."""
    return f"<slot_{index}>"


def image_code_token(code: int) -> str:
    """Token of one code of a VQ image tokenizer's codebook."""
    return f"<img_{code}>"


def rating_token(value: float) -> str:
    """Token of a rating value: `<rating_4>`, `<rating_4.5>`."""
    return f"<rating_{value:g}>"


def rating_values(minimum: float, maximum: float, step: float) -> list[float]:
    """The rating scale from `minimum` to `maximum` in steps of `step` (e.g. 1-5, or 1-5 in half steps)."""
    count = (maximum - minimum) / step
    if step <= 0 or count < 1 or not math.isclose(count, round(count)):
        raise ValueError(f"Rating scale {minimum}..{maximum} step {step} does not divide into whole steps.")
    return [minimum + index * step for index in range(round(count) + 1)]


def shuffled_item_ids(item_ids: Sequence[str], seed: int) -> list[str]:
    """Item ids in a seeded random order, so that an item's token index carries no order information."""
    ordered = list(item_ids)
    random.Random(seed).shuffle(ordered)
    return ordered
