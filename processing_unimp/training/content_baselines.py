"""A content-aware SASRec and the new-item benchmark it is the reference of (issue 33; not shipped to the Hub).

`ContentSASRecRecommender` is SASRec in the transductive setting of UniSRec and MoRec: an item's embedding is a
learned projection of the content vector the content kNN reads (`baselines.content_vectors`: text TF-IDF and image
pixels) plus an ID embedding. Only items seen in training have an ID part; an item the model never trained on is
embedded, and ranked, by its content alone. ID rows are dropped item by item while training (`id_dropout`), so the
content part must rank on its own too. `run_new_item_benchmark` scores every baseline under the new-item protocol
(`processing_unimp.data.splits.new_item_split`) on new-item targets, on the other targets and on all.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .baselines import SASRec, SASRecConfig, SASRecRecommender, content_vectors, training_windows
from .benchmark import SEEDED_BASELINES, _frequency_table, baseline_models, row_name, short_labels, target_train_counts
from .metrics import ranking_by_frequency, ranking_metrics
from .protocol import LeaveOneOut, evaluate_scorer, scorer_ranks


@dataclass
class ContentSASRecConfig(SASRecConfig):
    """SASRec's configuration plus the content side: the chance of dropping an item's ID row at each forward pass
    while training (content must then rank it alone)."""

    id_dropout: float = 0.5


class ContentItemEmbedding(nn.Module):
    """Rows `0 .. num_items` (0 = padding) = ID embedding (items with an ID only) + projection of the content vector.

    `weight` is the whole table, so that SASRec's forward pass and its tied output layer read it unchanged.
    """

    def __init__(self, content: torch.Tensor, hidden_size: int, id_dropout: float):
        super().__init__()
        self.id_embedding = nn.Embedding(len(content) + 1, hidden_size, padding_idx=0)
        self.projection = nn.Linear(content.shape[1], hidden_size, bias=False)
        self.register_buffer("content", torch.cat([content.new_zeros(1, content.shape[1]), content.float()]))
        self.register_buffer("has_id", torch.zeros(len(content) + 1, dtype=torch.bool))
        self.id_dropout = id_dropout

    @property
    def weight(self) -> torch.Tensor:
        keep = self.has_id
        if self.training and self.id_dropout > 0:
            keep = keep & (torch.rand(len(keep), device=keep.device) >= self.id_dropout)
        return self.id_embedding.weight * keep[:, None] + self.projection(self.content)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.weight)


class ContentSASRec(SASRec):
    """SASRec whose item embedding (input and tied output) is `ContentItemEmbedding` of `content` (num_items, D)."""

    def __init__(self, config: ContentSASRecConfig, content: torch.Tensor):
        if len(content) != config.num_items:
            raise ValueError(f"ContentSASRec: {len(content)} content vectors for num_items={config.num_items}.")
        super().__init__(config)
        self.item_embedding = ContentItemEmbedding(content, config.hidden_size, config.id_dropout)
        self.item_embedding.apply(self._init_weights)


class ContentSASRecRecommender(SASRecRecommender):
    """`ContentSASRec` trained as `SASRecRecommender` trains SASRec (every training interaction a target, CE,
    validation NDCG@10 each epoch, early stopping, best weights restored); the items of the training sequences get
    ID rows, the others are ranked by content alone. The CE runs over the items of the training sequences only: an
    item added later is no negative of every training step (that pushes its content row, and the content rows like
    it, below every warm item: measured, new-item NDCG@10 0.0000 on fashion-shop)."""

    def __init__(self, config: ContentSASRecConfig, content: torch.Tensor):
        super().__init__(config)
        self.content = content

    def fit(self, sequences: Sequence[Sequence[int]], validation: Callable[[SASRecRecommender], float] | None = None,
            progress: bool = True) -> ContentSASRecRecommender:
        config = self.config
        torch.manual_seed(config.seed)
        self.model = ContentSASRec(config, self.content)
        trained = [item + 1 for sequence in sequences for item in sequence]
        self.model.item_embedding.has_id[torch.as_tensor(trained, dtype=torch.long)] = True
        known = self.model.item_embedding.has_id[1:]  # the catalogue while training: new items are not in it yet
        inputs, targets = training_windows([s for s in sequences if len(s) >= 2], config.max_length)
        batch_windows = max(1, round(config.batch_targets * len(inputs) / (targets >= 0).sum().item()))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        generator = torch.Generator().manual_seed(config.seed)
        best_score, best_state, stale = -math.inf, None, 0
        for epoch in (bar := tqdm(range(config.max_epochs), desc="training content SASRec", disable=not progress)):
            start, total = time.perf_counter(), 0.0
            self.model.train()
            for batch in torch.randperm(len(inputs), generator=generator).split(batch_windows):
                batch_targets = targets[batch]
                hidden = self.model(inputs[batch])[batch_targets >= 0]
                logits = self.model.item_logits(hidden).masked_fill(~known, -math.inf)
                loss = F.cross_entropy(logits, batch_targets[batch_targets >= 0])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            record = {"epoch": epoch + 1, "loss": total / math.ceil(len(inputs) / batch_windows),
                      "seconds": time.perf_counter() - start}
            if validation is not None:
                record["validation"] = validation(self)
                if record["validation"] > best_score:
                    best_score, best_state, stale = record["validation"], copy.deepcopy(self.model.state_dict()), 0
                else:
                    stale += 1
            self.history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if validation is not None and stale >= config.patience:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self


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


__all__ = ["GROUPS", "SEEDED_MODELS", "ContentItemEmbedding", "ContentSASRec", "ContentSASRecConfig",
           "ContentSASRecRecommender", "new_item_markdown", "new_item_metrics", "new_item_models", "new_item_plot",
           "run_new_item_benchmark"]
