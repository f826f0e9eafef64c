"""The bundled datasets in examples/data: loadable by name, in the contract format, consistent with their
statistics, licensed, small, and reproducible by their build scripts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from processing_unimp.data.builders import BUNDLED_DATASETS, bundled_dataset_path, load_unimp_dataset
from processing_unimp.data.splits import TASK_SAMPLE_FEATURES
from processing_unimp.schema_unimp import INTERACTION_FEATURES, ITEM_FEATURES

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_bundled_dataset_loads_in_contract_format(name):
    dataset = load_unimp_dataset(name)
    assert dataset["items"].features == ITEM_FEATURES and dataset["interactions"].features == INTERACTION_FEATURES
    for split in ("train", "validation", "test"):
        assert dataset[f"tasks_{split}"].features == TASK_SAMPLE_FEATURES
    stats = json.loads((bundled_dataset_path(name) / "statistics.json").read_text())
    assert (stats["items"], stats["interactions"]) == (dataset["items"].num_rows, dataset["interactions"].num_rows)
    assert stats["users"] == len(set(dataset["interactions"]["user_id"])) == dataset["test"].num_rows
    sample = dataset["tasks_test"][0]
    assert sample["history"] and sample["target"]["item_id"] in set(dataset["items"]["item_id"])


def test_bundled_statistics_are_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for name in BUNDLED_DATASETS:
        row = (bundled_dataset_path(name) / "statistics.md").read_text().splitlines()[-1]
        assert row in readme


@pytest.mark.parametrize("name,licence", [("movielens-small", "NOTICE"), ("fashion-shop", "LICENSE")])
def test_bundled_dataset_is_licensed_small_and_has_a_card(name, licence):
    path = bundled_dataset_path(name)
    assert (path / licence).is_file()
    assert (REPO / "hub_cards" / f"dataset_{name}.md").is_file()
    files = [p for p in path.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 25_000_000  # fashion-shop v2 (3,000 users) is ~21 MB
    assert not any(str(REPO.parent) in p.read_text(errors="ignore") for p in files if p.suffix in (".json", ".md", ""))


def test_fashion_shop_has_images_and_hides_the_style():
    dataset = load_unimp_dataset("fashion-shop")
    assert all(image is not None for image in dataset["items"]["image"][:20])
    assert set(dataset["tasks_test"]["task"]) == {"recommend", "search", "rate_explain", "select", "generate_image"}
    model = json.loads((bundled_dataset_path("fashion-shop") / "preference_model.json").read_text())
    text = " ".join(f"{t} {d}" for t, d in zip(dataset["items"]["title"], dataset["items"]["description"])).lower()
    assert "style" not in text and "cluster" not in text
    assert model["style_accuracy_from_text_attributes"] < model["style_chance_accuracy"] + 0.1


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / "data" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="needs ../shared/data/fashion-mnist")
def test_fashion_shop_generator_is_deterministic(tmp_path):
    build = _script("build_fashion_shop").build
    for out in ("a", "b"):
        build(SHARED, tmp_path / out, num_users=100, num_items=200, seed=3)
    digest = {out: {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted((tmp_path / out).rglob("*")) if p.is_file()}
              for out in ("a", "b")}
    assert digest["a"] == digest["b"]


def test_expected_rating_is_the_mean_of_the_generators_ratings():
    module = _script("build_fashion_shop")
    rng = np.random.default_rng(0)
    for affinity in (-2.0, -0.5, 0.0, 0.7, 2.5):
        draws = np.clip(np.round(module.RATING_CENTRE + affinity + rng.normal(0, module.RATING_NOISE, 200_000)), 1, 5)
        assert module.expected_rating(np.array([affinity]))[0] == pytest.approx(draws.mean(), abs=0.01)


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="needs ../shared/data/fashion-mnist")
def test_rating_oracle_beats_the_user_mean_on_a_small_build(tmp_path):
    module = _script("build_fashion_shop")
    module.build(SHARED, tmp_path, num_users=300, num_items=300, seed=3)
    rows = module.rating_floor(SHARED, tmp_path, num_users=300, num_items=300, seed=3)
    users = load_unimp_dataset(tmp_path)["test"].num_rows
    assert {row["ratings"] for row in rows.values()} == {users}
    assert rows["oracle (hidden affinity)"]["RMSE"] < rows["user mean (all history ratings)"]["RMSE"]


@pytest.mark.skipif(not (SHARED / "fashion-mnist").is_dir(), reason="needs ../shared/data/fashion-mnist")
def test_history_limited_estimate_ranks_between_the_style_profile_and_the_oracle_and_needs_the_style():
    module = _script("build_fashion_shop")
    dataset = module.build(SHARED, None, num_users=300, num_items=300, seed=3)
    assert set(dataset.reference_rows["history_limited_settings"]) == set(module.HISTORY_GRID)
    for rows in dataset.reference_rows["splits"].values():
        row = {r["label"]: r for r in rows}
        history, oracle = row[module.HISTORY_LABEL], row[module.ORACLE_LABEL]
        # every user in exactly one bucket of the target's train interactions, as in the benchmark's bucket table
        assert sum(b["users"] for b in history["by_target_frequency"].values()) == history["users"]
        # the same item knowledge as the style diagnostic, plus popularity and the choice rule: clearly above it;
        # below the oracle, which also reads the users' hidden tastes, up to the noise of 300 users
        assert history["NDCG@10"] > row[module.STYLE_HEURISTIC_LABEL]["NDCG@10"] + 2 * history["NDCG@10_se"]
        assert history["NDCG@10"] < oracle["NDCG@10"] + 2 * oracle["NDCG@10_se"]
        # the users' hidden styles drive their choices: without the item styles the same fit falls well behind
        assert row[module.HISTORY_TEXT_LABEL]["NDCG@10"] < history["NDCG@10"] - 2 * history["NDCG@10_se"]
