"""Metrics against values computed by hand."""

import math

import pytest
import torch

from processing_unimp.evaluation.metrics import (
    paired_rmse_difference,
    ranking_by_frequency,
    ranking_metrics,
    rating_metrics,
    selection_metrics,
    target_ranks,
    text_metrics,
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


def test_text_metrics_are_the_libraries_published_figures_use():
    """sacrebleu corpus BLEU (13a tokens, exp smoothing) and rouge-score F1 with stemming, pinned on known pairs."""
    assert text_metrics(["the cat sat on the mat"], ["the cat sat on the mat"])["BLEU-4"] == pytest.approx(1.0)
    # p1..p4 = 6/7, 5/6, 4/5, 3/4; the hypothesis is longer, so no brevity penalty.
    assert (text_metrics(["the cat sat on the mat today"], ["the cat sat on the mat"])["BLEU-4"]
            == pytest.approx((3 / 7) ** 0.25))
    short = text_metrics(["the cat"], ["the cat sat on"])
    assert short["BLEU-1"] == pytest.approx(math.exp(-1)) and short["ROUGE-1"] == pytest.approx(2 / 3)
    scores = text_metrics(["a b c d"], ["a c d e"])
    assert scores["BLEU-1"] == pytest.approx(0.75) and scores["ROUGE-1"] == pytest.approx(0.75)
    assert scores["ROUGE-2"] == pytest.approx(1 / 3) and scores["ROUGE-L"] == pytest.approx(0.75)
    stemmed = text_metrics(["The cats are running"], ["the cat runs"])
    assert stemmed["BLEU-1"] == 0.0 and stemmed["ROUGE-1"] == pytest.approx(6 / 7)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        text_metrics(["a", "b"], ["a"])


def test_nan_scores_rank_last_and_exclusion_never_removes_the_target():
    scores = torch.tensor([[float("nan")] * 4, [0.1, float("nan"), 0.3, 0.2]])
    assert target_ranks(scores, torch.tensor([0, 3])).tolist() == [4, 2]
    exclude = torch.tensor([[True, True, False, False], [False, False, True, True]])
    assert target_ranks(torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.0, 0.1, 0.9, 0.5]]), torch.tensor([1, 3]),
                        exclude).tolist() == [1, 1]
    assert ranking_metrics(torch.tensor([1, 1]))["NDCG@10_se"] == 0.0


def test_rating_and_selection_metrics():
    errors = rating_metrics(torch.tensor([4.0, 2.0]), torch.tensor([5.0, 5.0]), prefix="expected_")
    assert errors == {"expected_RMSE": pytest.approx(math.sqrt(5)), "expected_MAE": pytest.approx(2.0)}
    result = selection_metrics([{"a"}, {"b", "c"}], [{"a", "d"}, {"c"}])
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["F1"] == pytest.approx(2 / 3)


def test_ranking_by_frequency_buckets_targets_by_their_train_interactions():
    ranks = torch.tensor([1, 3, 100, 1, 2])
    buckets = ranking_by_frequency(ranks, [0, 5, 6, 60, 60], edges=(5, 50))
    assert list(buckets) == ["<=5", "6-50", ">50"]
    assert buckets["<=5"]["users"] == 2 and buckets["6-50"]["NDCG@10"] == 0.0
    assert math.isclose(buckets["<=5"]["NDCG@10"], (1 + 1 / math.log2(4)) / 2)
    assert math.isclose(buckets[">50"]["HR@10"], 1.0)
    with pytest.raises(ValueError, match="4 target counts for 5 ranks"):
        ranking_by_frequency(ranks, [1, 2, 3, 4])


def test_paired_rmse_difference_is_the_gap_with_its_bootstrap_noise():
    truth = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0] * 40)
    same = paired_rmse_difference(truth + 1, truth + 1, truth)
    assert same["RMSE_difference"] == 0 and same["RMSE_difference_se"] == 0 and same["samples"] == 200
    better = paired_rmse_difference(truth + 0.5, truth + torch.tensor([1.0, -1.0]).repeat(100), truth)
    assert better["RMSE"] == pytest.approx(0.5) and better["reference_RMSE"] == pytest.approx(1.0)
    assert better["RMSE_difference"] == pytest.approx(-0.5) and better["RMSE_difference_high"] < 0
    noisy = paired_rmse_difference(truth + torch.randn(200, generator=torch.Generator().manual_seed(0)), truth + 1,
                                   truth)
    assert noisy["RMSE_difference_se"] > 0 and noisy["RMSE_difference_low"] < noisy["RMSE_difference_high"]
