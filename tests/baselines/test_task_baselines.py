"""The trivial non-recommend baselines on a small hand-made dataset."""

import math

import pytest
from datasets import Dataset

from processing_unimp.baselines.tasks import task_baselines

MODAL = "I love the dark colour of this bag."


@pytest.fixture(scope="module")
def data():
    items = Dataset.from_list([
        {"item_id": "bag1", "title": "Dark bag", "categories": ["Bags"]},
        {"item_id": "bag2", "title": "Light tote", "categories": ["Bags"]},
        {"item_id": "shoe1", "title": "Red shoe", "categories": ["Shoes"]},
        {"item_id": "shoe2", "title": "Blue shoe", "categories": ["Shoes"]},
        {"item_id": "hat1", "title": "Green hat", "categories": ["Hats"]},
    ])
    # Popularity: shoe1 5, bag1 3, bag2 2, shoe2 1, hat1 0; ratings' mean 3.0; MODAL is the commonest explanation.
    interactions = ([("shoe1", 2.0, "Too small for me.")] * 2 + [("shoe1", 3.0, "")] * 3 + [("bag1", 4.0, MODAL)] * 3
                    + [("bag2", 3.0, "")] * 2 + [("shoe2", 2.0, "")])
    train = Dataset.from_list([
        {"user_id": f"u{n}", "item_id": item, "timestamp": n, "rating": rating, "explanation": explanation}
        for n, (item, rating, explanation) in enumerate(interactions)
    ])
    return {"items": items, "train": train}


def sample(task, history=(), target=None, **fields):
    return {"task": task, "user_id": "u", "history": [dict(h) for h in history], "target": target, **fields}


def test_user_mean_rating_matches_hand_computed_rmse(data):
    samples = [
        sample("rate_explain", [{"item_id": "bag1", "rating": 4.0}, {"item_id": "shoe1", "rating": 2.0}],
               {"item_id": "bag2", "rating": 5.0, "explanation": ""}),  # predicts 3.0: error 2
        sample("rate_explain", [{"item_id": "bag1", "rating": None}],
               {"item_id": "hat1", "rating": 4.0, "explanation": ""}),  # no rating: train mean 3.0, error 1
        sample("rate_explain", [{"item_id": "hat1", "rating": 1.0}],
               {"item_id": "bag1", "rating": 1.0, "explanation": ""}),  # error 0
    ]
    rows = task_baselines(data, {"rate_explain": samples})
    assert set(rows) == {"rating: user mean"}  # no reference explanation: no explanation row
    assert rows["rating: user mean"]["expected_RMSE"] == pytest.approx(math.sqrt((4 + 1 + 0) / 3))
    assert rows["rating: user mean"]["expected_MAE"] == pytest.approx(1.0)


def test_random_selection_is_near_one_third_and_reproducible(data):
    samples = [sample("select", candidates=["bag1", "shoe1", "hat1"], answer=[("bag1", "shoe1", "hat1")[n % 3]])
               for n in range(300)]
    first = task_baselines(data, {"select": samples}, seed=3)["selection: random"]
    assert 0.25 < first["F1"] < 0.42
    assert first["precision"] == pytest.approx(first["recall"])
    assert task_baselines(data, {"select": samples}, seed=3)["selection: random"] == first


def test_search_ranks_popular_in_category_item_first_and_excludes_history(data):
    samples = [
        sample("search", [], {"item_id": "bag1"}, query="Bags"),  # shoe1 is more popular but not a bag
        sample("search", [{"item_id": "bag1"}], {"item_id": "bag2"}, query="bags"),  # bag1 seen: bag2 is first
        sample("search", [], {"item_id": "shoe1"}, query="zzz"),  # no matching item: plain popularity
    ]
    row = task_baselines(data, {"search": samples})["search: popularity in the query's category"]
    assert row["HR@1"] == 1.0 and row["num_users"] == 3
    out_of_category = sample("search", [], {"item_id": "hat1"}, query="bags")
    ranked = task_baselines(data, {"search": [out_of_category]})["search: popularity in the query's category"]
    assert ranked["MRR@5"] == pytest.approx(1 / 5)  # after both bags, then by popularity among the rest: last


def test_most_common_explanation_is_the_modal_one(data):
    samples = [sample("rate_explain", [], {"item_id": "bag1", "rating": 4.0, "explanation": MODAL}),
               sample("rate_explain", [], {"item_id": "bag2", "rating": 4.0, "explanation": ""})]
    row = task_baselines(data, {"rate_explain": samples})["explanation: most common"]
    assert row["BLEU-4"] == pytest.approx(1.0) and row["ROUGE-L"] == pytest.approx(1.0)
    assert row["num_explanations"] == 1
