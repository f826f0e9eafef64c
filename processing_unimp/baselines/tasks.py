"""Trivial baselines for UniMP's non-recommend tasks, scored with the same metrics as UniMP (offline, not shipped).

They give the floor that UniMP's search, rating, explanation and selection figures on the test split must beat:
user-mean rating, a random candidate, popularity within the query-word tiers of search, and the most common explanation.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..catalogue_unimp import ItemCatalogue
from ..evaluation.metrics import ranking_metrics, rating_metrics, selection_metrics, text_metrics
from ..evaluation.protocol import rank_targets
from ..ranking_unimp import tiered
from ..schema_unimp import item_id_of


def user_mean_ratings(samples: Sequence[Mapping[str, Any]], train) -> torch.Tensor:
    """Each sample's target rating predicted as the mean of its history's ratings (else the train split's mean)."""
    train_ratings = [r for r in train["rating"] if r is not None]
    global_mean = sum(train_ratings) / len(train_ratings)
    predicted = []
    for sample in samples:
        ratings = [h["rating"] for h in sample["history"] if h.get("rating") is not None]
        predicted.append(sum(ratings) / len(ratings) if ratings else global_mean)
    return torch.tensor(predicted)


def _user_mean_rating(samples: Sequence[Mapping[str, Any]], train) -> dict[str, float]:
    """RMSE/MAE of `user_mean_ratings`."""
    truth = [float(s["target"]["rating"]) for s in samples]
    return rating_metrics(user_mean_ratings(samples, train), torch.tensor(truth), "expected_")


def _random_selection(samples: Sequence[Mapping[str, Any]], seed: int) -> dict[str, float]:
    """Precision/recall/F1 of one candidate drawn uniformly at random per sample (UniMP also selects one)."""
    rng = random.Random(seed)
    predicted = [{rng.choice(list(s["candidates"]))} for s in samples]
    return selection_metrics(predicted, [set(s["answer"]) for s in samples])


class QueryPopularity:
    """Search's floor as a protocol scorer: train popularity within the tiers UniMP's search ranks by (items holding
    more of the query's words first, `ItemCatalogue.query_word_counts`)."""

    def __init__(self, items, train):
        self.catalogue = ItemCatalogue(items)
        self.index = {item_id: i for i, item_id in enumerate(self.catalogue.item_ids)}
        self.popularity = torch.zeros(len(self.index))
        for item_id, count in Counter(train["item_id"]).items():
            if item_id in self.index:
                self.popularity[self.index[item_id]] = count

    def score(self, histories: Sequence[Sequence[int]], queries: Sequence[str | None]) -> torch.Tensor:
        """`(B, num_items)`: popularity, ordered by query-word tier first."""
        tiers = torch.zeros(len(histories), len(self.index))
        for row, query in enumerate(queries):
            for item_id, count in self.catalogue.query_word_counts(query).items():
                tiers[row, self.index[item_id]] = count
        return tiered(self.popularity.repeat(len(histories), 1), tiers)


def _category_popularity_search(samples: Sequence[Mapping[str, Any]], items, train) -> dict[str, float]:
    """Ranking metrics of `QueryPopularity` through the protocol's ranking path; history items are excluded as in
    `evaluate_ranking`."""
    scorer = QueryPopularity(items, train)
    index = scorer.index
    histories = [[index[item_id_of(h)] for h in s["history"] if item_id_of(h) in index] for s in samples]
    targets = [index[s["target"]["item_id"]] for s in samples]
    return ranking_metrics(rank_targets(scorer, histories, targets, queries=[s["query"] for s in samples]))


def _most_common_explanation(samples: Sequence[Mapping[str, Any]], train) -> dict[str, float]:
    """BLEU/ROUGE of the train split's most common explanation as every sample's explanation (samples with one)."""
    explanation = Counter(e for e in train["explanation"] if e).most_common(1)[0][0]
    references = [s["target"]["explanation"] for s in samples if s["target"].get("explanation")]
    return {**text_metrics([explanation] * len(references), references), "num_explanations": len(references)}


def task_baselines(data, samples: dict[str, list[dict]], seed: int = 0) -> dict[str, dict[str, float]]:
    """The trivial baselines' rows for the tasks in `samples` ("search", "rate_explain", "select"), each from the
    metric function UniMP's row uses, so the two compare directly; `data` is a `load_unimp_dataset` DatasetDict."""
    rows: dict[str, dict[str, float]] = {}
    if "search" in samples:
        rows["search: popularity in the query's category"] = _category_popularity_search(
            samples["search"], data["items"], data["train"])
    if "rate_explain" in samples:
        rows["rating: user mean"] = _user_mean_rating(samples["rate_explain"], data["train"])
        if any(s["target"].get("explanation") for s in samples["rate_explain"]):
            rows["explanation: most common"] = _most_common_explanation(samples["rate_explain"], data["train"])
    if "select" in samples:
        rows["selection: random"] = _random_selection(samples["select"], seed)
    return rows


__all__ = ["task_baselines", "user_mean_ratings"]
