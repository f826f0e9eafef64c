"""Personalized image generation scored in pixels: retrieve-then-generate against no retrieval and the nearest item.

Not shipped to the Hub; behind `examples/benchmark_image_generation.py` and the quickstart.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration

from ..baselines.tasks import task_baselines
from ..data.builders import bundled_dataset_path, load_unimp_dataset
from ..evaluation.images import evaluate_image_generation, train_feature_classifier
from ..evaluation.tasks import evaluate_ranking
from ..generation_unimp import SAMPLING, generate_image_codes, retrieve_items
from ..image_codes_unimp import (
    IMAGE_TOKENIZER_FOLDER,
    code_grid_size,
    decode_image_codes,
    encode_image_codes,
    load_image_tokenizer,
)
from ..processing_unimp import UniMPProcessor
from ..training.image_tokenizer import RESULTS_FILE, TOKENIZER_EPOCHS, train_image_tokenizer
from ..training.recipe import recent_history, select_tasks
from .runs import run_unimp

METHODS = ("retrieve_then_generate", "no_retrieval", "nearest_item", "latest_history_item", "wanted_item_tokenized",
           "wanted_item")
"""Scored image sets: the two generations, then reference points for the measures: real images of the top retrieved
item and of the user's latest history item, the wanted item through the VQ tokenizer (encoded and decoded: the best
that any code generator can do), and the wanted item itself."""
BASELINE = "no_retrieval"  # what retrieval must beat: the same generation from the user's latest items


def item_class_labels(items) -> list[int]:
    """Each item's class index, the class being its most specific category."""
    classes = [(categories or ["?"])[-1] for categories in items["categories"]]
    names = sorted(set(classes))
    return [names.index(name) for name in classes]


