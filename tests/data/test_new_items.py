"""The new-item protocol: new items only where they may be, seeded, and scored by the protocol unchanged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from processing_unimp.baselines.recommenders import ContentRecommender, PopularityRecommender, content_vectors
from processing_unimp.benchmark.new_items import new_item_metrics
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.data.config import BuildConfig
from processing_unimp.data.splits import NewItemSplit, _without_new_items, new_item_split
from processing_unimp.evaluation.protocol import LeaveOneOut, scorer_ranks

# movielens-small's build config, recommend samples only (the other tasks draw random numbers, not new items)
CONFIG = BuildConfig(seed=0, train_targets_per_user=3, tasks=("recommend",))


@pytest.fixture(scope="module")
def compact():
    return load_unimp_dataset("movielens-small", materialize=False)


@pytest.fixture(scope="module")
def split(compact) -> NewItemSplit:
    return new_item_split(compact, CONFIG, fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def data(split: NewItemSplit):
    return split.materialize()


def _recommend_rows(table) -> list[dict]:
    return [row for row in table.to_list() if row["task"] == "recommend"]


def test_no_new_items_gives_the_dataset_back(compact):
    same = new_item_split(compact, CONFIG, fraction=0.0, seed=0)
    assert not same.test_items and not same.validation_items
    for name in ("train", "validation", "test"):
        assert same.dataset[name]["interaction_index"] == compact[name]["interaction_index"]
        assert same.dataset[f"tasks_{name}"].to_list() == _recommend_rows(compact[f"tasks_{name}"])


def test_new_items_occur_only_as_their_targets(split, data, compact):
    catalogue = len(compact["items"])
    assert len(split.test_items) == len(split.validation_items) == round(0.2 * catalogue)
    assert not split.test_items & split.validation_items
    new = split.test_items | split.validation_items
    assert not new & set(data["train"]["item_id"])
    assert not split.test_items & set(data["validation"]["item_id"])
    assert not split.validation_items & set(data["test"]["item_id"])
    assert split.test_items & set(data["test"]["item_id"])
    assert split.validation_items & set(data["validation"]["item_id"])
    for name, forbidden in (("tasks_train", new), ("tasks_validation", new), ("tasks_test", split.test_items)):
        histories = {h["item_id"] for sample in data[name] for h in sample["history"]}
        assert not forbidden & histories, name
    assert not new & {s["target"]["item_id"] for s in data["tasks_train"]}
    # every user keeps its test target (no movielens-small user falls below 3 interactions)
    assert split.dataset["test"]["interaction_index"] == compact["test"]["interaction_index"]
    assert "only train: 0" in split.protocol() and "20% of the catalogue (699 items)" in split.protocol()


def test_new_items_are_seeded(compact, split):
    assert new_item_split(compact, CONFIG, fraction=0.2, seed=0).test_items == split.test_items
    other = new_item_split(compact, CONFIG, fraction=0.2, validation_fraction=0.05, seed=1)
    assert other.test_items != split.test_items and len(other.validation_items) == round(0.05 * len(compact["items"]))


def test_the_protocol_scores_the_derived_split_unchanged(split, data):
    loo = LeaveOneOut.from_dataset(data)
    _, _, targets = loo.histories("test")
    target_ids = [loo.item_ids[t] for t in targets]
    popularity = PopularityRecommender(loo.num_items).fit(list(loo.train.values()))
    by_popularity = new_item_metrics(scorer_ranks(popularity, loo), target_ids, split.test_items)
    assert by_popularity["new"]["NDCG@10"] == 0.0 < by_popularity["other"]["NDCG@10"]  # no train count, ties last
    content = ContentRecommender(content_vectors(data["items"], ("text",)))
    by_content = new_item_metrics(scorer_ranks(content, loo), target_ids, split.test_items)
    assert by_content["new"]["NDCG@10"] > 0.0 and by_content["new"]["num_users"] == sum(
        t in split.test_items for t in target_ids)


def test_a_user_left_too_short_keeps_no_new_item():
    item_ids = np.array(["new", "a", "new", "v", "b", "new"], dtype=object)
    rows = np.arange(6)
    # test-new "new" stays only as the last row; validation-new "v" only as the second last left
    assert _without_new_items(rows, item_ids, {"new"}, {"v"}).tolist() == [1, 4, 5]
    assert _without_new_items(rows[[1, 3, 5]], item_ids, {"new"}, {"v"}).tolist() == [1, 3, 5]
    assert _without_new_items(rows[2:], item_ids, {"new"}, {"v"}).tolist() == [4]  # too short: trains, nothing new


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fraction": 1.0}, "fraction must lie in"),
    ({"fraction": 0.1, "validation_fraction": -0.1}, "validation_fraction must lie in"),
    ({"fraction": 0.1, "config": replace(CONFIG, split="user")}, "leave-one-out build config"),
])
def test_bad_settings_are_refused(compact, kwargs, message):
    with pytest.raises(ValueError, match=message):
        new_item_split(compact, **{"config": CONFIG, **kwargs})


def test_the_materialized_dataset_is_refused():
    with pytest.raises(ValueError, match="materialize=False"):
        new_item_split(load_unimp_dataset("movielens-small"), CONFIG)
