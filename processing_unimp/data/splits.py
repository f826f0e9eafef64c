"""Evaluation splits and task samples for the five UniMP tasks.

Splits: leave-one-out by time (test = each user's last interaction, validation = the second last, train
= the rest) is the default; the paper's random 80/10/10 user split is the option; `new_item_split` derives
from a leave-one-out dataset one in which a seeded part of the catalogue is new (RecFormer's cold items). Task
samples are stored compactly (histories as row indices into the interactions table) so that datasets stay
small on disk; `materialize_task_samples` turns them into the CONTRACTS.md dict format. Seeded and deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from ..schema_unimp import INTERACTION_FEATURES
from .config import BuildConfig, BuildReport

SPLITS: tuple[str, ...] = ("train", "validation", "test")

COMPACT_TASK_FEATURES = datasets.Features(
    {
        "task": datasets.Value("string"),
        "user_id": datasets.Value("string"),
        "history_index": datasets.List(datasets.Value("int32")),  # rows of `interactions`, oldest first
        "target_index": datasets.Value("int32"),  # row of `interactions`, None when the task has no target
        "query": datasets.Value("string"),
        "candidates": datasets.List(datasets.Value("string")),
        "answer": datasets.List(datasets.Value("string")),
    }
)
"""On-disk form of the `tasks_*` tables."""

SPLIT_INDEX_FEATURES = datasets.Features({"interaction_index": datasets.Value("int32")})
"""On-disk form of the `train`/`validation`/`test` tables: rows of `interactions`, in table order."""

_HISTORY_FIELDS = ("item_id", "rating", "review", "explanation", "timestamp")
_TARGET_FIELDS = ("item_id", "rating", "explanation")

TASK_SAMPLE_FEATURES = datasets.Features(
    {
        "task": datasets.Value("string"),
        "user_id": datasets.Value("string"),
        "history": datasets.List({name: INTERACTION_FEATURES[name] for name in _HISTORY_FIELDS}),
        "target": {name: INTERACTION_FEATURES[name] for name in _TARGET_FIELDS},
        "query": datasets.Value("string"),
        "candidates": datasets.List(datasets.Value("string")),
        "answer": datasets.List(datasets.Value("string")),
    }
)
"""Task samples in the CONTRACTS.md format, as returned by `load_unimp_dataset`."""

_STOPWORDS = frozenset(
    "a an and the of for with in on to by from at or is it its this that my your our their new set pack "
    "x inch oz ml".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z\-']+")


def make_query(title: str | None, categories: Sequence[str] | None, rng: np.random.Generator) -> str | None:
    """A search query for an item from its categories and title keywords, never its full title.

    Up to two of the most specific categories, plus one title keyword half of the time (always when the
    item has no category), lower-cased.
    """
    cats = list(dict.fromkeys(c.strip().lower() for c in categories or [] if c and c.strip()))
    specific = cats[-3:]
    chosen = [specific[i] for i in sorted(rng.permutation(len(specific))[: min(2, len(specific))])]
    words = [w.lower() for w in _WORD.findall(title or "")]
    keywords = list(dict.fromkeys(w for w in words if w not in _STOPWORDS and len(w) > 2 and w not in " ".join(chosen)))
    want_keyword = rng.random() < 0.5
    if keywords and (want_keyword or not chosen):
        chosen.append(keywords[int(rng.integers(len(keywords)))])
    return " ".join(chosen) or None


def _user_blocks(interactions: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """(user_id, row indices oldest first) per user; `interactions` is sorted by user then time."""
    users = interactions["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return [(str(users[s]), np.arange(s, e)) for s, e in zip(starts, ends)]


def _split_targets(
    blocks: list[tuple[str, np.ndarray]], config: BuildConfig, report: BuildReport
) -> tuple[dict[str, list[int]], dict[str, list[tuple[str, int, int]]]]:
    """Rows of each split's interaction table, and each split's (user, row block index, target position)."""
    rows: dict[str, list[int]] = {split: [] for split in SPLITS}
    targets: dict[str, list[tuple[str, int, int]]] = {split: [] for split in SPLITS}
    per_user = config.train_targets_per_user
    if config.split == "leave_one_out":
        for block_id, (user, block) in enumerate(blocks):
            n = len(block)
            if n < 3:
                report.skip("user_too_short_for_leave_one_out", f"user_id={user} ({n} interactions, kept in train)")
                rows["train"].extend(block.tolist())
                continue
            rows["train"].extend(block[: n - 2].tolist())
            rows["validation"].append(int(block[n - 2]))
            rows["test"].append(int(block[n - 1]))
            targets["train"].extend((user, block_id, j) for j in range(max(1, n - 2 - per_user), n - 2))
            targets["validation"].append((user, block_id, n - 2))
            targets["test"].append((user, block_id, n - 1))
    elif config.split == "user":
        ratios = np.asarray(config.split_ratios, dtype=float)
        if ratios.shape != (3,) or (ratios < 0).any() or abs(ratios.sum() - 1) > 1e-6:
            raise ValueError(
                f"split_ratios must be three non-negative fractions summing to 1, got {config.split_ratios}"
            )
        order = np.random.default_rng([config.seed, 7]).permutation(len(blocks))
        bounds = np.round(np.cumsum(ratios) * len(blocks)).astype(int)
        assignment = np.empty(len(blocks), dtype=object)
        for split, part in zip(SPLITS, np.split(order, bounds[:2])):
            assignment[part] = split
        for block_id, (user, block) in enumerate(blocks):
            split, n = assignment[block_id], len(block)
            if n < 2:
                report.skip("user_too_short_for_user_split", f"user_id={user} ({n} interaction)")
                continue
            if split == "train":
                rows["train"].extend(block.tolist())
                targets["train"].extend((user, block_id, j) for j in range(max(1, n - per_user), n))
            else:
                rows[split].append(int(block[n - 1]))
                targets[split].append((user, block_id, n - 1))
    else:
        raise ValueError(f"unknown split {config.split!r}; use 'leave_one_out' or 'user'")
    return rows, targets


def _task_samples(
    split: str,
    split_index: int,
    targets: list[tuple[str, int, int]],
    blocks: list[tuple[str, np.ndarray]],
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    config: BuildConfig,
    report: BuildReport,
) -> dict[str, list[Any]]:
    """Compact task samples (columns of `COMPACT_TASK_FEATURES`) for one split's targets."""
    rng = np.random.default_rng([config.seed, split_index])
    item_ids = interactions["item_id"].to_numpy()
    ratings = interactions["rating"].to_numpy()
    catalogue = items["item_id"].to_numpy()
    info = {row.item_id: (row.title, row.categories) for row in items[["item_id", "title", "categories"]].itertuples()}
    with_image = set(items.loc[items["image"].notna(), "item_id"])
    columns: dict[str, list[Any]] = {name: [] for name in COMPACT_TASK_FEATURES}

    def add(task: str, user: str, history: np.ndarray, target: int | None, query: str | None = None,
            candidates: list[str] | None = None, answer: list[str] | None = None) -> None:
        for name, value in (("task", task), ("user_id", user), ("history_index", history.tolist()),
                            ("target_index", target), ("query", query), ("candidates", candidates), ("answer", answer)):
            columns[name].append(value)

    unavailable = {"generate_image": not with_image, "rate_explain": bool(pd.isna(ratings).all())}
    tasks = [t for t in config.tasks if not unavailable.get(t, False)]
    for task in sorted(set(config.tasks) - set(tasks)):
        report.note(f"no_{task}_samples",
                    "the dataset has no images" if task == "generate_image" else "the dataset has no ratings")
    for user, block_id, position in tqdm(targets, desc=f"task samples ({split})", leave=False,
                                         disable=len(targets) < 5000):
        block = blocks[block_id][1]
        history = block[max(0, position - config.max_history): position]
        target = int(block[position])
        where = f"user_id={user} item_id={item_ids[target]}"
        if len(history) == 0:
            report.skip("empty_history", where)
            continue
        title, categories = info[item_ids[target]]
        for task in tasks:
            if task == "recommend":
                add(task, user, history, target)
            elif task == "search":
                query = make_query(title, categories, rng)
                if query is None:
                    report.skip("search_without_query", where)
                    continue
                add(task, user, history, target, query=query)
            elif task == "rate_explain":
                if pd.isna(ratings[target]):
                    report.skip("rate_explain_without_rating", where)
                    continue
                add(task, user, history, target)
            elif task == "select":
                positives, select_history = [str(item_ids[target])], history
                if rng.integers(1, 3) == 2 and len(history) >= 2 and item_ids[history[-1]] != item_ids[target]:
                    positives, select_history = [str(item_ids[history[-1]]), str(item_ids[target])], history[:-1]
                seen = set(item_ids[block])
                negatives = _sample_negatives(catalogue, seen, config.num_candidates - len(positives), rng)
                if negatives is None:
                    report.skip("select_without_negatives", where)
                    continue
                candidates = [str(c) for c in rng.permutation(np.array(positives + negatives, dtype=object))]
                answer = [c for c in candidates if c in positives]
                add(task, user, select_history, target, candidates=candidates, answer=answer)
            elif task == "generate_image":
                if item_ids[target] not in with_image:
                    report.skip("generate_image_target_without_image", where)
                    continue
                add(task, user, history, target, query=make_query(title, categories, rng))
            else:
                raise ValueError(f"unknown task {task!r}")
    return columns