def style_labels(dataset: str, item_ids: list[str]) -> list[int] | None:
    """The hidden visual style of each item from a bundled dataset's `preference_model.json`, if it has one."""
    folder = bundled_dataset_path(dataset) if not Path(dataset).is_dir() else Path(dataset)
    path = folder / "preference_model.json"
    if not path.is_file():
        return None
    styles = json.loads(path.read_text())["item_style"]
    return [styles[item_id] for item_id in item_ids]


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """Every scored image set (`METHODS`) as a row of a markdown table, with its paired difference to no retrieval."""
    header = ("| method | FID-style distance (lower is better) | class consistency | personalization "
              f"| style consistency | FID-style distance − {BASELINE} (± s.e.) "
              f"| personalization − {BASELINE} (± s.e.) |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for method in METHODS:
        scores = results[method]
        style = f"{scores['style_consistency']:.3f}" if "style_consistency" in scores else "–"
        versus = scores.get(f"vs_{BASELINE}")
        paired = ("– | –" if versus is None else
                  f"{versus['fid_difference']:+.1f} ± {versus['fid_difference_se']:.1f} "
                  f"| {versus['personalization_difference']:+.3f} ± {versus['personalization_difference_se']:.3f}")
        lines.append(f"| {method} | {scores['fid']:.3f} | {scores['consistency']:.3f} "
                     f"| {scores['personalization']:.3f} | {style} | {paired} |")
    return "\n".join(lines) + "\n"


def evaluate_generation(model, processor, vq, data, dataset: str, *, eval_users: int, context_items: int, seed: int,
                        temperature: float = SAMPLING["temperature"], top_k: int = 0,
                        copy_weight: float = SAMPLING["copy_weight"], history_items: int | None = None,
                        split: str = "test") -> tuple[dict, list[list]]:
    """Generate for `eval_users` users of `split` (their generate_image samples) with and without retrieval and
    score both, beside the reference image sets of `METHODS`, in a classifier's feature space (sampling settings,
    `copy_weight` among them, are chosen on "validation"); every set gets its paired difference to no retrieval,
    with standard errors.

    The search prompt that retrieves keeps the user's `history_items` latest items (None: all), as the model's
    search samples were trained. Returns the report (`image_generation`, `retrieval`, `feature_classifier`) and
    rows of images for a grid (the wanted item, then one image per other set).
    """
    items = processor.catalogue.table
    grid = code_grid_size(vq)
    tests = [s for s in data[f"tasks_{split}"] if s["task"] == "generate_image"]
    tests = random.Random(seed).sample(tests, min(eval_users, len(tests)))
    histories, queries = [s["history"] for s in tests], [s["query"] for s in tests]
    prompts = [history[-history_items:] if history_items else history for history in histories]
    retrieved = retrieve_items(model, processor, prompts, queries, context_items)
    contexts = {
        "retrieve_then_generate": [ranked[::-1] for ranked in retrieved],  # best last, nearest the prompt
        "no_retrieval": [history[-context_items:] for history in histories],
    }
    sampling = {"temperature": temperature, "top_k": top_k, "copy_weight": copy_weight}
    catalogue = processor.catalogue
    generated = {}
    for method, method_contexts in contexts.items():
        torch.manual_seed(seed)
        codes = generate_image_codes(model, processor, method_contexts, queries, grid[0] * grid[1], **sampling)
        generated[method] = decode_image_codes(vq, codes, grid)
    targets = [s["target"]["item_id"] for s in tests]
    references = [catalogue[item_id]["image"] for item_id in targets]
    generated["nearest_item"] = [catalogue[ranked[0]]["image"] for ranked in retrieved]
    generated["latest_history_item"] = [catalogue[history[-1]["item_id"]]["image"] for history in histories]
    generated["wanted_item_tokenized"] = decode_image_codes(vq, encode_image_codes(vq, references), grid)
    generated["wanted_item"] = references

    class_of = item_class_labels(items)
    labels = {"class": class_of}
    styles = style_labels(dataset, items["item_id"])
    if styles is not None:
        labels["style"] = styles
    classifier, classifier_accuracy = train_feature_classifier(
        items["image"], labels, channels=vq.config.in_channels, image_size=vq.config.sample_size, seed=seed)
    row_of = {item_id: row for row, item_id in enumerate(items["item_id"])}
    center = classifier.embed(items["image"])[0].mean(0)
    results = evaluate_image_generation(
        classifier, generated, references=references,
        query_classes=[class_of[row_of[item_id]] for item_id in targets],
        histories=[[catalogue[h["item_id"]]["image"] for h in history] for history in histories],
        center=center, seed=seed, baseline=BASELINE,
        target_styles=None if styles is None else [styles[row_of[item_id]] for item_id in targets],
    )
    retrieval = {
        "target_in_retrieved": round(sum(t in r for t, r in zip(targets, retrieved)) / len(tests), 4),
        "retrieved_class_precision": round(sum(
            class_of[row_of[item_id]] == class_of[row_of[target]] for target, ranked in zip(targets, retrieved)
            for item_id in ranked) / sum(map(len, retrieved)), 4),
    }
    shown = range(min(12, len(tests)))
    rows = [[references[i], *(generated[m][i] for m in METHODS[:-1])] for i in shown]
    report = {"image_generation": {method: results[method] for method in METHODS}, "retrieval": retrieval,
              "feature_classifier": classifier_accuracy, "num_users": len(tests), "split": split}
    return report, rows


def search_ranking(model, processor, data, history_items: int | None, split: str = "test", users: int = 300,
                   seed: int = 0) -> dict[str, dict]:
    """Search HR/NDCG@10 of the model and of popularity in the query's category on `users` samples of `split`."""
    samples = recent_history(select_tasks(data[f"tasks_{split}"], ["search"], users), history_items)
    floor = task_baselines(data, {"search": samples}, seed)["search: popularity in the query's category"]
    return {"unimp": evaluate_ranking(model, processor, samples), "popularity in the query's category": floor}


def run_image_generation(dataset: str, output_dir: Path, *, model_dir: Path | None = None,
                         image_tokenizer: Path | None = None, tokenizer_epochs: int = TOKENIZER_EPOCHS,
                         preset: str = "small", epochs: float = 3, max_steps: int = -1, task_samples: int = 3000,
                         train_vision_tower: bool = False, validation_users: int | None = 1000,
                         test_users: int | None = None, generate_contexts: str = "mixed",
                         eval_users: int = 150, context_items: int = 4,
                         temperature: float = SAMPLING["temperature"], top_k: int = 0,
                         copy_weight: float = SAMPLING["copy_weight"], split: str = "test",
                         seed: int = 0) -> tuple[dict, list[list]]:
    """The image-generation benchmark: a VQ tokenizer (trained, or loaded from `image_tokenizer`), then the
    benchmark's UniMP recipe (`run_unimp`: packed recommend data plus `task_samples` search and generate_image
    samples together, each keeping its `context_items` latest history items: the context generation gets; with
    `generate_contexts="mixed"` every other generate_image sample gets query-matched catalogue items), then
    `evaluate_generation` on `eval_users` users of `split`. `model_dir` (a saved run's `unimp/` folder, with its
    `image_tokenizer/`) skips both trainings: sampling settings are compared that way on "validation".

    The model's search ranking (against popularity in the query's category) is reported beside the images, since
    retrieval can only help once search ranks; a trained run adds its recommend ranking (`test_users`, all by
    default). Returns the report and the grid's rows; a trained model, its processor and tokenizer are saved in
    `output_dir/unimp`.
    """
    report: dict = {}
    if model_dir is not None:
        model = UniMPForConditionalGeneration.from_pretrained(model_dir)
        processor = UniMPProcessor.from_pretrained(model_dir)
        vq = load_image_tokenizer(model_dir / IMAGE_TOKENIZER_FOLDER)
        data = load_unimp_dataset(dataset)
    else:
        if image_tokenizer is None:
            image_tokenizer = output_dir / IMAGE_TOKENIZER_FOLDER
            vq, tokenizer_results = train_image_tokenizer(load_unimp_dataset(dataset)["items"], image_tokenizer,
                                                          epochs=tokenizer_epochs, seed=seed)
        else:
            vq = load_image_tokenizer(image_tokenizer)
            saved = image_tokenizer / RESULTS_FILE
            tokenizer_results = json.loads(saved.read_text()) if saved.is_file() else {"path": str(image_tokenizer)}
        metrics, model, processor, data = run_unimp(
            dataset, "unimp", output_dir, preset, epochs, validation_users, test_users=test_users,
            max_steps=max_steps, seed=seed, tasks="recommend,search,generate_image",
            image_tokenizer=str(image_tokenizer), max_train_samples=task_samples, task_history_items=context_items,
            generate_contexts=generate_contexts, freeze_vision_tower=not train_vision_tower,
        )
        report.update({
            "recommend": {k: metrics[k] for k in ("HR@10", "NDCG@10", "NDCG@10_se")},
            "image_tokenizer": tokenizer_results,
            "training": {k: metrics[k] for k in ("train_seconds", "train_steps", "epochs", "best_epoch", "seed",
                                                 "torch_threads")},
        })
    model.eval()
    evaluation, rows = evaluate_generation(model, processor, vq, data, dataset, eval_users=eval_users,
                                           context_items=context_items, seed=seed, temperature=temperature,
                                           top_k=top_k, copy_weight=copy_weight, history_items=context_items,
                                           split=split)
    search = search_ranking(model, processor, data, context_items, split, seed=seed)
    return {**evaluation, "search": search, **report}, rows
