"""Readers of each raw benchmark format into the unified tables, and one `build_*` function per source.

Sources: Amazon Reviews 2014 and 2018 (5-core review files + metadata, one or several categories
merged), Amazon Reviews 2023 (Hub or local JSONL), H&M (Kaggle CSVs + image folder), Netflix (the
LLMRec multimodal release) and MovieLens (GroupLens CSV). Each `build_*` reads, then hands over to
`builders.run_builder` for the shared cleaning, k-core, splits, task samples and atomic save.
Timestamps are Unix seconds everywhere.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from .builders import iter_json_lines, read_csv_table, run_builder, to_number
from .config import BuildConfig, BuildReport
from .images import ImageCache

AMAZON_PAPER_CATEGORIES: tuple[str, ...] = (
    "Baby", "Beauty", "Clothing_Shoes_and_Jewelry", "Toys_and_Games", "Sports_and_Outdoors", "Grocery_and_Gourmet_Food",
)
"""The paper's six Amazon 2014 categories, as spelled in the file names."""

AMAZON_2023_HUB = "McAuley-Lab/Amazon-Reviews-2023"
_PRICE = re.compile(r"\d+(?:[.,]\d+)?")


def _first_file(directory: Path, names: Sequence[str]) -> Path:
    """The first of `names` (tried with `.gz` and without) that exists in `directory`; a clear error if none."""
    for name in names:
        for candidate in (directory / f"{name}.gz", directory / name):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"none of {list(names)} (optionally .gz) found in {directory}")


def _price(value: Any) -> float | None:
    """A price from a number or a string like '$12.99'; None when absent or unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if np.isfinite(value) else None
    match = _PRICE.search(value) if isinstance(value, str) else None
    return float(match.group().replace(",", ".")) if match else None


def _text(value: Any) -> str | None:
    """A string from a string or a list of strings (joined); None when empty."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value if v)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(value).strip()
    return value or None


def _flat_categories(value: Any) -> list[str]:
    """Categories from a list, a list of lists (Amazon 2014) or a '|'-joined string, order kept, no repeats."""
    if isinstance(value, str):
        value = value.split("|")
    flat: list[str] = []
    for entry in value or []:
        flat.extend(entry if isinstance(entry, list) else [entry])
    return list(dict.fromkeys(str(c).strip() for c in flat if c and str(c).strip()))


def _required(record: Mapping[str, Any], fields: Sequence[str], report: BuildReport, where: str) -> bool:
    """True if every field is present and non-empty; otherwise count `missing_<field>` at `where`."""
    for name in fields:
        if record.get(name) in (None, ""):
            report.skip(f"missing_{name}", where)
            return False
    return True


def _interactions_from_reviews(
    records: Iterable[tuple[str, Mapping[str, Any]]], report: BuildReport, *, user: str, item: str, time: str,
    rating: str, review: str, summary: str, time_divisor: int = 1,
) -> tuple[pd.DataFrame, int]:
    """Unified interaction rows from review records `(where, record)` and the raw record count."""
    rows, total = [], 0
    for where, record in records:
        total += 1
        if not _required(record, (user, item, time), report, f"{where} ({item}={record.get(item)})"):
            continue
        try:
            timestamp = int(float(record[time])) // time_divisor
        except (TypeError, ValueError):
            report.skip(f"bad_{time}", f"{where} ({item}={record.get(item)})")
            continue
        stars = record.get(rating)
        rows.append({
            "user_id": str(record[user]), "item_id": str(record[item]), "timestamp": timestamp,
            "rating": float(stars) if isinstance(stars, (int, float)) else _price(stars),
            "review": _text(record.get(review)), "summary": _text(record.get(summary)),
        })
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating", "review", "summary"]), total


