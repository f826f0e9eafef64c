"""The one ranking protocol every model is scored under (UniMP and the baselines alike).

Leave-one-out by time (each user's last interaction is the test target, the second last the validation one, the
rest is training); every model gets the same history (all of the user's earlier interactions: train for
validation, train + validation for test) and reads as much of it as it can; it ranks the whole catalogue; the
items the user already interacted with are excluded from the ranking by default (the bundled datasets have no
repeat consumption), the target never; ties count against the target and NaN scores rank last.
A model is anything with `score(histories) -> (B, num_items)` over item indices `0 .. num_items - 1`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from .metrics import ranking_metrics, target_ranks


class Scorer(Protocol):
    """The scoring interface of every model, UniMP (`tasks.UniMPScorer`) and the baselines alike: one score per
    catalogue item for each history. A scorer that ranks by a query too (search) takes `score(histories, queries)`.
    """

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


def process_batches(count: int, batch_size: int, accelerator=None, description: str = "",
                    progress: bool = False) -> Iterator[list[int]]:
    """This process's rows of `count` (every `num_processes`-th one, or all of them), `batch_size` at a time.

    Every process gets as many batches as the largest share needs: a sharded model (FSDP, ZeRO-3) gathers its
    parameters in each forward pass, a collective that every process must join. A process whose share has run out
    gets empty batches: score a stand-in row and drop the result.
    """
    rows = list(range(count))
    num_batches = math.ceil(count / batch_size)
    if accelerator is not None and accelerator.num_processes > 1:
        rows = rows[accelerator.process_index :: accelerator.num_processes]
        num_batches = math.ceil(math.ceil(count / accelerator.num_processes) / batch_size)
    disable = not progress or (accelerator is not None and not accelerator.is_main_process)
    for start in tqdm(range(0, num_batches * batch_size, batch_size), desc=description, disable=disable):
        yield rows[start : start + batch_size]


def gather(values: list, accelerator=None) -> list:
    """Every process's records, concatenated (the shards are disjoint, so nothing is duplicated)."""
    if accelerator is None or accelerator.num_processes == 1:
        return values
    from accelerate.utils import gather_object

    return gather_object(values)


def rank_targets(
    scorer: Scorer, histories: Sequence[Sequence[int]], targets: Sequence[int], exclude_seen: bool = True,
    batch_size: int = 256, queries: Sequence[str | None] | None = None, accelerator=None, progress: bool = False,
) -> torch.Tensor:
    """1-based rank of each target among all items under `scorer`: the one ranking path of every model.

    With `exclude_seen` each history's items are excluded from its ranking (the target never). `queries` (one per
    history, for a scorer that ranks by a query too: UniMP's search) are passed on as `score(histories, queries)`.
    With an `accelerator` the histories are shared out over its processes and the ranks gathered (in order with
    one process; shard after shard with several).
    """
    ranks: list[int] = []
    for rows in process_batches(len(histories), batch_size, accelerator, "ranking", progress):
        batch = [histories[row] for row in rows or [0]]
        extra = {} if queries is None else {"queries": [queries[row] for row in rows or [0]]}
        scores = scorer.score(batch, **extra).cpu()
        if not rows:
            continue
        exclude = seen_mask(batch, scores.shape[1]) if exclude_seen else None
        ranks += target_ranks(scores, torch.tensor([targets[row] for row in rows]), exclude).tolist()
    return torch.tensor(gather(ranks, accelerator), dtype=torch.long)


def scorer_ranks(
    scorer: Scorer, split: LeaveOneOut, name: str = "test", exclude_seen: bool = True, batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """1-based rank of each user's target (in `split.histories(name)` order) under `scorer`."""
    _, histories, targets = split.histories(name)
    return rank_targets(scorer, histories, targets, exclude_seen, batch_size, progress=progress)


def evaluate_scorer(
    scorer: Scorer, split: LeaveOneOut, name: str = "test", exclude_seen: bool = True, batch_size: int = 256,
    progress: bool = False,
) -> dict[str, float]:
    """HR/NDCG/MRR@{1,5,10,20} (with NDCG's standard error) of `scorer` on one split of the protocol."""
    return ranking_metrics(scorer_ranks(scorer, split, name, exclude_seen, batch_size, progress))


__all__ = [
    "LeaveOneOut",
    "Scorer",
    "evaluate_scorer",
    "gather",
    "process_batches",
    "protocol_text",
    "rank_targets",
    "recommend_samples",
    "scorer_ranks",
    "seen_mask",
]
