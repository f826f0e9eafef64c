"""Evaluation metrics: exact full-ranking metrics, rating errors, BLEU/ROUGE, selection F1 (not shipped to the Hub).

Every metric here is computed from per-example records (ranks, ratings, texts, sets), so that the records can be
gathered from all processes first (`accelerator.gather_for_metrics`) and the metric computed once over the whole
test set: the original code reported metrics from a single GPU's shard.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import torch

CUTOFFS = (1, 5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each target among all items: `scores (B, num_items)`, `targets (B,)` item indices.

    Ties count against the target (an untrained model with equal scores ranks it last, not first). `exclude (B,
    num_items)` bool removes items from the ranking (seen-item filtering); the target itself is never removed.
    """
    scores = scores.float()
    if exclude is not None:
        keep_target = torch.zeros_like(exclude)
        keep_target[torch.arange(len(targets)), targets] = True
        scores = scores.masked_fill(exclude & ~keep_target, -math.inf)
    target_scores = scores.gather(1, targets.unsqueeze(1))
    others = torch.ones_like(scores, dtype=torch.bool)
    others[torch.arange(len(targets)), targets] = False
    return ((scores >= target_scores) & others).sum(1) + 1


def ranking_metrics(ranks: torch.Tensor, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """HR (= Recall with one target), NDCG and MRR at each cutoff, from 1-based ranks."""
    ranks = ranks.double()
    metrics = {}
    for k in cutoffs:
        hit = ranks <= k
        metrics[f"HR@{k}"] = hit.double().mean().item()
        metrics[f"NDCG@{k}"] = torch.where(hit, 1 / torch.log2(ranks + 1), 0.0).mean().item()
        metrics[f"MRR@{k}"] = torch.where(hit, 1 / ranks, 0.0).mean().item()
    metrics["num_users"] = int(ranks.numel())
    return metrics


def rating_metrics(predicted: torch.Tensor, truth: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """RMSE and MAE of predicted ratings."""
    error = predicted.double() - truth.double()
    return {f"{prefix}RMSE": error.pow(2).mean().sqrt().item(), f"{prefix}MAE": error.abs().mean().item()}


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    """Corpus BLEU-`max_n` (Papineni et al.): clipped n-gram precisions, geometric mean, brevity penalty.

    Whitespace tokenisation, lower-cased, one reference per hypothesis, no smoothing.
    """
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.lower().split(), reference.lower().split()
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, max_n + 1):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def _f1(overlap: int, hyp_total: int, ref_total: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F1 over hypothesis/reference pairs (whitespace tokens, lower-cased)."""
    totals = {"ROUGE-1": 0.0, "ROUGE-2": 0.0, "ROUGE-L": 0.0}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = hypothesis.lower().split(), reference.lower().split()
        for n in (1, 2):
            hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
            overlap = sum((hyp_counts & ref_counts).values())
            totals[f"ROUGE-{n}"] += _f1(overlap, sum(hyp_counts.values()), sum(ref_counts.values()))
        totals["ROUGE-L"] += _f1(_lcs_length(hyp, ref), len(hyp), len(ref))
    count = max(len(hypotheses), 1)
    return {name: value / count for name, value in totals.items()}


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-1, BLEU-4 and ROUGE-1/2/L of generated explanations."""
    return {
        "BLEU-1": corpus_bleu(hypotheses, references, max_n=1),
        "BLEU-4": corpus_bleu(hypotheses, references, max_n=4),
        **rouge_scores(hypotheses, references),
    }


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
    "corpus_bleu",
    "rating_metrics",
    "ranking_metrics",
    "rouge_scores",
    "selection_metrics",
    "target_ranks",
    "text_metrics",
]
