"""Baselines learn the patterns they should and score every catalogue item."""

import torch

from processing_unimp.training.baselines import PopularityRecommender, SASRecConfig, train_sasrec
from processing_unimp.training.metrics import target_ranks


def test_popularity_ranks_by_training_counts():
    model = PopularityRecommender(num_items=4).fit([[0, 1, 1], [1, 2]])
    scores = model.score([[3], [0]])
    assert scores.shape == (2, 4) and scores[0].tolist() == [1, 3, 1, 0]


def test_sasrec_learns_a_deterministic_successor_and_ignores_padding():
    # Item i is always followed by item (i + 1) % 10, whatever the history length.
    sequences = [[(start + k) % 10 for k in range(length)] for start in range(10) for length in (3, 6, 9)]
    model = train_sasrec(sequences, SASRecConfig(num_items=10, hidden_size=32, max_length=8, dropout=0.0),
                         epochs=60, batch_size=16, learning_rate=5e-3, progress=False)
    histories = [[3, 4, 5], [7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]]
    scores = model.score(histories)
    assert scores.shape == (3, 10) and torch.isfinite(scores).all()
    assert target_ranks(scores, torch.tensor([6, 8, 1])).tolist() == [1, 1, 1]