def _sample_negatives(catalogue: np.ndarray, seen: set, count: int, rng: np.random.Generator) -> list[str] | None:
    """`count` distinct items the user never interacted with (uniform), or None if there are not enough."""
    if len(catalogue) - len(seen) < count:
        return None
    chosen: list[str] = []
    while len(chosen) < count:
        candidate = str(catalogue[int(rng.integers(len(catalogue)))])
        if candidate not in seen and candidate not in chosen:
            chosen.append(candidate)
    return chosen


def build_splits(
    items: pd.DataFrame, interactions: pd.DataFrame, config: BuildConfig, report: BuildReport
) -> dict[str, datasets.Dataset]:
    """Compact `train`/`validation`/`test` split tables (rows of `interactions`) and `tasks_*` tables.

    Under leave-one-out, `validation`/`test` hold each user's second-last/last interaction and `train` the
    rest; under the user split, `train` holds all interactions of the training users and `validation`/`test`
    the last interaction of their users (the history lives in the task samples).
    """
    blocks = _user_blocks(interactions)
    rows, targets = _split_targets(blocks, config, report)
    out: dict[str, datasets.Dataset] = {}
    for split_index, split in enumerate(SPLITS):
        out[split] = datasets.Dataset.from_dict({"interaction_index": sorted(rows[split])},
                                                features=SPLIT_INDEX_FEATURES)
        samples = _task_samples(split, split_index, targets[split], blocks, items, interactions, config, report)
        out[f"tasks_{split}"] = datasets.Dataset.from_dict(samples, features=COMPACT_TASK_FEATURES)
    return out