def _amazon_item(record: Mapping[str, Any], item: str) -> dict[str, Any]:
    """One unified item from an Amazon metadata record of any release (2014, 2018 or 2023)."""
    images = record.get("imageURLHighRes") or record.get("imageURL") or record.get("images")
    if isinstance(images, dict):  # 2023 on the Hub: {"hi_res": [...], "large": [...], ...}
        images = [u for u in (images.get("hi_res") or []) + (images.get("large") or []) if u]
    elif isinstance(images, list) and images and isinstance(images[0], dict):  # 2023 raw JSONL
        images = [entry.get("hi_res") or entry.get("large") for entry in images]
    url = record.get("imUrl") or next((u for u in images or [] if isinstance(u, str) and u), None)
    categories = _flat_categories(record.get("categories") or record.get("category"))
    if record.get("main_category") and record["main_category"] not in categories:
        categories.insert(0, record["main_category"])
    return {
        "item_id": str(record[item]), "title": _text(record.get("title")),
        "description": _text(record.get("description")), "categories": categories,
        "brand": _text(record.get("brand") or record.get("store")),
        "price": _price(record.get("price")), "image_url": url,
    }


def _items_frame(records: Iterable[tuple[str, Mapping[str, Any]]], wanted: set[str], report: BuildReport,
                 item: str) -> pd.DataFrame:
    """Unified items for the `wanted` ids from metadata records `(where, record)`."""
    rows = []
    for where, record in records:
        if not _required(record, (item,), report, where):
            continue
        if str(record[item]) in wanted:
            rows.append(_amazon_item(record, item))
    return pd.DataFrame(rows, columns=["item_id", "title", "description", "categories", "brand", "price", "image_url"])


def _json_records(path: Path, report: BuildReport, *, python_literals: bool = False) -> Iterator[tuple[str, dict]]:
    """`(file:line, record)` for each good line of a JSON-lines file."""
    for number, record in iter_json_lines(path, report, python_literals=python_literals):
        yield f"{path.name}:{number}", record


def build_amazon(
    source_dir: str | os.PathLike,
    categories: Sequence[str] = AMAZON_PAPER_CATEGORIES,
    *,
    version: str = "2014",
    output_dir: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
    image_cache: ImageCache | None = None,
) -> datasets.DatasetDict:
    """Amazon Reviews 2014 or 2018: 5-core review files plus metadata; several categories are merged into
    one multi-domain dataset (k-core applied after the merge).

    Files: 2014 `reviews_<Category>_5.json[.gz]` + `meta_<Category>.json[.gz]` (Python-literal lines
    accepted); 2018 `<Category>_5.json[.gz]` + `meta_<Category>.json[.gz]`. Images are downloaded into
    `image_cache` when one is given.
    """
    if version not in ("2014", "2018"):
        raise ValueError(f"Amazon version must be '2014' or '2018' (use build_amazon2023 for 2023), got {version!r}")
    source_dir, config = Path(source_dir), config or BuildConfig()
    report = BuildReport(f"amazon{version}", strict=config.strict)
    interactions, items, total = [], [], 0
    for category in categories:
        review_name = f"reviews_{category}_5.json" if version == "2014" else f"{category}_5.json"
        reviews, count = _interactions_from_reviews(
            _json_records(_first_file(source_dir, [review_name]), report), report, user="reviewerID", item="asin",
            time="unixReviewTime", rating="overall", review="reviewText", summary="summary",
        )
        total += count
        interactions.append(reviews)
        meta = _first_file(source_dir, [f"meta_{category}.json"])
        items.append(_items_frame(_json_records(meta, report, python_literals=True), set(reviews["item_id"]),
                                  report, "asin"))
    report.note("categories", list(categories))
    return run_builder(f"amazon{version}", pd.concat(items, ignore_index=True),
                       pd.concat(interactions, ignore_index=True), report, config, raw_records=total,
                       output_dir=output_dir, image_cache=image_cache)


def build_amazon2023(
    categories: Sequence[str],
    *,
    source_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
    image_cache: ImageCache | None = None,
) -> datasets.DatasetDict:
    """Amazon Reviews 2023, from the Hub (`datasets.load_dataset` on the McAuley-Lab JSONL files) or, with
    `source_dir`, from local `<Category>.jsonl[.gz]` + `meta_<Category>.jsonl[.gz]`. Items are `parent_asin`.
    """
    config = config or BuildConfig()
    report = BuildReport("amazon2023", strict=config.strict)
    interactions, items, total = [], [], 0
    for category in categories:
        if source_dir is None:
            review_records = _hub_records(f"raw/review_categories/{category}.jsonl", category)
            meta_records = _hub_records(f"raw/meta_categories/meta_{category}.jsonl", f"meta_{category}")
        else:
            review_records = _json_records(_first_file(Path(source_dir), [f"{category}.jsonl"]), report)
            meta_records = _json_records(_first_file(Path(source_dir), [f"meta_{category}.jsonl"]), report)
        reviews, count = _interactions_from_reviews(
            review_records, report, user="user_id", item="parent_asin", time="timestamp", rating="rating",
            review="text", summary="title", time_divisor=1000,
        )
        total += count
        interactions.append(reviews)
        items.append(_items_frame(meta_records, set(reviews["item_id"]), report, "parent_asin"))
    report.note("categories", list(categories))
    return run_builder("amazon2023", pd.concat(items, ignore_index=True), pd.concat(interactions, ignore_index=True),
                       report, config, raw_records=total, output_dir=output_dir, image_cache=image_cache)


