"""Pack each user's whole training history into training sequences in which every interaction is a target.

A recommend window of the original recipe supervises one next-item target (and, with the id after the content,
identifications); a user's windows overlap almost entirely, so most of their compute is repeated. Here each user's
time-ordered training interactions are rendered once, in the `history_ids="before"` layout (`<answer> <item_k>`
opens each chunk, so the `<answer>` of chunk j is conditioned on chunks < j only), and cut into non-overlapping
sequences of at most `max_length` tokens, each starting on a chunk boundary: every training interaction is a
next-item target exactly once per epoch, as SASRec trains on all positions. Rendered as rate_explain's history
chunks instead (`task="rate_explain"`), the same packing makes every train rating a target once per epoch. Validation
and test interactions never enter a training sequence: pass the dataset's `train` split. Not shipped to the Hub.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..schema_unimp import TASKS


def user_histories(interactions: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each user's interactions, oldest first (ties keep the table order), in first-appearance order of users."""
    by_user: dict[str, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
    for row, interaction in enumerate(interactions):
        by_user[str(interaction["user_id"])].append((int(interaction["timestamp"]), row, dict(interaction)))
    return {user: [entry for *_, entry in sorted(rows, key=lambda r: r[:2])] for user, rows in by_user.items()}


def _chunk_key(interaction: Mapping[str, Any], task: str, explanations: bool = True) -> tuple:
    """What a chunk of `task` depends on: the item alone for recommend, also the rating (and explanation)."""
    if task == "recommend":
        return (interaction["item_id"],)
    return interaction["item_id"], interaction.get("rating"), interaction.get("explanation") if explanations else None


def _chunks(processor, interactions: Sequence[Mapping[str, Any]], history_ids: str, task: str,
            explanations: bool) -> dict[tuple, dict]:
    """The tokenized chunk of each distinct `_chunk_key`, each encoded once: catalogues (and a recommend chunk's
    inputs) are far smaller than interaction logs."""
    distinct = list(dict.fromkeys(_chunk_key(interaction, task, explanations) for interaction in interactions))
    fields = ("item_id", "rating", "explanation")
    raw = [dict(zip(fields, key)) for key in distinct]
    return dict(zip(distinct, processor.encode_history_chunks(raw, history_ids=history_ids, task=task)))


def _pack_user(chunks: list[dict[str, Any]], bos: list[int], max_length: int) -> list[list[dict[str, Any]]]:
    """Greedy: consecutive chunks while the sequence (BOS included) fits in `max_length` tokens."""
    sequences, current, length = [], [], len(bos)
    for chunk in chunks:
        size = len(chunk["input_ids"])
        if len(bos) + size > max_length:
            raise ValueError(
                f"Item {chunk['item_id']!r}: its chunk alone ({size} tokens) exceeds max_length={max_length}."
            )
        if current and length + size > max_length:
            sequences.append(current)
            current, length = [], len(bos)
        current.append(chunk)
        length += size
    if current:
        sequences.append(current)
    return sequences


def _sequence_encoding(chunks: list[dict[str, Any]], bos: list[int], user_id: str, task_id: int) -> dict[str, Any]:
    input_ids = bos + [i for chunk in chunks for i in chunk["input_ids"]]
    kinds = [0] * len(bos) + [k for chunk in chunks for k in chunk["token_kinds"]]
    return {
        "input_ids": input_ids,
        "token_kinds": kinds,
        "labels": [i if kind else -100 for i, kind in zip(input_ids, kinds)],
        "images": [image for chunk in chunks for image in chunk["images"]],
        "task_id": task_id,
        "user_id": user_id,
    }


def pack_histories(
    processor,
    interactions: Iterable[Mapping[str, Any]],
    max_length: int | None = None,
    *,
    identification: bool = False,
    min_interactions: int = 1,
    recent: int | None = None,
    task: str = "recommend",
    explanations: bool = True,
) -> list[dict[str, Any]]:
    """Packed training sequences: `processor.pad`-ready encodings (plus their `user_id`).

    Args:
        processor: a `UniMPProcessor`; its catalogue gives each chunk's content (its own `history_ids` is not read:
            packed sequences always use the `"before"` layout, which recommend's prompt must match at inference).
        interactions: the **training** interactions only (the dataset's `train` split): every one of them becomes
            exactly one next-item target (an `<item_k>` label of kind context reconstruction, task recommend).
        max_length: tokens per sequence, BOS included (default: the processor's `max_length`).
        identification: also emit every user's sequences in the original `"after"` layout (the id after its content:
            identification as a second objective); doubles the tokens per epoch.
        min_interactions: users with fewer training interactions are left out.
        recent: keep only each user's `recent` latest training interactions (a compute budget knob: long histories
            dominate the tokens of an epoch, and their oldest items say least about the next one). None keeps all.
        task: "recommend" (next-item targets, above) or "rate_explain": the chunks are rate_explain's history chunks
            (`<image>? <item_k> <answer> <rating_r> explanation <|endofchunk|>`), so every rated train interaction
            is a rating (and explanation) target once per epoch, conditioned on the user's earlier ratings, at the
            position rate_explain's prompt asks for the rating in the `"before"` layout.
        explanations: with task="rate_explain", keep each interaction's explanation in its chunk (False: ratings
            only, ~5 tokens per interaction instead of ~37 on fashion-shop).
    """
    if identification and task != "recommend":
        raise ValueError("identification is a second layout of next-item sequences; it needs task='recommend'.")
    max_length = processor.max_length if max_length is None else max_length
    histories = {u: h[-recent:] if recent else h for u, h in user_histories(interactions).items()
                 if len(h) >= min_interactions}
    everything = [entry for history in histories.values() for entry in history]
    layouts = ["before", "after"] if identification else ["before"]
    chunk_of = {layout: _chunks(processor, everything, layout, task, explanations) for layout in layouts}
    bos = processor.opening_ids  # the BOS, or a chat template's opening: what `encode` starts every sample with
    task_id = TASKS.index(task)
    encodings = []
    for layout in layouts:
        for user, history in histories.items():
            chunks = [chunk_of[layout][_chunk_key(entry, task, explanations)] for entry in history]
            for sequence in _pack_user(chunks, bos, max_length):
                encodings.append(_sequence_encoding(sequence, bos, user, task_id))
    return encodings


__all__ = ["pack_histories", "user_histories"]