def materialize_task_samples(tasks: datasets.Dataset, interactions: datasets.Dataset) -> datasets.Dataset:
    """Resolve the row indices of a compact task table into CONTRACTS.md task samples (vectorised in Arrow)."""
    table = tasks.with_format("arrow")[:]
    source = interactions.with_format("arrow")[:]
    history_index = table.column("history_index").combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(history_index), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
    flat = pc.list_flatten(history_index)
    history_struct = pa.StructArray.from_arrays([source.column(n).combine_chunks() for n in _HISTORY_FIELDS],
                                                names=list(_HISTORY_FIELDS))
    target_struct = pa.StructArray.from_arrays([source.column(n).combine_chunks() for n in _TARGET_FIELDS],
                                               names=list(_TARGET_FIELDS))
    resolved = pa.table(
        {
            "task": table.column("task"),
            "user_id": table.column("user_id"),
            "history": pa.ListArray.from_arrays(offsets, history_struct.take(flat)),
            "target": target_struct.take(table.column("target_index").combine_chunks()),
            "query": table.column("query"),
            "candidates": table.column("candidates"),
            "answer": table.column("answer"),
        }
    )
    return datasets.Dataset(datasets.table.InMemoryTable(resolved),
                            info=datasets.DatasetInfo(features=TASK_SAMPLE_FEATURES), split=tasks.split)