def _hub_records(path_in_repo: str, label: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Records of one JSONL file of the Amazon 2023 Hub dataset, loaded with `datasets.load_dataset`."""
    table = datasets.load_dataset("json", data_files=f"hf://datasets/{AMAZON_2023_HUB}/{path_in_repo}", split="train")
    for index, record in enumerate(table):
        yield f"{label}[{index}]", record


def build_hm(
    source_dir: str | os.PathLike,
    *,
    output_dir: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
) -> datasets.DatasetDict:
    """H&M Personalized Fashion (Kaggle): `articles.csv`, `transactions_train.csv` and `images/0xx/<id>.jpg`.

    Purchase order is kept: `t_dat` has day resolution, and purchases of one day stay in file order (the
    chronological sort is stable), which the original UniMP code lost. Same-day repeats of an article are
    de-duplicated; repeats on other days are kept.
    """
    source_dir, config = Path(source_dir), config or BuildConfig()
    report = BuildReport("hm", strict=config.strict)
    transactions = read_csv_table(_first_file(source_dir, ["transactions_train.csv"]),
                                  ["t_dat", "customer_id", "article_id"], report)
    total = len(transactions) + sum(report.skipped.values())
    transactions["article_id"] = transactions["article_id"].str.zfill(10)
    dates = pd.to_datetime(transactions["t_dat"], format="%Y-%m-%d", errors="coerce")
    for article in transactions.loc[dates.isna() & transactions["t_dat"].notna(), "article_id"]:
        report.skip("bad_t_dat", f"article_id={article}")
    transactions = transactions.loc[dates.notna() | transactions["t_dat"].isna()]
    seconds = (dates.loc[transactions.index] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    interactions = pd.DataFrame({
        "user_id": transactions["customer_id"], "item_id": transactions["article_id"],
        "timestamp": seconds.astype("Int64"),
    })
    articles = read_csv_table(_first_file(source_dir, ["articles.csv"]), ["article_id", "prod_name"], report)
    articles["article_id"] = articles["article_id"].str.zfill(10)
    prices = pd.to_numeric(transactions.get("price", pd.Series(dtype=str)), errors="coerce")
    median_price = prices.groupby(transactions["article_id"]).median() if len(prices) else pd.Series(dtype=float)

    def column(name: str) -> pd.Series:
        return articles[name] if name in articles.columns else pd.Series([None] * len(articles), index=articles.index)

    category_columns = ["index_group_name", "product_group_name", "product_type_name"]
    items = pd.DataFrame({
        "item_id": articles["article_id"],
        "title": articles["prod_name"],
        "description": [
            " ".join(p for p in (_text(d), f"Colour: {c}." if _text(c) else None,
                                 f"Pattern: {g}." if _text(g) else None) if p) or None
            for d, c, g in zip(column("detail_desc"), column("colour_group_name"), column("graphical_appearance_name"))
        ],
        "categories": [_flat_categories([c for c in row if isinstance(c, str)])
                       for row in zip(*(column(c) for c in category_columns))],
        "brand": "H&M",
        "price": articles["article_id"].map(median_price).astype(float),
        "image_path": [str(source_dir / "images" / a[:3] / f"{a}.jpg") for a in articles["article_id"]],
    })
    return run_builder("hm", items, interactions, report, config, raw_records=total, output_dir=output_dir)


def build_netflix(
    source_dir: str | os.PathLike,
    *,
    output_dir: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
) -> datasets.DatasetDict:
    """Netflix in the LLMRec multimodal release: pickled sparse user x item matrices `train_mat` (and
    optional `val_mat`, `test_mat`), `item_attribute.csv` (no header: id, year, title) and optional
    posters `images/<item id>.jpg`.

    The release has no timestamps; each user's order is train items, then validation, then test items
    (each by item index), so leave-one-out reproduces LLMRec's own held-out items. The pickles are
    loaded with `pickle`: only use files from a source you trust.
    """
    source_dir, config = Path(source_dir), config or BuildConfig()
    report = BuildReport("netflix", strict=config.strict)
    parts = []
    for rank, name in enumerate(("train_mat", "val_mat", "test_mat")):
        path = source_dir / name
        if not path.is_file():
            if name == "train_mat":
                raise FileNotFoundError(f"LLMRec Netflix matrix not found: {path}")
            continue
        with open(path, "rb") as handle:
            matrix = pickle.load(handle)  # noqa: S301 - the LLMRec release format; see docstring
        if not hasattr(matrix, "tocoo"):
            raise ValueError(f"{path}: expected a scipy sparse user x item matrix, got {type(matrix).__name__}")
        coo = matrix.tocoo()
        parts.append(pd.DataFrame({"user": coo.row, "item": coo.col, "part": rank}))
    edges = pd.concat(parts, ignore_index=True).sort_values(["user", "part", "item"], kind="stable")
    if edges.empty:
        report.skip("empty_history", "all users (the matrices hold no interactions)")
    edges["timestamp"] = edges.groupby("user").cumcount()
    interactions = pd.DataFrame({
        "user_id": edges["user"].astype(str), "item_id": edges["item"].astype(str),
        "timestamp": edges["timestamp"].astype("int64"),
    })
    attributes = read_csv_table(_first_file(source_dir, ["item_attribute.csv"]), ["id", "year", "title"], report,
                                encoding="latin-1", header=False, names=["id", "year", "title"])
    items = pd.DataFrame({
        "item_id": attributes["id"].astype(str),
        "title": attributes["title"],
        "description": [f"Year: {y}" if _text(y) and str(y).isdigit() else None for y in attributes["year"]],
        "image_path": [str(source_dir / "images" / f"{i}.jpg") if (source_dir / "images" / f"{i}.jpg").is_file()
                       else None for i in attributes["id"]],
    })
    return run_builder("netflix", items, interactions, report, config, raw_records=len(interactions),
                       output_dir=output_dir)


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def build_movielens(
    source_dir: str | os.PathLike,
    *,
    output_dir: str | os.PathLike | None = None,
    config: BuildConfig | None = None,
    name: str = "movielens",
    extra_files: Mapping[str, str | bytes] | None = None,
) -> datasets.DatasetDict:
    """MovieLens in the GroupLens CSV layout (`ratings.csv`, `movies.csv`); items are text-only: title,
    genres as categories, and the release year as the description."""
    source_dir, config = Path(source_dir), config or BuildConfig()
    report = BuildReport(name, strict=config.strict)
    ratings = read_csv_table(_first_file(source_dir, ["ratings.csv"]), ["userId", "movieId", "rating", "timestamp"],
                             report)
    total = len(ratings) + sum(report.skipped.values())
    ratings = to_number(ratings, "timestamp", report, where_column="movieId", kind="int")
    ratings = to_number(ratings, "rating", report, where_column="movieId")
    interactions = pd.DataFrame({
        "user_id": ratings["userId"], "item_id": ratings["movieId"], "timestamp": ratings["timestamp"],
        "rating": ratings["rating"],
    })
    movies = read_csv_table(_first_file(source_dir, ["movies.csv"]), ["movieId", "title", "genres"], report)
    years = movies["title"].fillna("").str.extract(_YEAR)[0]
    items = pd.DataFrame({
        "item_id": movies["movieId"],
        "title": movies["title"].fillna("").str.replace(_YEAR, "", regex=True).str.strip().replace("", None),
        "description": [f"Year: {y}" if isinstance(y, str) else None for y in years],
        "categories": [[g for g in _flat_categories(genres) if g != "(no genres listed)"]
                       for genres in movies["genres"].fillna("")],
    })
    return run_builder(name, items, interactions, report, config, raw_records=total, output_dir=output_dir,
                       extra_files=extra_files)


__all__ = [
    "AMAZON_PAPER_CATEGORIES", "build_amazon", "build_amazon2023", "build_hm", "build_movielens", "build_netflix",
]
