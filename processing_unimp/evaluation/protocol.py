"""The one ranking protocol every model is scored under (UniMP and the baselines alike).

Leave-one-out by time (each user's last interaction is the test target, the second last the validation one, the
rest is training); every model gets the same history (all of the user's earlier interactions: train for
validation, train + validation for test) and reads as much of it as it can; it ranks the whole catalogue; the
items the user already interacted with are excluded from the ranking by default (the bundled datasets have no
repeat consumption), the target never; ties count against the target and NaN scores rank last.
A model is anything with `score(histories) -> (B, num_items)` over item indices `0 .. num_items - 1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .metrics import ranking_metrics, target_ranks


class Scorer(Protocol):
    """The scoring interface of every model: one score per catalogue item for each history."""

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor: ...


def protocol_text(num_items: int, num_users: int, exclude_seen: bool) -> str:
    """The protocol in one line, for benchmark files and cards."""
    seen = "items the user interacted with excluded" if exclude_seen else "seen items kept (--keep-seen)"
    return (f"leave-one-out by time; exact full ranking over {num_items} items; {num_users} users; {seen} (never "
            "the target); ties count against the target, NaN ranks last; model selection on all validation users, "
            "test scored once")


@dataclass
class LeaveOneOut:
    """A dataset's leave-one-out split as item indices: `train[user]` in time order, one target per user."""

    item_ids: list[str]
    train: dict[str, list[int]]
    validation: dict[str, int]
    test: dict[str, int]

    @classmethod
    def from_dataset(cls, data: Any, item_ids: Sequence[str] | None = None) -> LeaveOneOut:
        """From a UniMP DatasetDict's `train`/`validation`/`test` interaction tables (item order: `item_ids`)."""
        item_ids = list(item_ids if item_ids is not None else data["items"]["item_id"])
        index = {item_id: i for i, item_id in enumerate(item_ids)}

        def sequences(table) -> dict[str, list[int]]:
            rows = sorted(zip(table["user_id"], table["timestamp"], range(table.num_rows), table["item_id"]))
            grouped: dict[str, list[int]] = {}
            for user, _, _, item in rows:
                grouped.setdefault(user, []).append(index[item])
            return grouped

        def targets(table) -> dict[str, int]:
            found = sequences(table)
            bad = [user for user, items in found.items() if len(items) != 1]
            if bad:
                raise ValueError(f"Leave-one-out needs one target per user; user {bad[0]!r} has {len(found[bad[0]])}.")
            return {user: items[0] for user, items in found.items()}

        return cls(item_ids, sequences(data["train"]), targets(data["validation"]), targets(data["test"]))

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def histories(self, split: str) -> tuple[list[str], list[list[int]], list[int]]:
        """(users, histories, targets) of `split` ("validation" or "test"): each user's interactions before it."""
        if split not in ("validation", "test"):
            raise ValueError(f"split must be 'validation' or 'test', got {split!r}.")
        targets = self.validation if split == "validation" else self.test
        users = sorted(targets)
        earlier = [self.train.get(u, []) + ([self.validation[u]] if split == "test" else []) for u in users]
        return users, earlier, [targets[u] for u in users]

    def samples(self, split: str) -> list[dict[str, Any]]:
        """The same histories as recommend task samples (item ids), for models that read task samples (UniMP)."""
        users, histories, targets = self.histories(split)
        return [{"task": "recommend", "user_id": user, "history": [{"item_id": self.item_ids[i]} for i in history],
                 "target": {"item_id": self.item_ids[target]}}
                for user, history, target in zip(users, histories, targets)]


def recommend_samples(data: Any, item_ids: Sequence[str], split: str, limit: int | None = None) -> list[dict[str, Any]]:
    """A split's recommend samples under the protocol: the leave-one-out ones with full histories, or, for a dataset
    built with the paper's random user split, its `tasks_<split>` recommend samples; at most `limit`."""
    try:
        samples = LeaveOneOut.from_dataset(data, item_ids).samples(split)
    except ValueError:  # not leave-one-out (several targets per user)
        samples = [s for s in data[f"tasks_{split}"] if s["task"] == "recommend"]
    return samples[:limit]


def seen_mask(histories: Sequence[Sequence[int]], num_items: int) -> torch.Tensor:
    """`(B, num_items)` bool: True at every item of each history."""
    mask = torch.zeros(len(histories), num_items, dtype=torch.bool)
    for row, history in enumerate(histories):
        mask[row, list(history)] = True
    return mask


def scorer_ranks(
    scorer: Scorer, split: LeaveOneOut, name: str = "test", exclude_seen: bool = True, batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """1-based rank of each user's target (in `split.histories(name)` order) under `scorer`."""
    _, histories, targets = split.histories(name)
    ranks = []
    for start in tqdm(range(0, len(histories), batch_size), desc=f"ranking ({name})", disable=not progress):
        batch = histories[start : start + batch_size]
        scores = scorer.score(batch)
        exclude = seen_mask(batch, split.num_items) if exclude_seen else None
        ranks.append(target_ranks(scores, torch.tensor(targets[start : start + batch_size]), exclude))
    return torch.cat(ranks)


def evaluate_scorer(
    scorer: Scorer, split: LeaveOneOut, name: str = "test", exclude_seen: bool = True, batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """HR/NDCG/MRR@{1,5,10,20} (with NDCG's standard error) of `scorer` on one split of the protocol."""
    return ranking_metrics(scorer_ranks(scorer, split, name, exclude_seen, batch_size, progress))


__all__ = ["LeaveOneOut", "Scorer", "evaluate_scorer", "protocol_text", "recommend_samples", "scorer_ranks", "seen_mask"]