def materialize_split(split: datasets.Dataset, interactions: datasets.Dataset) -> datasets.Dataset:
    """The interaction rows a compact split table points at, as an in-memory interactions table."""
    source = interactions.with_format("arrow")[:]
    rows = split.with_format("arrow")[:].column("interaction_index").combine_chunks()
    return datasets.Dataset(datasets.table.InMemoryTable(source.take(rows)),
                            info=datasets.DatasetInfo(features=interactions.features), split=split.split)


NEW_ITEM_PROTOCOL = (
    "new items (RecFormer's in-set/cold split), seed {seed}: a seeded {test_fraction:.0%} of the catalogue "
    "({test_items} items) occurs in no training or validation history, only as test targets ({test_users} of {users} "
    "test users have one); a second seeded {validation_fraction:.0%} ({validation_items} items, drawn among the items "
    "that are no user's test target) occurs in no training history, only as validation targets ({validation_users} "
    "validation users), so that model selection sees new items without touching test (such an item is also in its "
    "user's test history, as every validation target is: an item bought after training, never scored at test); every "
    "user keeps its test target, its earlier interactions lose the new items and the second last left is its "
    "validation target (users left with fewer than 3 interactions only train: {short_users})"
)
"""The new-item protocol in one paragraph, filled in by `NewItemSplit.protocol`."""


@dataclass(frozen=True)
class NewItemSplit:
    """A compact leave-one-out dataset in which `test_items` are new at test and `validation_items` at validation."""

    dataset: datasets.DatasetDict  # compact tables (as `load_unimp_dataset(..., materialize=False)`)
    test_items: frozenset[str]  # in no train or validation interaction; only test targets
    validation_items: frozenset[str]  # in no train interaction; only validation targets
    seed: int
    test_fraction: float
    validation_fraction: float
    report: BuildReport  # users too short for leave-one-out once the new items are gone (they only train), skips

    def materialize(self) -> datasets.DatasetDict:
        """The dataset with its row-index tables resolved, as `load_unimp_dataset` returns it."""
        out = dict(self.dataset)
        for name, table in self.dataset.items():
            if name in SPLITS:
                out[name] = materialize_split(table, self.dataset["interactions"])
            elif name.startswith("tasks_"):
                out[name] = materialize_task_samples(table, self.dataset["interactions"])
        return datasets.DatasetDict(out)

    def protocol(self) -> str:
        """`NEW_ITEM_PROTOCOL` with this split's figures."""
        item_ids = self.dataset["interactions"]["item_id"]

        def targets_in(split: str, new: frozenset[str]) -> tuple[int, int]:
            targets = [item_ids[row] for row in self.dataset[split]["interaction_index"]]
            return sum(item in new for item in targets), len(targets)

        test_users, users = targets_in("test", self.test_items)
        validation_users, _ = targets_in("validation", self.validation_items)
        return NEW_ITEM_PROTOCOL.format(
            seed=self.seed, test_fraction=self.test_fraction, test_items=len(self.test_items), test_users=test_users,
            users=users, validation_fraction=self.validation_fraction, validation_items=len(self.validation_items),
            validation_users=validation_users,
            short_users=self.report.skipped.get("user_too_short_for_leave_one_out", 0))


