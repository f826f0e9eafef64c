"""Metrics against values computed by hand."""

import math

import pytest
import torch

from processing_unimp.training.metrics import (
    corpus_bleu,
    ranking_metrics,
    rating_metrics,
    rouge_scores,
    selection_metrics,
    target_ranks,
)


def test_target_ranks_count_ties_against_the_target_and_filter_seen_items():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    assert target_ranks(scores, torch.tensor([2, 0])).tolist() == [3, 4]
    seen = torch.tensor([[False, True, False, False], [False, False, True, True]])
    assert target_ranks(scores, torch.tensor([2, 2]), exclude=seen).tolist() == [2, 3]


def test_ranking_metrics_from_ranks():
    metrics = ranking_metrics(torch.tensor([1, 3, 11]))
    assert metrics["HR@1"] == pytest.approx(1 / 3)
    assert metrics["HR@5"] == pytest.approx(2 / 3)
    assert metrics["NDCG@5"] == pytest.approx((1 + 0.5) / 3)
    assert metrics["MRR@5"] == pytest.approx((1 + 1 / 3) / 3)
    assert metrics["HR@20"] == 1.0 and metrics["NDCG@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(12)) / 3)


def test_bleu_by_hand():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    # p1..p4 = 6/7, 5/6, 4/5, 3/4; the hypothesis is longer, so no brevity penalty.
    assert corpus_bleu(["the cat sat on the mat today"], ["the cat sat on the mat"]) == pytest.approx((3 / 7) ** 0.25)
    assert corpus_bleu(["the cat"], ["the cat sat on"], max_n=1) == pytest.approx(math.exp(-1))
    assert corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"], max_n=1) == pytest.approx(5 / 6)
    assert corpus_bleu(["the cat sat on the mat"], ["the cat is on the mat"]) == 0.0  # no 4-gram in common


def test_rouge_by_hand():
    scores = rouge_scores(["a b c d"], ["a c d e"])
    assert scores["ROUGE-1"] == pytest.approx(0.75)
    assert scores["ROUGE-2"] == pytest.approx(1 / 3)
    assert scores["ROUGE-L"] == pytest.approx(0.75)


def test_rating_and_selection_metrics():
    errors = rating_metrics(torch.tensor([4.0, 2.0]), torch.tensor([5.0, 5.0]), prefix="expected_")
    assert errors == {"expected_RMSE": pytest.approx(math.sqrt(5)), "expected_MAE": pytest.approx(2.0)}
    result = selection_metrics([{"a"}, {"b", "c"}], [{"a", "d"}, {"c"}])
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["F1"] == pytest.approx(2 / 3)
