"""Benchmark runs behind `examples/benchmark.py`, the shipped checkpoints and the quickstart: UniMP variants and the
baselines, trained and scored under the one protocol (tables: `report`; ranking speed: `speed`). Not shipped to the
Hub.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..baselines.recommenders import (
    ContentRecommender,
    ItemKNN,
    PopularityRecommender,
    SASRecConfig,
    SASRecRecommender,
    content_vectors,
)
from ..baselines.tasks import task_baselines, user_mean_ratings
from ..data.builders import bundled_dataset_path
from ..evaluation.metrics import ranking_by_frequency, ranking_metrics
from ..evaluation.protocol import LeaveOneOut, evaluate_scorer, recommend_samples, scorer_ranks
from ..evaluation.tasks import (
    evaluate_explanations,
    evaluate_ranking,
    evaluate_rating,
    evaluate_selection,
    ranking_ranks,
)
from ..training.recipe import (
    DataArguments,
    ModelArguments,
    recent_history,
    run_training,
    select_tasks,
    training_arguments,
)
from .report import row_name

# The base run (`unimp_arguments`) is the packed next-item recipe: every train interaction a target once per epoch,
# compact chunks (`<answer> <item_k> <image>? <|endofchunk|>`: the item's text enters through its token's
# content-started row, not as words, so an epoch costs ~4 tokens per interaction), item rows started from title
# (+ image features, + noise that separates items with equal titles). Each variant overrides it:
# (model/data argument overrides, training argument overrides).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "unimp": ({}, {}),
    # the recipe before length-grouped batches (and the order every ablation row up to it was measured with)
    "unimp-random-order": ({}, {"train_sampling_strategy": "random"}),
    "unimp-no-images": ({"use_images": False}, {}),
    # item rows computed from content (text words + frozen vision features + a residual dropped whole)
    "unimp-content": ({"item_rows": "content", "freeze_vision_tower": True, "item_residual_dropout": 0.5}, {}),
    "unimp-content-residual-0.2": ({"item_rows": "content", "freeze_vision_tower": True,
                                    "item_residual_dropout": 0.2}, {}),
    # content rows whose residuals start at the train-interaction SVD (rank 32), movielens' best free-row start
    "unimp-content-collaborative-32": ({"item_rows": "content", "freeze_vision_tower": True,
                                        "item_residual_dropout": 0.2, "item_init_interaction_weight": 1.0,
                                        "item_init_interaction_rank": 32}, {}),
    # content rows whose pictures enter through the item rows only: compact chunks without an <image>
    "unimp-content-row-images": ({"item_rows": "content", "freeze_vision_tower": True,
                                  "item_residual_dropout": 0.2, "chunk_images": False}, {}),
    "unimp-content-residual-0.2-no-images": ({"item_rows": "content", "freeze_vision_tower": True,
                                              "item_residual_dropout": 0.2, "use_images": False}, {}),
    "unimp-frozen-vision": ({"freeze_vision_tower": True}, {}),
    "unimp-id-only": ({"use_images": False, "init_item_tokens_from": "", "item_init_image_weight": 0.0,
                       "item_init_noise": 0.0}, {}),
    "unimp-gamma0": ({}, {"gamma": 0.0}),
    # item rows also started from the train interactions (a truncated SVD of the user x item matrix)
    "unimp-collaborative": ({"item_init_interaction_weight": 1.0}, {}),
    # the same from a rank-64 or rank-32 SVD: the co-consumption structure without the noise of the smallest factors
    "unimp-collaborative-64": ({"item_init_interaction_weight": 1.0, "item_init_interaction_rank": 64}, {}),
    "unimp-collaborative-32": ({"item_init_interaction_weight": 1.0, "item_init_interaction_rank": 32}, {}),
    # the paper's context reconstruction (identify each history item from its content) as a second objective: every
    # sequence also in the "after" layout, so an epoch costs twice the steps
    "unimp-identification": ({"identification": True}, {}),
    # multi-task: 1,000 samples of the other ranking tasks (10 history items each) beside the packed recommend data
    "unimp-multitask": ({"tasks": "recommend,search,rate_explain,select", "max_train_samples": 1000}, {}),
    # rating: every train interaction also a rating target (packed rating sequences, ratings only), plus 1,000
    # rate_explain samples (10 history items each) that teach the explanation after the rating
    "unimp-ratings": ({"tasks": "recommend,rate_explain", "packed_ratings": "ratings", "max_train_samples": 1000}, {}),
    # the image-generation benchmark's training without generate_image (same steps: 3,000 search samples instead of
    # its 1,500 search and 1,500 generate_image ones; 4 history items each; vision tower frozen)
    "unimp-search": ({"tasks": "recommend,search", "max_train_samples": 3000, "task_history_items": 4,
                      "freeze_vision_tower": True}, {}),
}


SEEDED_BASELINES = ("sasrec",)  # the baselines whose fit depends on the seed (the others are deterministic)


def baseline_models(data, split: LeaveOneOut, sasrec_epochs: int = 300, seed: int = 0) -> dict[str, Any]:
    """The baselines of the benchmark, unfitted, for `split`'s catalogue: content rows only where the items have
    the content (fashion-shop: text, images, both; movielens-small: text)."""
    items = data["items"]
    position = {item_id: row for row, item_id in enumerate(items["item_id"])}
    items = items.select([position[item_id] for item_id in split.item_ids])  # rows in the split's item order
    has_images = "image" in items.column_names and any(image is not None for image in items["image"])
    content = {"content-text": ("text",)}
    if has_images:
        content.update({"content-image": ("image",), "content": ("text", "image")})
    models: dict[str, Any] = {"popularity": PopularityRecommender(split.num_items), "itemknn": ItemKNN(split.num_items)}
    models.update({name: ContentRecommender(content_vectors(items, fields)) for name, fields in content.items()})
    models["sasrec"] = SASRecRecommender(SASRecConfig(num_items=split.num_items, max_epochs=sasrec_epochs, seed=seed))
    return models


def target_train_counts(data, samples) -> list[int]:
    """How often each sample's target item occurs in the train interactions (0 for an item never trained on)."""
    counts = Counter(data["train"]["item_id"])
    return [counts[sample["target"]["item_id"]] for sample in samples]