def _item_frame(items: datasets.Dataset) -> pd.DataFrame:
    """The items columns task samples read, as the builders pass them (lists of categories, images undecoded)."""
    table = items.with_format("arrow")[:]
    has_image = table.column("image").is_valid().to_pylist() if "image" in table.column_names else [False] * len(table)
    return pd.DataFrame({"item_id": table.column("item_id").to_pylist(), "title": table.column("title").to_pylist(),
                         "categories": table.column("categories").to_pylist(),
                         "image": [True if present else None for present in has_image]})


def _without_new_items(block: np.ndarray, item_ids: np.ndarray, test_items: set, validation_items: set) -> np.ndarray:
    """A user's rows with the new items removed where they may not be: a test-new item stays only as the last row
    (the test target), a validation-new item only as the second last left (the validation target); a user left
    with fewer than 3 rows only trains, so it keeps no new item at all."""
    keep = np.array([item_ids[row] not in test_items for row in block[:-1]] + [True])
    block = block[keep]
    keep = np.array([item_ids[row] not in validation_items for row in block])
    keep[-2:] = True
    block = block[keep]
    if len(block) < 3:
        block = block[[item_ids[row] not in test_items | validation_items for row in block]]
    return block


def new_item_split(
    dataset: datasets.DatasetDict, config: BuildConfig, fraction: float = 0.1, validation_fraction: float | None = None,
    seed: int = 0,
) -> NewItemSplit:
    """The new-item protocol (`NEW_ITEM_PROTOCOL`) on a compact leave-one-out dataset, seeded and deterministic.

    `fraction` of the catalogue becomes new at test, `validation_fraction` (default: `fraction`) new at validation;
    the split and task tables are rebuilt from the filtered user histories with `config` (the dataset's build
    config: it decides the task samples), so that the existing protocol and training recipes read the result
    unchanged. `fraction=0` and `validation_fraction=0` give back the dataset's own tables.
    """
    validation_fraction = fraction if validation_fraction is None else validation_fraction
    for name, value in (("fraction", fraction), ("validation_fraction", validation_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"new_item_split: {name} must lie in [0, 1), got {value}.")
    if config.split != "leave_one_out":
        raise ValueError(f"new_item_split needs a leave-one-out build config, got split={config.split!r}.")
    if "interaction_index" not in dataset["test"].column_names:
        raise ValueError("new_item_split needs the compact dataset: load_unimp_dataset(..., materialize=False).")
    items, interactions = _item_frame(dataset["items"]), dataset["interactions"].to_pandas()
    item_ids = interactions["item_id"].to_numpy()
    blocks = _user_blocks(interactions)
    catalogue = items["item_id"].to_numpy()
    order = np.random.default_rng([seed, 33]).permutation(len(catalogue))
    test_count, validation_count = round(fraction * len(catalogue)), round(validation_fraction * len(catalogue))
    test_items = {str(item) for item in catalogue[order[:test_count]]}
    test_targets = {item_ids[block[-1]] for _, block in blocks}
    rest = [str(item) for item in catalogue[order[test_count:]] if item not in test_targets]
    validation_items = set(rest[:validation_count])
    filtered = [(user, _without_new_items(block, item_ids, test_items, validation_items)) for user, block in blocks]
    kept = [(user, block) for user, block in filtered if len(block)]
    report = BuildReport(source="new_item_split")
    rows, targets = _split_targets(kept, config, report)
    out = dict(dataset)
    for split_index, split in enumerate(SPLITS):
        out[split] = datasets.Dataset.from_dict({"interaction_index": sorted(rows[split])},
                                                features=SPLIT_INDEX_FEATURES)
        samples = _task_samples(split, split_index, targets[split], kept, items, interactions, config, report)
        out[f"tasks_{split}"] = datasets.Dataset.from_dict(samples, features=COMPACT_TASK_FEATURES)
    return NewItemSplit(datasets.DatasetDict(out), frozenset(test_items), frozenset(validation_items), seed, fraction,
                        validation_fraction, report)
