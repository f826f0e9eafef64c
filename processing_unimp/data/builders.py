"""Shared machinery of the dataset builders: robust raw readers, k-core, de-duplication, item vocabulary,
atomic saving, statistics and the loader of built or bundled datasets.

Every source builder (see `sources.py`) reads its raw files into two pandas frames in the unified
column names and hands them to `finalize_dataset`, so all sources share one cleaning, splitting and
saving path. Not shipped to the Hub; free to import anything.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..schema_unimp import INTERACTION_FEATURES, ITEM_FEATURES
from .config import KEEP_EXAMPLES, BuildConfig, BuildReport
from .files import atomic_directory
from .images import ImageCache, download_images, validate_image_bytes
from .splits import SPLITS, build_splits, materialize_split, materialize_task_samples

logger = logging.getLogger(__name__)

BUNDLED_DATASETS: tuple[str, ...] = ("movielens-small", "fashion-shop")
"""Datasets shipped in `examples/data/<name>/`, loadable by name with `load_unimp_dataset`."""


# ----------------------------------------------------------------------------------------------------------
# Raw readers shared by the sources


def open_binary(path: str | os.PathLike) -> io.BufferedIOBase:
    """Open a raw file for reading bytes, transparently un-gzipping `.gz` files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"raw file not found: {path}")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_json_lines(path: str | os.PathLike, report: BuildReport, *,
                    python_literals: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, record)` for each JSON object line; bad lines are skipped and counted.

    `python_literals` also accepts Python dict literals (the 2014 Amazon metadata files are written that way).
    """
    import ast

    name = Path(path).name
    with open_binary(path) as handle:
        for number, raw in enumerate(tqdm(handle, desc=name, unit=" lines", mininterval=2, disable=None), start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                report.skip("non_utf8", f"{name}:{number}")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
                if python_literals:
                    try:
                        record = ast.literal_eval(line)
                    except (ValueError, SyntaxError):
                        record = None
            if not isinstance(record, dict):
                report.skip("malformed_json", f"{name}:{number}")
                continue
            yield number, record


def read_csv_table(
    path: str | os.PathLike,
    required: Sequence[str],
    report: BuildReport,
    *,
    encoding: str = "utf-8",
    header: bool = True,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV as strings; raise if a required column is missing, skip and count undecodable or ragged rows.

    Clean files take pandas' fast path; a file that fails it is re-read row by row so that each bad row is
    counted instead of aborting (or silently truncating) the whole table.
    """
    path = Path(path)
    try:
        with open_binary(path) as handle:
            frame = pd.read_csv(
                handle, dtype=str, keep_default_na=False, na_values=[""], encoding=encoding,
                encoding_errors="strict", header=0 if header else None, names=names,
            )
    except (UnicodeDecodeError, pd.errors.ParserError):
        frame = _read_csv_rowwise(path, report, encoding=encoding, header=header, names=names)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; found {list(frame.columns)}")
    return frame


def _read_csv_rowwise(path: Path, report: BuildReport, *, encoding: str, header: bool,
                      names: Sequence[str] | None) -> pd.DataFrame:
    """Slow path of `read_csv_table`: decode and parse each physical line on its own."""
    rows: list[list[str]] = []
    columns = list(names) if names else None
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError:
                report.skip("non_utf8", f"{path.name}:{number}")
                continue
            try:
                fields = next(csv.reader([line]))
            except (csv.Error, StopIteration):
                report.skip("malformed_csv_row", f"{path.name}:{number}")
                continue
            if columns is None and header:
                columns = fields
                continue
            if columns is None:
                columns = [str(i) for i in range(len(fields))]
            if len(fields) != len(columns):
                report.skip("malformed_csv_row", f"{path.name}:{number}")
                continue
            rows.append(fields)
    frame = pd.DataFrame(rows, columns=columns or [])
    return frame.replace("", None)


def to_number(frame: pd.DataFrame, column: str, report: BuildReport, *, where_column: str,
              kind: str = "float") -> pd.DataFrame:
    """Parse `column` as numbers; rows whose non-empty value does not parse are skipped and counted."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    for label in frame.loc[bad, where_column].head(KEEP_EXAMPLES).tolist():
        report.skip(f"bad_{column}", f"{where_column}={label}")
    if bad.sum() > KEEP_EXAMPLES:  # count the rest without keeping examples
        report.skipped[f"bad_{column}"] += int(bad.sum()) - KEEP_EXAMPLES
    frame = frame.loc[~bad].copy()
    frame[column] = values[~bad].astype("int64" if kind == "int" else "float64")
    return frame


# ----------------------------------------------------------------------------------------------------------
# Cleaning shared by all sources


def drop_missing(frame: pd.DataFrame, columns: Sequence[str], report: BuildReport, *, what: str) -> pd.DataFrame:
    """Skip rows with a missing required value, counting each as `missing_<column>` with the row's ids."""
    for column in columns:
        if column not in frame.columns:
            raise ValueError(f"{what}: missing required column '{column}'; found {list(frame.columns)}")
        missing = frame[column].isna()
        if missing.any():
            id_column = "item_id" if column != "item_id" else "user_id"
            for _, row in frame.loc[missing].iterrows():
                report.skip(f"missing_{column}", f"{what} row with {id_column}={row.get(id_column)}")
            frame = frame.loc[~missing]
    return frame


def deduplicate(frame: pd.DataFrame, keys: Sequence[str], report: BuildReport) -> pd.DataFrame:
    """Drop repeated interactions (same `keys`), keeping the first in file order, and count them."""
    duplicated = frame.duplicated(subset=list(keys), keep="first")
    for _, row in frame.loc[duplicated].head(KEEP_EXAMPLES).iterrows():
        report.skip("duplicate_interaction", f"user_id={row.user_id} item_id={row.item_id}")
    if duplicated.sum() > KEEP_EXAMPLES:
        report.skipped["duplicate_interaction"] += int(duplicated.sum()) - KEEP_EXAMPLES
    return frame.loc[~duplicated]


def kcore_filter(frame: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Iterative k-core: drop users with < `min_user` and items with < `min_item` interactions until stable."""
    while True:
        user_counts = frame["user_id"].map(frame["user_id"].value_counts())
        item_counts = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return frame
        frame = frame.loc[keep]


def sort_chronologically(frame: pd.DataFrame) -> pd.DataFrame:
    """Order by user, then time; ties keep file order (e.g. H&M purchases of the same day)."""
    frame = frame.assign(_order=np.arange(len(frame)))
    frame = frame.sort_values(["user_id", "timestamp", "_order"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


_OPINION = re.compile(
    r"\b(love[ds]?|like[ds]?|great|good|nice|perfect|excellent|awesome|beautiful|comfortable|cute|soft|"
    r"bad|poor|cheap|terrible|awful|disappoint\w*|broke\w*|small|large|quality|recommend\w*|fits?|worth|"
    r"favou?rite|enjoy\w*|funny|boring|fresh|tast\w*|sturdy|flimsy)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def extract_explanation(review: str | None, summary: str | None = None, *, min_words: int = 4,
                        max_words: int = 30) -> str | None:
    """An explanation from a review: its first sentence with an opinion word, else its first sentence of
    reasonable length, else the summary (the rating-explanation target, as in PETER/P5-style extraction)."""
    if review:
        sentences = [s.strip() for s in _SENTENCE.split(review.strip()) if s.strip()]
        sized = [s for s in sentences if min_words <= len(s.split()) <= max_words]
        for sentence in sized:
            if _OPINION.search(sentence):
                return sentence
        if sized:
            return sized[0]
    if summary and summary.strip():
        return summary.strip()
    return None


# ----------------------------------------------------------------------------------------------------------
# From cleaned frames to a saved DatasetDict


def _attach_images(items: pd.DataFrame, report: BuildReport, image_cache: ImageCache | None,
                   download_kwargs: Mapping[str, Any]) -> pd.Series:
    """The `image` column: bytes from `image_bytes`, a local `image_path` or a downloaded `image_url`.

    Missing, dead or corrupt images become None and are counted; the item itself is kept (text-only).
    """
    images: list[dict | None] = [None] * len(items)
    if "image_url" in items.columns and image_cache is not None:
        urls = [u for u in items["image_url"].tolist() if isinstance(u, str) and u]
        fetched = download_images(urls, image_cache, **download_kwargs)
    else:
        fetched = {}
    records = items.to_dict("records")
    for position, row in enumerate(tqdm(records, desc="item images", mininterval=2,
                                        disable=None if len(records) > 10_000 else True)):
        data: bytes | None = None
        where = f"item_id={row['item_id']}"
        if "image_bytes" in items.columns and isinstance(row.get("image_bytes"), bytes):
            data = row["image_bytes"]
        elif "image_path" in items.columns and isinstance(row.get("image_path"), str):
            path = Path(row["image_path"])
            if not path.is_file():
                report.skip("image_missing", where)
                continue
            data = path.read_bytes()
        elif isinstance(row.get("image_url"), str) and row["image_url"] in fetched:
            local = fetched[row["image_url"]]
            if local is None:
                report.skip("image_dead_or_corrupt", where)
                continue
            data = Path(local).read_bytes()
        if data is None:
            continue
        if not validate_image_bytes(data):
            report.skip("image_corrupt", where)
            continue
        images[position] = {"bytes": data, "path": None}
    return pd.Series(images, index=items.index, dtype=object)


def _items_table(items: pd.DataFrame, kept_ids: Sequence[str], report: BuildReport, image_cache: ImageCache | None,
                 download_kwargs: Mapping[str, Any]) -> pd.DataFrame:
    """The catalogue restricted to the k-core items, in item-id order; items without metadata stay, bare."""
    items = items.drop_duplicates(subset="item_id", keep="first").set_index("item_id")
    kept = sorted(kept_ids)
    bare = [item_id for item_id in kept if item_id not in items.index]
    for item_id in bare:
        report.skip("item_without_metadata", f"item_id={item_id} (kept with id only)")
    items = items.reindex(kept).rename_axis("item_id").reset_index()
    items["image"] = _attach_images(items, report, image_cache, download_kwargs)
    for column in ITEM_FEATURES:
        if column not in items.columns:
            items[column] = None
    return items[list(ITEM_FEATURES)]


def _to_dataset(frame: pd.DataFrame, features: datasets.Features) -> datasets.Dataset:
    """A Dataset with exactly `features`, NaN turned into None."""
    frame = frame.astype(object).where(frame.notna(), None)
    return datasets.Dataset.from_dict({column: frame[column].tolist() for column in features}, features=features)


def finalize_dataset(
    name: str,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    report: BuildReport,
    config: BuildConfig,
    *,
    raw_records: int,
    image_cache: ImageCache | None = None,
    download_kwargs: Mapping[str, Any] | None = None,
) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    """Clean, k-core, sort, split and sample: the one path from raw frames to the saved DatasetDict.

    Returns the DatasetDict (compact task tables, see `splits`) and its statistics table.
    """
    interactions = drop_missing(interactions, ("user_id", "item_id", "timestamp"), report, what=f"{name} interactions")
    for column in INTERACTION_FEATURES:
        if column not in interactions.columns:
            interactions[column] = None
    interactions = interactions[list(INTERACTION_FEATURES)]
    interactions = deduplicate(interactions, config.dedup_keys, report)
    report.check(raw_records, config.max_skip_fraction)
    before = len(interactions)
    interactions = kcore_filter(interactions, config.min_user_interactions, config.min_item_interactions)
    report.note("kcore", {"min_user": config.min_user_interactions, "min_item": config.min_item_interactions,
                          "interactions_before": before, "interactions_removed": before - len(interactions)})
    if interactions.empty:
        raise ValueError(
            f"{name}: no interactions left after the k-core (users >= {config.min_user_interactions}, items >= "
            f"{config.min_item_interactions}) from {before} clean interactions; report: {report.to_dict()}"
        )
    interactions = sort_chronologically(interactions)
    needs = interactions["explanation"].isna() & (interactions["review"].notna() | interactions["summary"].notna())
    interactions.loc[needs, "explanation"] = [
        extract_explanation(review, summary)
        for review, summary in zip(interactions.loc[needs, "review"], interactions.loc[needs, "summary"])
    ]
    item_ids = interactions["item_id"].unique().tolist()
    items = _items_table(items, item_ids, report, image_cache, dict(download_kwargs or {}))
    tables: dict[str, datasets.Dataset] = {
        "items": _to_dataset(items, ITEM_FEATURES),
        "interactions": _to_dataset(interactions, INTERACTION_FEATURES),
    }
    tables.update(build_splits(items, interactions, config, report))
    dataset = datasets.DatasetDict(tables)
    return dataset, compute_statistics(name, dataset)


def compute_statistics(name: str, dataset: datasets.DatasetDict) -> dict[str, Any]:
    """Users, items, interactions, density, images and split/task-sample sizes of a built dataset."""
    users = len(set(dataset["interactions"]["user_id"]))
    items = dataset["items"].num_rows
    interactions = dataset["interactions"].num_rows
    images = sum(value is not None for value in dataset["items"].data.column("image").to_pylist())
    stats: dict[str, Any] = {
        "dataset": name,
        "users": users,
        "items": items,
        "interactions": interactions,
        "density": round(interactions / (users * items), 6) if users and items else 0.0,
        "images": images,
        "avg_history": round(interactions / users, 2) if users else 0.0,
    }
    for split in SPLITS:
        if split in dataset:
            stats[f"{split}_interactions"] = dataset[split].num_rows
    for split in SPLITS:
        table = f"tasks_{split}"
        if table in dataset:
            stats[f"{table}_samples"] = dict(sorted(Counter(dataset[table]["task"]).items()))
    return stats


def statistics_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of statistics (one row per dataset)."""
    header = ("| dataset | users | items | interactions | density | images | avg. history |\n"
              "|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['dataset']} | {r['users']:,} | {r['items']:,} | {r['interactions']:,} | {r['density']:.4%} | "
        f"{r['images']:,} | {r['avg_history']} |\n"
        for r in rows
    )
    return header + body


def save_unimp_dataset(
    dataset: datasets.DatasetDict,
    path: str | os.PathLike,
    *,
    statistics: Mapping[str, Any],
    report: BuildReport,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write the DatasetDict, its statistics (JSON + markdown), the build report and extra files atomically.

    Everything goes to a temporary sibling directory which then replaces `path` by rename, so a crash
    never leaves a half-written dataset behind.
    """
    with atomic_directory(path) as staging:
        dataset.save_to_disk(str(staging))
        files: dict[str, str | bytes] = {
            "statistics.json": json.dumps(statistics, indent=2, sort_keys=True) + "\n",
            "statistics.md": statistics_markdown([statistics]),
            "build_report.json": json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n",
            **(extra_files or {}),
        }
        for name, content in files.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return Path(path).resolve()


def run_builder(
    name: str,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    report: BuildReport,
    config: BuildConfig,
    *,
    raw_records: int,
    output_dir: str | os.PathLike | None = None,
    image_cache: ImageCache | None = None,
    download_kwargs: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> datasets.DatasetDict:
    """Finalize, optionally save, log the report, and return the dataset with task samples materialized."""
    dataset, statistics = finalize_dataset(
        name, items, interactions, report, config, raw_records=raw_records, image_cache=image_cache,
        download_kwargs=download_kwargs,
    )
    if report.skipped:
        logger.warning("%s: skipped records %s (see build_report.json)", name, dict(report.skipped))
    if output_dir is not None:
        save_unimp_dataset(dataset, output_dir, statistics=statistics, report=report, extra_files=extra_files)
    return materialize_dataset(dataset)


# ----------------------------------------------------------------------------------------------------------
# Loading


def materialize_dataset(dataset: datasets.DatasetDict) -> datasets.DatasetDict:
    """Resolve the compact row-index tables: `train`/`validation`/`test` into interaction rows and
    `tasks_*` into task samples in the CONTRACTS.md dict format."""
    out = dict(dataset)
    for table in dataset:
        if table in SPLITS:
            out[table] = materialize_split(dataset[table], dataset["interactions"])
        elif table.startswith("tasks_"):
            out[table] = materialize_task_samples(dataset[table], dataset["interactions"])
    return datasets.DatasetDict(out)


def bundled_dataset_path(name: str) -> Path:
    """Where a bundled dataset lives in a source checkout: `examples/data/<name>/`."""
    if name not in BUNDLED_DATASETS:
        raise ValueError(f"unknown bundled dataset {name!r}; choose one of {BUNDLED_DATASETS} or pass a path")
    path = Path(__file__).resolve().parents[2] / "examples" / "data" / name
    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(
            f"bundled dataset {name!r} not found at {path}; it ships with the source checkout (not the wheel). "
            f"Rebuild it with examples/data/build_{name.replace('-', '_')}.py"
        )
    return path


def load_unimp_dataset(name_or_path: str | os.PathLike, *, materialize: bool = True) -> datasets.DatasetDict:
    """Load a bundled dataset by name (`movielens-small`, `fashion-shop`) or a built one from a directory.

    Returns the DatasetDict with `items`, `interactions`, `train`/`validation`/`test`
    interactions and `tasks_train`/`tasks_validation`/`tasks_test` task samples (in the CONTRACTS.md
    format unless `materialize=False`, which keeps the on-disk row-index form).
    """
    name = str(name_or_path)
    path = bundled_dataset_path(name) if name in BUNDLED_DATASETS else Path(name_or_path)
    if not (Path(path) / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{path} is not a saved UniMP dataset (no dataset_dict.json)")
    dataset = datasets.load_from_disk(str(path))
    return materialize_dataset(dataset) if materialize else dataset


def read_statistics(path: str | os.PathLike) -> dict[str, Any]:
    """The statistics table a build wrote next to its data."""
    return json.loads((Path(path) / "statistics.json").read_text())


__all__ = [
    "BUNDLED_DATASETS", "compute_statistics", "deduplicate",
    "extract_explanation", "finalize_dataset", "iter_json_lines", "kcore_filter",
    "load_unimp_dataset", "materialize_dataset", "read_csv_table", "read_statistics", "run_builder",
    "save_unimp_dataset", "sort_chronologically", "statistics_markdown",
]
