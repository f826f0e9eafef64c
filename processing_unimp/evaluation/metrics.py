"""Evaluation metrics: exact full-ranking metrics, rating errors, BLEU/ROUGE, selection F1 (not shipped to the Hub).

Every metric here is computed from per-example records (ranks, ratings, texts, sets), so that the records can be
gathered from all processes first (`accelerator.gather_for_metrics`) and the metric computed once over the whole
test set: the original code reported metrics from a single GPU's shard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

CUTOFFS = (1, 5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each target among all items: `scores (B, num_items)`, `targets (B,)` item indices.

    Ties count against the target (an untrained model with equal scores ranks it last, not first), and a NaN score
    ranks below every number (a diverged model ranks its targets last). `exclude (B, num_items)` bool removes items
    from the ranking (seen-item filtering); the target itself is never removed.
    """
    scores = scores.float().nan_to_num(nan=-math.inf)
    rows = torch.arange(len(targets))
    others = torch.ones_like(scores, dtype=torch.bool)
    others[rows, targets] = False
    if exclude is not None:
        others &= ~exclude.to(others.device)
    target_scores = scores[rows, targets].unsqueeze(1)
    return ((scores >= target_scores) & others).sum(1) + 1


def ranking_metrics(ranks: torch.Tensor, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """HR (= Recall with one target), NDCG and MRR at each cutoff, from 1-based ranks, and the standard error of
    NDCG over users (`NDCG@k_se`): differences smaller than it are noise."""
    ranks = ranks.double().sort().values  # sorted: the same figures whatever order processes gather in
    metrics = {}
    for k in cutoffs:
        hit = ranks <= k
        metrics[f"HR@{k}"] = hit.double().mean().item()
        metrics[f"NDCG@{k}"] = torch.where(hit, 1 / torch.log2(ranks + 1), 0.0).mean().item()
        metrics[f"MRR@{k}"] = torch.where(hit, 1 / ranks, 0.0).mean().item()
        ndcg = torch.where(hit, 1 / torch.log2(ranks + 1), 0.0)
        metrics[f"NDCG@{k}_se"] = (ndcg.std() / math.sqrt(len(ndcg))).item() if len(ndcg) > 1 else 0.0
    metrics["num_users"] = int(ranks.numel())
    return metrics


FREQUENCY_EDGES = (5, 10, 20, 50)  # upper bounds of the target-frequency buckets (train interactions)


def ranking_by_frequency(ranks: torch.Tensor, counts: Sequence[int], edges: Sequence[int] = FREQUENCY_EDGES,
                         k: int = 10) -> dict[str, dict[str, float]]:
    """NDCG@k (with its standard error) and HR@k per bucket of the target item's train interactions (`counts`, one
    per rank): where sparse items rank, which a single mean hides (content and images should matter most there).
    Buckets are `<= edges[0]`, `(edges[i-1], edges[i]]`, `> edges[-1]`; empty buckets are left out."""
    counts = torch.as_tensor(list(counts))
    if counts.shape != ranks.shape:
        raise ValueError(f"{counts.numel()} target counts for {ranks.numel()} ranks.")
    bounds = [-1, *edges, math.inf]
    buckets = {}
    for low, high in zip(bounds, bounds[1:]):
        inside = (counts > low) & (counts <= high)
        if not inside.any():
            continue
        label = f"<={high}" if low < 0 else f">{low}" if high == math.inf else f"{low + 1}-{high}"
        metrics = ranking_metrics(ranks[inside], (k,))
        buckets[label] = {f"NDCG@{k}": metrics[f"NDCG@{k}"], f"NDCG@{k}_se": metrics[f"NDCG@{k}_se"],
                          f"HR@{k}": metrics[f"HR@{k}"], "users": metrics["num_users"]}
    return buckets


def rating_metrics(predicted: torch.Tensor, truth: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """RMSE and MAE of predicted ratings."""
    error = predicted.double() - truth.double()
    return {f"{prefix}RMSE": error.pow(2).mean().sqrt().item(), f"{prefix}MAE": error.abs().mean().item()}


def paired_rmse_difference(predicted: torch.Tensor, reference: torch.Tensor, truth: torch.Tensor,
                           draws: int = 2000, seed: int = 0) -> dict[str, float]:
    """RMSE(predicted) - RMSE(reference) on the same samples, with the bootstrap standard error and 95 % interval of
    that difference (samples resampled in pairs, so the noise both predictors share cancels)."""
    first = (predicted.double() - truth.double()).pow(2)
    second = (reference.double() - truth.double()).pow(2)
    rows = torch.randint(len(truth), (draws, len(truth)), generator=torch.Generator().manual_seed(seed))
    resampled = first[rows].mean(1).sqrt() - second[rows].mean(1).sqrt()
    return {"RMSE": first.mean().sqrt().item(), "reference_RMSE": second.mean().sqrt().item(),
            "RMSE_difference": (first.mean().sqrt() - second.mean().sqrt()).item(),
            "RMSE_difference_se": resampled.std().item(), "RMSE_difference_low": resampled.quantile(0.025).item(),
            "RMSE_difference_high": resampled.quantile(0.975).item(), "samples": len(truth)}


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1/BLEU-4 (sacrebleu, its default 13a tokenisation, as papers report it) and mean ROUGE-1/2/L F1
    (rouge-score, with stemming), on a 0-1 scale; one reference per hypothesis."""
    import sacrebleu
    from rouge_score import rouge_scorer

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
    bleu = {f"BLEU-{n}": sacrebleu.metrics.BLEU(max_ngram_order=n).corpus_score(hypotheses, [references]).score / 100
            for n in (1, 4)}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(reference, hypothesis) for hypothesis, reference in zip(hypotheses, references)]
    count = max(len(scores), 1)
    rouge = {f"ROUGE-{key[5:]}": sum(s[key].fmeasure for s in scores) / count for key in ("rouge1", "rouge2", "rougeL")}
    return {**bleu, **rouge}


def selection_metrics(predicted: Sequence[set], gold: Sequence[set]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 of selected item sets."""
    overlap = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_predicted, n_gold = sum(map(len, predicted)), sum(map(len, gold))
    precision = overlap / n_predicted if n_predicted else 0.0
    recall = overlap / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "F1": f1}


__all__ = [
    "CUTOFFS",
    "FREQUENCY_EDGES",
    "paired_rmse_difference",
    "ranking_by_frequency",
    "ranking_metrics",
    "rating_metrics",
    "selection_metrics",
    "target_ranks",
    "text_metrics",
]
