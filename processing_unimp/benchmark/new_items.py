"""The new-item benchmark (RecFormer's in-set/cold split): every baseline on new-item targets, the others and all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from ..baselines.content import ContentSASRecConfig, ContentSASRecRecommender
from ..baselines.recommenders import content_vectors
from ..content_unimp import add_items
from ..data.splits import NewItemSplit
from ..evaluation.metrics import ranking_by_frequency, ranking_metrics
from ..evaluation.protocol import LeaveOneOut, recommend_samples
from ..evaluation.tasks import ranking_ranks
from ..training.recipe import run_training
from .report import _frequency_table, row_name, short_labels
from .runs import SEEDED_BASELINES, baseline_models, fit_and_rank, target_train_counts, unimp_arguments

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
        ranks, fit = fit_and_rank(model, split, exclude_seen)
        rows[row_name(name, seed) if name in SEEDED_MODELS else name] = {
            **new_item_metrics(ranks, target_ids, new_items), **fit,
            "by_target_frequency": ranking_by_frequency(ranks, counts)}
    return rows


def run_unimp_new_items(split: NewItemSplit, data, variant: str, output_dir: Path, epochs: float, seed: int = 0,
                        exclude_seen: bool = True) -> dict[str, Any]:
    """A UniMP variant with content item rows on the new-item split, as a shop would run it: trained with the test's
    new items outside its catalogue (the benchmark's recipe, model selection on all validation users), then given
    them with `add_items` (rows from their content, no retraining) and scored once on test."""
    compact = dict(split.dataset)
    compact["items"] = compact["items"].filter(lambda item_id: item_id not in split.test_items, input_columns="item_id")
    item_of = compact["interactions"]["item_id"]  # training never reads test: its new targets go with their items
    compact["test"] = compact["test"].filter(lambda row: item_of[row] not in split.test_items,
                                             input_columns="interaction_index")
    folder = output_dir / variant / "data"
    datasets.DatasetDict(compact).save_to_disk(str(folder))
    arguments = unimp_arguments(str(folder), variant, output_dir, "small", epochs, None, seed=seed)
    if arguments[0].item_rows != "content":
        raise ValueError(f"UniMP variant {variant!r} has free item rows: it cannot rank items added after training.")
    start = time.perf_counter()
    trainer, processor, _ = run_training(*arguments)
    seconds = time.perf_counter() - start
    row = {item_id: index for index, item_id in enumerate(data["items"]["item_id"])}
    add_items(trainer.model, processor, [data["items"][row[item_id]] for item_id in sorted(split.test_items)])
    test = recommend_samples(data, processor.item_ids, "test")
    ranks = ranking_ranks(trainer.model, processor, test, exclude_seen=exclude_seen)
    best = max((r for r in trainer.state.log_history if "eval_NDCG@10" in r), key=lambda r: r["eval_NDCG@10"])
    return {**new_item_metrics(ranks, [s["target"]["item_id"] for s in test], split.test_items),
            "train_seconds": seconds, "epochs": trainer.state.epoch, "best_epoch": best["epoch"],
            "validation_NDCG@10": best["eval_NDCG@10"], "torch_threads": torch.get_num_threads(),
            "by_target_frequency": ranking_by_frequency(ranks, target_train_counts(data, test))}


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
           "run_new_item_benchmark", "run_unimp_new_items"]
