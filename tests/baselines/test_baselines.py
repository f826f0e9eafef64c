"""Baselines learn the patterns they should, score every catalogue item, and share the protocol's interface."""

import torch

from processing_unimp.baselines.recommenders import (
    ContentRecommender,
    ItemKNN,
    PopularityRecommender,
    SASRecConfig,
    SASRecRecommender,
    content_vectors,
    training_windows,
)
from processing_unimp.data.recbole import export_recbole
from processing_unimp.evaluation.metrics import target_ranks
from processing_unimp.evaluation.protocol import LeaveOneOut, evaluate_scorer
from processing_unimp.schema_unimp import interactions_dataset, items_dataset


def test_popularity_ranks_by_training_counts():
    model = PopularityRecommender(num_items=4).fit([[0, 1, 1], [1, 2]])
    scores = model.score([[3], [0]])
    assert scores.shape == (2, 4) and scores[0].tolist() == [1, 3, 1, 0]


def test_sasrec_learns_a_deterministic_successor_that_popularity_cannot():
    # Item i is always followed by item (i + 1) % 20, whatever the history length: every item is equally popular.
    sequences = [[(start + k) % 20 for k in range(length)] for start in range(20) for length in (4, 9, 30)]
    config = SASRecConfig(num_items=20, max_length=8, hidden_dropout=0.1, attention_dropout=0.1, learning_rate=5e-3,
                          batch_targets=64, max_epochs=40)
    model = SASRecRecommender(config).fit(sequences, progress=False)
    histories = [[(start + k) % 20 for k in range(length)] for start in range(20) for length in (1, 3, 12)]
    targets = torch.tensor([(h[-1] + 1) % 20 for h in histories])
    scores = model.score(histories)
    assert scores.shape == (60, 20) and torch.isfinite(scores).all()
    assert (target_ranks(scores, targets) == 1).float().mean() > 0.95
    popularity = PopularityRecommender(20).fit(sequences).score(histories)
    assert (target_ranks(popularity, targets) == 1).float().mean() < 0.1


def test_sasrec_stops_early_on_validation_and_restores_the_best_epoch():
    sequences = [[k % 5, (k + 1) % 5, (k + 2) % 5] for k in range(10)]
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.4, 0.1, 0.0])
    model = SASRecRecommender(SASRecConfig(num_items=5, max_length=4, max_epochs=50, patience=3))
    states = []
    model.fit(sequences,
              validation=lambda m: (states.append(m.model.state_dict()["norm.weight"].clone()), next(scores))[1],
              progress=False)
    assert len(model.history) == 5  # best at epoch 2, then 3 epochs without improvement
    torch.testing.assert_close(model.model.state_dict()["norm.weight"], states[1])


def test_training_windows_make_every_interaction_but_the_first_a_target_once():
    sequences = [list(range(120)), list(range(200, 207)), [300, 301]]
    inputs, targets = training_windows(sequences, max_length=50)
    flat = targets[targets >= 0].tolist()
    expected = [*range(1, 120), *range(201, 207), 301]
    assert sorted(flat) == sorted(expected) and len(flat) == len(expected)
    for row_inputs, row_targets in zip(inputs, targets):  # every target sees >= 25 earlier items, or all of them
        for position in (row_targets >= 0).nonzero().flatten().tolist():
            context = row_inputs[: position + 1] - 1
            assert context[-1] + 1 == row_targets[position] or row_targets[position] >= 200
            assert position + 1 >= 25 or context[0] in (0, 200, 300)


def test_itemknn_recovers_planted_co_occurrences():
    # Items come in pairs (2k, 2k+1) that users always take together; a few random noise items beside them.
    generator = torch.Generator().manual_seed(0)
    sequences = []
    for user in range(200):
        pair = 2 * (user % 10)
        noise = torch.randint(20, 40, (2,), generator=generator).tolist()
        sequences.append([pair, *noise, pair + 1])
    model = ItemKNN(num_items=40, k=5).fit(sequences)
    histories = [[2 * k] for k in range(10)]
    ranks = target_ranks(model.score(histories), torch.tensor([2 * k + 1 for k in range(10)]))
    assert ranks.tolist() == [1] * 10


def test_content_baseline_ranks_items_like_the_history_first():
    items = items_dataset([{"item_id": f"i{k}", "title": title, "categories": [category]}
                           for k, (title, category) in enumerate([("red shoe", "Shoes"), ("red boot", "Shoes"),
                                                                  ("blue hat", "Hats"), ("green cap", "Hats")])])
    model = ContentRecommender(content_vectors(items, ("text",)))
    scores = model.fit([]).score([[0], [2]])
    assert scores[0].argsort(descending=True)[:2].tolist() == [0, 1]
    assert scores[1].argsort(descending=True)[:2].tolist() == [2, 3]


def _toy_dataset():
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 2), ("u1", "d", 3), ("u2", "b", 5), ("u2", "a", 6),
            ("u2", "d", 7)]
    interactions = interactions_dataset([{"user_id": u, "item_id": i, "timestamp": t} for u, i, t in rows])
    index = {u: [k for k, row in enumerate(rows) if row[0] == u] for u in ("u1", "u2")}
    pick = lambda positions: interactions.select(positions)  # noqa: E731
    data = {"interactions": interactions, "items": items_dataset([{"item_id": i} for i in "abcd"]),
            "train": pick([*index["u1"][:-2], *index["u2"][:-2]]),
            "validation": pick([index["u1"][-2], index["u2"][-2]]), "test": pick([index["u1"][-1], index["u2"][-1]])}
    return data


def test_leave_one_out_histories_and_seen_exclusion():
    split = LeaveOneOut.from_dataset(_toy_dataset())
    users, histories, targets = split.histories("test")
    assert users == ["u1", "u2"] and histories == [[0, 1, 2], [1, 0]] and targets == [3, 3]
    # A scorer that likes seen items most: with exclusion the target ranks first, without it third or second.
    class LikesSeen:
        def score(self, batch):
            return torch.stack([torch.tensor([1.0 if i in h else i / 10 for i in range(4)]) for h in batch])

    assert evaluate_scorer(LikesSeen(), split, "test")["HR@1"] == 1.0
    assert evaluate_scorer(LikesSeen(), split, "test", exclude_seen=False)["HR@1"] == 0.0


def test_recbole_export_order_reproduces_the_project_targets(tmp_path):
    data = _toy_dataset()
    folder = export_recbole(data, tmp_path, "toy")
    lines = (folder / "toy.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    per_user: dict[str, list[tuple[float, str]]] = {}
    for line in lines[1:]:
        user, item, time = line.split("\t")
        per_user.setdefault(user, []).append((float(time), item))
    for user in per_user:  # RecBole: stable sort by time, last = test, second last = validation
        ordered = [item for _, item in sorted(per_user[user], key=lambda pair: pair[0])]
        assert ordered[-1] == dict(zip(data["test"]["user_id"], data["test"]["item_id"]))[user]
        assert ordered[-2] == dict(zip(data["validation"]["user_id"], data["validation"]["item_id"]))[user]
    assert "LS: valid_and_test" in (tmp_path / "toy.yaml").read_text()