def run_baselines(data, split: LeaveOneOut, exclude_seen: bool = True, sasrec_epochs: int = 300,
                  seed: int = 0) -> dict[str, dict]:
    """Fit every baseline on the train split (SASRec early-stopped on all validation users) and score it once on
    test under the protocol; each row carries its train seconds (SASRec: epochs and seconds per epoch too) and its
    test NDCG@10 by the target item's train frequency. Rows of `SEEDED_BASELINES` are named with `seed`."""
    rows = {}
    counts = target_train_counts(data, split.samples("test"))
    for name, model in baseline_models(data, split, sasrec_epochs, seed).items():
        ranks, fit = fit_and_rank(model, split, exclude_seen)
        rows[row_name(name, seed) if name in SEEDED_BASELINES else name] = {
            **ranking_metrics(ranks), **fit, "by_target_frequency": ranking_by_frequency(ranks, counts)}
    return rows


def fit_and_rank(model, split: LeaveOneOut, exclude_seen: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Fit a baseline on the train split (a SASRec early-stopped on NDCG@10 of all validation users) and rank every
    test target once: `(ranks, {train_seconds[, epochs, best_epoch, validation_NDCG@10, seconds_per_epoch]})`."""
    start = time.perf_counter()
    train = list(split.train.values())
    if isinstance(model, SASRecRecommender):
        model.fit(train, validation=lambda m: evaluate_scorer(m, split, "validation", exclude_seen)["NDCG@10"])
    else:
        model.fit(train)
    fit = {"train_seconds": time.perf_counter() - start}
    if isinstance(model, SASRecRecommender):
        best = max(model.history, key=lambda r: r["validation"])
        fit.update({"epochs": len(model.history), "best_epoch": best["epoch"], "validation_NDCG@10": best["validation"],
                    "seconds_per_epoch": sum(r["seconds"] for r in model.history) / len(model.history)})
    return scorer_ranks(model, split, "test", exclude_seen), fit


def reference_rows(dataset: str, split: str = "test") -> dict[str, dict]:
    """Reference rows shipped with a bundled dataset (`reference_rows.json`, e.g. fashion-shop's oracle, which reads
    the generator's hidden taste and is no model), each labelled "reference: ..."; none when the dataset has none."""
    folder = Path(dataset) if Path(dataset).is_dir() else bundled_dataset_path(dataset)
    path = folder / "reference_rows.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["splits"][split]
    return {f"reference: {row['label']}": {k: v for k, v in row.items() if k != "label"} for row in rows}


def unimp_arguments(dataset: str, variant: str, output_dir: Path, preset: str, epochs: float, eval_users: int | None,
                    max_steps: int = -1, seed: int = 0, init_fields: str = "title,categories", **overrides):
    """The three argument dataclasses of `examples/train.py` for one variant (`overrides`, model or data arguments,
    apply first, then the variant's).

    The budget is `epochs` of the packed training data, evaluated (validation ranking) after each epoch, or
    `max_steps` optimiser steps (evaluated three times) when positive. `init_fields`: the item attributes whose
    text starts each item token's row.
    """
    data_model, training = VARIANTS[variant]
    model_args = ModelArguments(model_preset=preset, init_item_tokens_from=init_fields)
    data_args = DataArguments(dataset=dataset, max_eval_users=eval_users)
    for key, value in {**overrides, **data_model}.items():
        target = next((args for args in (model_args, data_args) if hasattr(args, key)), None)
        if target is None:
            raise ValueError(f"UniMP override {key!r} is neither a ModelArguments nor a DataArguments field.")
        setattr(target, key, value)
    training_args = training_arguments(output_dir / variant, data_args.tasks, max_steps, num_train_epochs=epochs,
                                       seed=seed, disable_tqdm=False, **training)
    return model_args, data_args, training_args


def run_unimp(dataset: str, variant: str, output_dir: Path, preset: str, epochs: float, eval_users: int | None,
              test_users: int | None, task_users: int | None = 300, exclude_seen: bool = True,
              max_steps: int = -1, seed: int = 0, init_fields: str = "title,categories", **overrides):
    """Train one UniMP variant and score it on the test split; returns (metrics, model, processor, data)."""
    args = unimp_arguments(dataset, variant, output_dir, preset, epochs, eval_users, max_steps, seed, init_fields,
                           **overrides)
    start = time.perf_counter()
    trainer, processor, data = run_training(*args)
    seconds = time.perf_counter() - start
    state = trainer.state
    best = max((r for r in state.log_history if "eval_NDCG@10" in r), key=lambda r: r["eval_NDCG@10"], default={})
    model_args, data_args, training_args = args
    metrics = evaluate_unimp(trainer.model, processor, data, data_args.tasks.split(","),
                             data_args.task_history_items if data_args.packed else None, test_users, task_users,
                             exclude_seen, seed)
    metrics.update({"train_seconds": seconds, "train_steps": state.global_step, "epochs": state.epoch,
                    "best_epoch": best.get("epoch"), "validation_NDCG@10": best.get("eval_NDCG@10"),
                    "seed": training_args.seed, "item_init_fields": model_args.init_item_tokens_from})
    return metrics, trainer.model, processor, data


def evaluate_unimp(model, processor, data, tasks: Sequence[str], task_history: int | None, test_users: int | None,
                   task_users: int | None = 300, exclude_seen: bool = True, seed: int = 0) -> dict[str, Any]:
    """Test metrics of a trained UniMP: exact full ranking of next items (all test users, or `test_users`, with
    frequency buckets), and each other trained task in `tasks` on its first `task_users` test samples (histories cut
    to `task_history` items, as trained) against the floors it must beat on the same samples."""
    test = recommend_samples(data, processor.item_ids, "test", test_users)
    ranks = ranking_ranks(model, processor, test, exclude_seen=exclude_seen)
    metrics = {**ranking_metrics(ranks), "torch_threads": torch.get_num_threads(),
               "by_target_frequency": ranking_by_frequency(ranks, target_train_counts(data, test))}
    available = set(data["tasks_test"]["task"])
    samples = {task: recent_history(select_tasks(data["tasks_test"], [task], task_users), task_history)
               for task in ("search", "rate_explain", "select") if task in available and task in tasks}
    if "search" in samples:
        metrics["search"] = evaluate_ranking(model, processor, samples["search"])
    if "rate_explain" in samples:
        metrics["rating"] = evaluate_rating(model, processor, samples["rate_explain"],
                                            reference=user_mean_ratings(samples["rate_explain"], data["train"]))
        if any(s["target"].get("explanation") for s in samples["rate_explain"]):
            metrics["explanation"] = evaluate_explanations(model, processor, samples["rate_explain"][:50])
    if "select" in samples:
        metrics["selection"] = evaluate_selection(model, processor, samples["select"])
    if samples:  # the floors each task must beat, on the same samples (explanations: the same 50)
        floors = task_baselines(data, samples, seed)
        if "explanation" in metrics:
            explanation = "explanation: most common"
            floors[explanation] = task_baselines(data, {"rate_explain": samples["rate_explain"][:50]})[explanation]
        metrics["task_baselines"] = floors
    return metrics
