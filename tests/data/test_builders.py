"""Dataset builders on tiny fixtures written in each raw format: cleaning, k-core, splits, task samples,
determinism, leakage, bad input and atomic saving."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
from dataclasses import replace
from pathlib import Path

import datasets
import pandas as pd
import pytest
from PIL import Image

from processing_unimp.data import builders, sources
from processing_unimp.data.builders import kcore_filter, load_unimp_dataset
from processing_unimp.data.config import BuildConfig
from processing_unimp.data.splits import TASK_SAMPLE_FEATURES
from processing_unimp.schema_unimp import INTERACTION_FEATURES, ITEM_FEATURES

SMALL = BuildConfig(min_user_interactions=3, min_item_interactions=2, max_history=4, train_targets_per_user=2)


def events(n_users: int = 6, n_items: int = 8, per_user: int = 5) -> list[tuple[str, str, int, float]]:
    """(user, item, timestamp, rating) rows in which every user and item passes the SMALL k-core."""
    return [(f"u{u}", f"i{(3 * u + k) % n_items}", 1_000_000 + 100 * k + u, float(1 + (u + k) % 5))
            for u in range(n_users) for k in range(per_user)]


def png(color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_movielens(directory: Path, extra_rating_lines: list[bytes] = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [b"userId,movieId,rating,timestamp"] + [f"{u[1:]},{i[1:]},{r},{t}".encode() for u, i, t, r in events()]
    (directory / "ratings.csv").write_bytes(b"\n".join(lines + list(extra_rating_lines)) + b"\n")
    movies = ["movieId,title,genres"] + [f'{i},"Movie {i}, The ({1990 + i})",Comedy|Drama' for i in range(8)]
    (directory / "movies.csv").write_text("\n".join(movies) + "\n")
    return directory


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------- core


def test_kcore_is_iterative():
    # Pass 1 drops u3 (2 items) and items d, e (< 3 users); that leaves u4, u5 with 2 items, dropped in pass 2.
    baskets = {"u1": "abc", "u2": "abc", "u3": "cd", "u4": "abe", "u5": "abe", "u6": "abc", "u7": "abc"}
    frame = pd.DataFrame([(u, i) for u, items in baskets.items() for i in items], columns=["user_id", "item_id"])
    out = kcore_filter(frame, min_user=3, min_item=3)
    assert sorted(set(out.user_id)) == ["u1", "u2", "u6", "u7"] and sorted(set(out.item_id)) == ["a", "b", "c"]
    assert len(out) == 12
    assert kcore_filter(frame, min_user=4, min_item=1).empty


def test_movielens_builder_format_and_report(tmp_path):
    bad = [b"0,0,1.0,1000000", b"9,1,not-a-number,1000", b"9,\xff\xfe,4.0,1000"]  # duplicate, bad rating, non-UTF-8
    source = write_movielens(tmp_path / "ml", bad)
    out = tmp_path / "built"
    dataset = sources.build_movielens(source, output_dir=out, config=SMALL)
    assert dataset["items"].features == ITEM_FEATURES and dataset["interactions"].features == INTERACTION_FEATURES
    assert dataset["tasks_test"].features == TASK_SAMPLE_FEATURES
    item = dataset["items"][0]
    assert (item["title"] == "Movie 0, The" and item["description"] == "Year: 1990"
            and item["categories"] == ["Comedy", "Drama"])
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped"] == {"bad_rating": 1, "duplicate_interaction": 1, "non_utf8": 1}
    assert "no_generate_image_samples" in report["notes"]
    stats = json.loads((out / "statistics.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"], stats["images"]) == (6, 8, 30, 0)
    assert "| movielens | 6 | 8 | 30 |" in (out / "statistics.md").read_text()
    reloaded = load_unimp_dataset(out)
    assert reloaded["tasks_test"][:] == dataset["tasks_test"][:]
    assert reloaded["train"][:] == dataset["train"][:]


def test_missing_column_raises_naming_it(tmp_path):
    source = write_movielens(tmp_path / "ml")
    (source / "ratings.csv").write_text("userId,movieId,rating\n1,2,3.0\n")
    with pytest.raises(ValueError, match="timestamp"):
        sources.build_movielens(source, config=SMALL)


def test_strict_mode_names_field_and_item(tmp_path):
    source = write_movielens(tmp_path / "ml", [b"1,5,oops,1000"])
    with pytest.raises(ValueError, match=r"bad_rating.*movieId=5"):
        sources.build_movielens(source, config=replace(SMALL, strict=True))


def test_mostly_broken_input_is_refused(tmp_path):
    source = write_movielens(tmp_path / "ml", [b"\xff,\xff,1,1"] * 100)
    with pytest.raises(ValueError, match="skipped"):
        sources.build_movielens(source, config=SMALL)


def test_nothing_left_after_kcore_raises(tmp_path):
    source = write_movielens(tmp_path / "ml")
    with pytest.raises(ValueError, match="k-core"):
        sources.build_movielens(source, config=BuildConfig(min_user_interactions=50))


def test_same_seed_gives_byte_identical_files(tmp_path):
    source = write_movielens(tmp_path / "ml")
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sources.build_movielens(source, output_dir=first, config=SMALL)
    sources.build_movielens(source, output_dir=second, config=SMALL)
    sources.build_movielens(source, output_dir=other, config=replace(SMALL, seed=1))
    assert tree_digest(first) == tree_digest(second)
    assert tree_digest(first) != tree_digest(other)


def test_atomic_save_keeps_old_dataset_on_failure(tmp_path, monkeypatch):
    source = write_movielens(tmp_path / "ml")
    out = tmp_path / "built"
    sources.build_movielens(source, output_dir=out, config=SMALL)
    before = tree_digest(out)

    def crash(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        sources.build_movielens(source, output_dir=out, config=replace(SMALL, seed=3))
    assert tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["built", "ml"]


# ---------------------------------------------------------------------------------------------------- splits


def _keys(table: datasets.Dataset) -> set[tuple]:
    return set(zip(table["user_id"], table["item_id"], table["timestamp"]))


def test_leave_one_out_has_no_leakage(tmp_path):
    dataset = sources.build_movielens(write_movielens(tmp_path / "ml"), config=SMALL)
    train, validation, test = (_keys(dataset[s]) for s in ("train", "validation", "test"))
    assert not (test & train) and not (validation & train) and not (test & validation)
    assert len(test) == len(validation) == 6 and len(train) == 30 - 12
    latest = dataset["interactions"].to_pandas().groupby("user_id")["timestamp"].max()
    assert all(t == latest[u] for u, _, t in test)
    for split, held_out in (("tasks_test", test), ("tasks_validation", validation)):
        for sample in dataset[split]:
            target_time = max(t for u, i, t in held_out if u == sample["user_id"])
            assert all(h["timestamp"] < target_time for h in sample["history"]) and 0 < len(sample["history"]) <= 4
    for sample in dataset["tasks_train"]:
        seen = {(sample["user_id"], h["item_id"], h["timestamp"]) for h in sample["history"]}
        assert not seen & (test | validation)
        assert (sample["user_id"], sample["target"]["item_id"]) not in {(u, i) for u, i, _ in test | validation}


def test_user_split_gives_disjoint_users(tmp_path):
    config = replace(SMALL, split="user", split_ratios=(0.5, 0.25, 0.25))
    source = write_movielens(tmp_path / "ml", [f"{u},{i},3.0,{2_000_000 + u * 10 + i}".encode()
                                               for u in range(6, 20) for i in range(4)])
    dataset = sources.build_movielens(source, config=config)
    users = {s: set(dataset[f"tasks_{s}"]["user_id"]) for s in ("train", "validation", "test")}
    assert (not (users["train"] & users["validation"]) and not (users["train"] & users["test"])
            and not (users["validation"] & users["test"]))
    assert set(dataset["train"]["user_id"]) == users["train"]
    assert len(users["train"]) == 10 and len(users["validation"]) == len(users["test"]) == 5


def test_task_samples_follow_the_contract(tmp_path):
    dataset = sources.build_movielens(write_movielens(tmp_path / "ml"), config=SMALL)
    interactions = dataset["interactions"].to_pandas()
    for sample in dataset["tasks_test"]:
        assert sample["task"] in ("recommend", "search", "rate_explain", "select")
        if sample["task"] == "select":
            assert len(sample["candidates"]) == 3 and 1 <= len(sample["answer"]) <= 2
            assert (set(sample["answer"]) <= set(sample["candidates"])
                    and sample["target"]["item_id"] in sample["answer"])
            user_items = set(interactions.loc[interactions.user_id == sample["user_id"], "item_id"])
            assert not (set(sample["candidates"]) - set(sample["answer"])) & user_items
        elif sample["task"] == "search":
            assert sample["query"] and sample["query"] != sample["target"]["item_id"]
        else:
            assert sample["candidates"] is None and sample["answer"] is None
    assert sorted(set(dataset["tasks_test"]["task"])) == ["rate_explain", "recommend", "search", "select"]


# ---------------------------------------------------------------------------------------------------- sources


def _amazon_fixture(directory: Path, category: str, version: str, offset: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    reviews = [json.dumps({"reviewerID": u, "asin": f"{category[:2]}{i}", "overall": r, "unixReviewTime": t + offset,
                           "reviewText": "Arrived. The fabric is soft and the colour is great. Shipping was slow.",
                           "summary": "Nice"})
               for u, i, t, r in events()]
    reviews += ["{not json", json.dumps({"asin": "x", "overall": 5, "unixReviewTime": 1})]  # malformed, no reviewerID
    name = f"reviews_{category}_5.json.gz" if version == "2014" else f"{category}_5.json.gz"
    with gzip.open(directory / name, "wt") as handle:
        handle.write("\n".join(reviews) + "\n")
    meta = []
    for k in range(8):
        if version == "2014":  # Python-literal lines, categories as a list of lists
            meta.append(repr({"asin": f"{category[:2]}i{k}", "title": f"Thing {k}", "price": 9.5, "brand": "B",
                              "categories": [[category, "Sub"]], "imUrl": f"http://img/{k}.jpg"}))
        else:
            meta.append(json.dumps({"asin": f"{category[:2]}i{k}", "title": f"Thing {k}", "price": "$12.99",
                                    "category": [category, "Sub"], "description": ["Soft.", "Warm."],
                                    "imageURLHighRes": []}))
    (directory / f"meta_{category}.json").write_text("\n".join(meta) + "\n")


@pytest.mark.parametrize("version", ["2014", "2018"])
def test_amazon_builder_merges_categories(tmp_path, version):
    _amazon_fixture(tmp_path, "Baby", version)
    _amazon_fixture(tmp_path, "Toys_and_Games", version, offset=7)
    dataset = sources.build_amazon(tmp_path, ["Baby", "Toys_and_Games"], version=version, config=SMALL,
                                   output_dir=tmp_path / "out")
    assert dataset["items"].num_rows == 16 and len(set(dataset["interactions"]["user_id"])) == 6
    items = {row["item_id"]: row for row in dataset["items"]}
    assert items["Bai0"]["categories"] == ["Baby", "Sub"] and items["Toi3"]["title"] == "Thing 3"
    assert items["Bai0"]["price"] == pytest.approx(9.5 if version == "2014" else 12.99)
    assert dataset["interactions"][0]["explanation"] == "The fabric is soft and the colour is great."
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["skipped"]["malformed_json"] == 2 and report["skipped"]["missing_reviewerID"] == 2


def test_amazon2023_local_and_hub(tmp_path, monkeypatch):
    reviews = [{"user_id": u, "parent_asin": i, "asin": i + "x", "rating": r, "timestamp": t * 1000,
                "text": "Love it. Great.", "title": "Good"} for u, i, t, r in events()]
    meta = [{"parent_asin": f"i{k}", "title": f"Item {k}", "main_category": "Beauty", "categories": ["Skin"],
             "store": "S", "price": None, "images": [{"hi_res": None, "large": f"http://img/{k}.jpg"}]}
            for k in range(8)]
    (tmp_path / "All_Beauty.jsonl").write_text("\n".join(json.dumps(r) for r in reviews))
    (tmp_path / "meta_All_Beauty.jsonl").write_text("\n".join(json.dumps(r) for r in meta))
    local = sources.build_amazon2023(["All_Beauty"], source_dir=tmp_path, config=SMALL)
    assert local["items"][0]["categories"] == ["Beauty", "Skin"] and local["items"][0]["brand"] == "S"
    assert local["interactions"][0]["timestamp"] == 1_000_000

    requested = []

    def fake_load_dataset(builder, data_files, split):
        requested.append(data_files)
        return datasets.Dataset.from_list(meta if "meta_" in data_files else reviews)

    monkeypatch.setattr(sources.datasets, "load_dataset", fake_load_dataset)
    hub = sources.build_amazon2023(["All_Beauty"], config=SMALL)
    assert requested == [f"hf://datasets/{sources.AMAZON_2023_HUB}/raw/review_categories/All_Beauty.jsonl",
                         f"hf://datasets/{sources.AMAZON_2023_HUB}/raw/meta_categories/meta_All_Beauty.jsonl"]
    assert hub["interactions"][:] == local["interactions"][:]


def test_hm_builder_keeps_purchase_order_and_flags_bad_images(tmp_path):
    articles = ["article_id,prod_name,product_type_name,product_group_name,colour_group_name,detail_desc"]
    articles += [f"0{100 + k:09d},Tee {k},T-shirt,Garment Upper body,Black,Soft cotton tee" for k in range(8)]
    (tmp_path / "articles.csv").write_text("\n".join(articles) + "\n")
    # All purchases of a user happen on one day, in an order that is not the article order.
    rows = ["t_dat,customer_id,article_id,price,sales_channel_id"]
    rows += [f"2020-09-0{1 + (t % 3)},{u},0{100 + int(i[1:]):09d},0.02,2" for u, i, t, _ in events()]
    rows.append(rows[1])  # an exact duplicate row
    (tmp_path / "transactions_train.csv").write_text("\n".join(rows) + "\n")
    for k in range(8):
        folder = tmp_path / "images" / f"0{100 + k:09d}"[:3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"0{100 + k:09d}.jpg").write_bytes(png() if k < 6 else b"garbage")  # k=6,7 corrupt
    out = tmp_path / "out"
    dataset = sources.build_hm(tmp_path, output_dir=out, config=SMALL)
    images = {row["item_id"]: row["image"] is not None for row in dataset["items"]}
    assert sum(images.values()) == 6 and not images["0000000106"]
    report = json.loads((out / "build_report.json").read_text())
    assert report["skipped"]["image_corrupt"] == 2 and report["skipped"]["duplicate_interaction"] == 1
    frame = pd.read_csv(tmp_path / "transactions_train.csv", dtype=str).drop_duplicates()
    for user, group in dataset["interactions"].to_pandas().groupby("user_id", sort=False):
        raw = frame[frame.customer_id == user].copy()
        raw["order"] = range(len(raw))
        expected = raw.sort_values(["t_dat", "order"], kind="stable").article_id.tolist()
        assert group.item_id.tolist() == expected
    assert ("generate_image" in set(dataset["tasks_test"]["task"])
            and "rate_explain" not in set(dataset["tasks_test"]["task"]))


def test_netflix_llmrec_builder(tmp_path):
    scipy_sparse = pytest.importorskip("scipy.sparse")
    train = scipy_sparse.dok_matrix((6, 8), dtype="float32")
    test = scipy_sparse.dok_matrix((6, 8), dtype="float32")
    for u, i, _, _ in events():
        user, item = int(u[1:]), int(i[1:])
        (test if item == (3 * user + 4) % 8 else train)[user, item] = 1.0
    for name, matrix in (("train_mat", train), ("test_mat", test)):
        (tmp_path / name).write_bytes(pickle.dumps(matrix))
    (tmp_path / "item_attribute.csv").write_bytes(b"\n".join(f"{k},{2000 + k},Film {k}".encode() for k in range(7))
                                                  + b"\n7,NaN,Caf\xe9\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.jpg").write_bytes(png())
    dataset = sources.build_netflix(tmp_path, config=SMALL)
    test_items = {row["user_id"]: row["item_id"] for row in dataset["test"]}
    assert test_items == {str(u): str((3 * u + 4) % 8) for u in range(6)}
    items = {row["item_id"]: row for row in dataset["items"]}
    assert (items["7"]["title"] == "Café" and items["3"]["description"] == "Year: 2003"
            and items["0"]["image"] is not None)


def test_loader_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown bundled dataset"):
        builders.bundled_dataset_path("nope")
    with pytest.raises(FileNotFoundError, match="not a saved UniMP dataset"):
        load_unimp_dataset(tmp_path)
