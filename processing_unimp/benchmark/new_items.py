"""The new-item benchmark (RecFormer's in-set/cold split): every baseline on new-item targets, the others and all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..baselines.content import ContentSASRecConfig, ContentSASRecRecommender
from ..baselines.recommenders import SASRecRecommender, content_vectors
from ..evaluation.metrics import ranking_by_frequency, ranking_metrics
from ..evaluation.protocol import LeaveOneOut, evaluate_scorer, scorer_ranks
from .report import _frequency_table, row_name, short_labels
from .runs import SEEDED_BASELINES, baseline_models, target_train_counts

GROUPS = ("new", "other", "all")  # test users by their target: a new item, any other item, every user
SEEDED_MODELS = (*SEEDED_BASELINES, "content-sasrec")  # rows named with the seed: their fit depends on it


def new_item_metrics(ranks: torch.Tensor, targets: Sequence[str], new_items: frozenset[str] | set[str]) -> dict:
    """Ranking metrics of the users whose target is a new item, of the others and of all (`ranks` and `targets` in
    the same user order); a group without users is left out."""
    is_new = torch.tensor([target in new_items for target in targets], dtype=torch.bool)
    if is_new.shape != ranks.shape:
        raise ValueError(f"{len(targets)} targets for {ranks.numel()} ranks.")
    masks = {"new": is_new, "other": ~is_new, "all": torch.ones_like(is_new)}
    return {group: ranking_metrics(ranks[mask]) for group, mask in masks.items() if mask.any()}


def new_item_models(data, split: LeaveOneOut, sasrec_epochs: int = 300, seed: int = 0,
                    id_dropout: float = 0.5) -> dict[str, Any]:
    """The benchmark's baselines (`benchmark.baseline_models`) plus content SASRec on the richest content vectors
    the items have (text and image where there are images, else text)."""
    models = baseline_models(data, split, sasrec_epochs, seed)
    position = {item_id: row for row, item_id in enumerate(data["items"]["item_id"])}
    items = data["items"].select([position[item_id] for item_id in split.item_ids])
    fields = ("text", "image") if "content-image" in models else ("text",)
    config = ContentSASRecConfig(num_items=split.num_items, max_epochs=sasrec_epochs, seed=seed, id_dropout=id_dropout)
    models["content-sasrec"] = ContentSASRecRecommender(config, content_vectors(items, fields))
    return models


def run_new_item_benchmark(data, split: LeaveOneOut, new_items: frozenset[str], exclude_seen: bool = True,
                           sasrec_epochs: int = 300, seed: int = 0, id_dropout: float = 0.5,
                           only: Sequence[str] | None = None) -> dict[str, dict]:
    """Fit every model of `new_item_models` (or those named in `only`) on the train split (the SASRecs early-stopped
    on NDCG@10 of all validation users, new-item targets included) and score it once on test: `new_item_metrics`,
    the frequency buckets, train seconds (SASRecs: epochs and seconds per epoch too)."""
    rows = {}
    train = list(split.train.values())
    _, _, targets = split.histories("test")
    target_ids = [split.item_ids[target] for target in targets]
    counts = target_train_counts(data, split.samples("test"))
    models = new_item_models(data, split, sasrec_epochs, seed, id_dropout)
    unknown = sorted(set(only or ()) - set(models))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose among {sorted(models)}.")
    for name, model in models.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        if isinstance(model, SASRecRecommender):
            model.fit(train, validation=lambda m: evaluate_scorer(m, split, "validation", exclude_seen)["NDCG@10"])
        else:
            model.fit(train)
        seconds = time.perf_counter() - start
        ranks = scorer_ranks(model, split, "test", exclude_seen)
        row = {**new_item_metrics(ranks, target_ids, new_items), "train_seconds": seconds,
               "by_target_frequency": ranking_by_frequency(ranks, counts)}
        if isinstance(model, SASRecRecommender):
            best = max(model.history, key=lambda r: r["validation"])
            row.update({"epochs": len(model.history), "best_epoch": best["epoch"],
                        "validation_NDCG@10": best["validation"],
                        "seconds_per_epoch": sum(r["seconds"] for r in model.history) / len(model.history)})
        rows[row_name(name, seed) if name in SEEDED_MODELS else name] = row
    return rows


def new_item_markdown(results: dict) -> str:
    """Per dataset: NDCG@10 (± standard error over users) and HR@10 of every row on new-item targets, on the other
    targets and on all, with the protocol and thread count above it, then NDCG@10 by the target's train frequency."""
    lines = ["# New-item benchmark", ""]
    for dataset, entry in results["datasets"].items():
        lines += [f"## {dataset}", "", f"Protocol: {entry['protocol']}.", "",
                  f"Seed {entry['seed']}, {entry['torch_threads']} torch thread(s).", ""]
        header = "| model | " + " | ".join(f"{g} NDCG@10 | {g} HR@10 | {g} users" for g in GROUPS) + " | train s |"
        lines += [header, "|" + "---|" * (2 + 3 * len(GROUPS))]
        for name, row in entry["models"].items():
            cells = []
            for group in GROUPS:
                m = row.get(group)
                cells += ([f"{m['NDCG@10']:.4f} ± {m['NDCG@10_se']:.4f}", f"{m['HR@10']:.4f}", str(m["num_users"])]
                          if m else ["–", "–", "0"])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['train_seconds']:.0f} |")
        lines += ["", *_frequency_table(entry["models"])]
    return "\n".join(lines)


def new_item_plot(results: dict, path: Path) -> None:
    """NDCG@10 with standard-error bars per row and target group, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["datasets"]
    figure, axes = plt.subplots(1, len(entries), figsize=(7 * len(entries), 4.5), squeeze=False)
    for axis, (dataset, entry) in zip(axes[0], entries.items()):
        names = list(entry["models"])
        width = 0.8 / len(GROUPS)
        for offset, group in enumerate(GROUPS):
            values = [entry["models"][n].get(group, {}).get("NDCG@10", 0.0) for n in names]
            errors = [entry["models"][n].get(group, {}).get("NDCG@10_se", 0.0) for n in names]
            axis.bar([i + (offset - 1) * width for i in range(len(names))], values, width, yerr=errors, label=group)
        axis.set_xticks(range(len(names)), short_labels(names, 18), rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("test NDCG@10")
        axis.set_title(dataset)
        axis.legend(title="targets")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


__all__ = ["GROUPS", "SEEDED_MODELS", "new_item_markdown", "new_item_metrics", "new_item_models", "new_item_plot",
           "run_new_item_benchmark"]
