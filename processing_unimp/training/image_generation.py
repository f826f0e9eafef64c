"""Personalized image generation scored in pixels: retrieve-then-generate against no retrieval and the nearest item.

Not shipped to the Hub; behind `examples/benchmark_image_generation.py` and the quickstart.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from processing_unimp.data.builders import bundled_dataset_path
from processing_unimp.generation_unimp import generate_image_codes, retrieve_items
from processing_unimp.image_codes_unimp import code_grid_size, decode_image_codes
from processing_unimp.processing_unimp import UniMPProcessor
from processing_unimp.training.image_eval import evaluate_image_generation, train_feature_classifier
from processing_unimp.training.trainer import (
    UniMPTrainer,
    UniMPTrainingArguments,
    init_image_code_tokens,
    init_item_tokens_from_text,
    unimp_for_processor,
)

METHODS = ("retrieve_then_generate", "no_retrieval", "nearest_item")


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


def _words(text: str) -> set[str]:
    return set(text.lower().replace(",", " ").split())


def query_matched_samples(samples, items, context_items: int, seed: int) -> list[dict]:
    """generate_image samples whose context is `context_items` other catalogue items matching most query words.

    A stand-in, at training time, for the context that retrieval gives at inference: it reads only the query and
    the items' title and categories (the target itself is never in the context).
    """
    rng = random.Random(seed)
    words = [_words(" ".join([title or "", *(categories or [])])) for title, categories in
             zip(items["title"], items["categories"])]
    item_ids = items["item_id"]
    matched = []
    for sample in samples:
        query = _words(sample["query"])
        scores = [len(query & item_words) for item_words in words]
        best = max(scores)
        pool = [item_ids[row] for row, score in enumerate(scores)
                if score == best and item_ids[row] != sample["target"]["item_id"]]
        matched.append({**sample, "history": rng.sample(pool, min(context_items, len(pool)))})
    return matched


def train_model(processor: UniMPProcessor, vq, items, data, output_dir: Path, *, model_preset: str = "small",
                max_steps: int = 300, batch_size: int = 8, learning_rate: float = 2e-3, context_items: int = 4,
                seed: int = 0) -> tuple[torch.nn.Module, dict]:
    """A from-scratch UniMP trained on the search and generate_image tasks.

    Half of the generate_image samples keep the user's most recent history items as context, the other half get
    query-matched catalogue items (`query_matched_samples`), so that the model learns both kinds of context.
    """
    model = unimp_for_processor(model_preset, processor)
    # Item tokens start at their title's mean embedding and code tokens at their codebook vector, so that a
    # from-scratch model learns in hundreds of steps.
    init_item_tokens_from_text(model, processor, "title")
    init_image_code_tokens(model, processor, vq)
    train = data["tasks_train"]
    search = [s for s in train if s["task"] == "search"]
    generate = [s for s in train if s["task"] == "generate_image"]
    half = len(generate) // 2
    generate = [{**s, "history": s["history"][-context_items:]} for s in generate[:half]] + \
        query_matched_samples(generate[half:], items, context_items, seed)
    mixed = search + generate
    random.Random(seed).shuffle(mixed)
    training_args = UniMPTrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=max_steps,
        per_device_train_batch_size=batch_size, learning_rate=learning_rate, lr_scheduler_type="cosine",
        warmup_steps=0.03, logging_steps=25, save_strategy="no", report_to="none", seed=seed,
        task_weights="search=1.0", dataloader_drop_last=True,
    )
    trainer = UniMPTrainer(model=model, args=training_args, train_dataset=mixed, data_collator=processor,
                           processing_class=processor)
    result = trainer.train()
    return trainer.model.eval(), {"train_loss": round(result.training_loss, 4), "steps": result.global_step,
                                  "train_samples": len(mixed)}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """The three methods' scores as a markdown table."""
    lines = ["| method | FID-style distance (lower is better) | class consistency | personalization |",
             "|---|---:|---:|---:|"]
    for method in METHODS:
        scores = results[method]
        lines.append(f"| {method} | {scores['fid']:.3f} | {scores['consistency']:.3f} | {scores['personalization']:.3f} |")
    return "\n".join(lines) + "\n"


def evaluate_generation(model, processor, vq, data, dataset: str, *, eval_users: int, context_items: int, seed: int,
                        temperature: float = 1.0, top_k: int = 0) -> tuple[dict, list[list]]:
    """Generate for `eval_users` test users by the three methods and score them in a classifier's feature space.

    Returns the report (`image_generation`, `retrieval`, `feature_classifier`) and rows of images for a grid
    (target, then one image per method).
    """
    items = processor.catalogue.table
    grid = code_grid_size(vq)
    tests = [s for s in data["tasks_test"] if s["task"] == "generate_image"]
    tests = random.Random(seed).sample(tests, min(eval_users, len(tests)))
    histories, queries = [s["history"] for s in tests], [s["query"] for s in tests]
    retrieved = retrieve_items(model, processor, histories, queries, context_items)
    contexts = {
        "retrieve_then_generate": [ranked[::-1] for ranked in retrieved],  # best last, nearest the prompt
        "no_retrieval": [history[-context_items:] for history in histories],
    }
    sampling = {"temperature": temperature, "top_k": top_k}
    catalogue = processor.catalogue
    generated = {}
    for method, method_contexts in contexts.items():
        torch.manual_seed(seed)
        codes = generate_image_codes(model, processor, method_contexts, queries, grid[0] * grid[1], **sampling)
        generated[method] = decode_image_codes(vq, codes, grid)
    generated["nearest_item"] = [catalogue[ranked[0]]["image"] for ranked in retrieved]

    class_of = item_class_labels(items)
    labels = {"class": class_of}
    styles = style_labels(dataset, items["item_id"])
    if styles is not None:
        labels["style"] = styles
    classifier, classifier_accuracy = train_feature_classifier(
        items["image"], labels, channels=vq.config.in_channels, image_size=vq.config.sample_size, seed=seed)
    row_of = {item_id: row for row, item_id in enumerate(items["item_id"])}
    targets = [s["target"]["item_id"] for s in tests]
    center = classifier.embed(items["image"])[0].mean(0)
    results = evaluate_image_generation(
        classifier, generated,
        references=[catalogue[item_id]["image"] for item_id in targets],
        query_classes=[class_of[row_of[item_id]] for item_id in targets],
        histories=[[catalogue[h["item_id"]]["image"] for h in history] for history in histories],
        center=center, seed=seed,
    )
    retrieval = {
        "target_in_retrieved": round(sum(t in r for t, r in zip(targets, retrieved)) / len(tests), 4),
        "retrieved_class_precision": round(sum(
            class_of[row_of[item_id]] == class_of[row_of[target]] for target, ranked in zip(targets, retrieved)
            for item_id in ranked) / sum(map(len, retrieved)), 4),
    }
    shown = range(min(12, len(tests)))
    rows = [[catalogue[targets[i]]["image"], *(generated[m][i] for m in METHODS)] for i in shown]
    report = {"image_generation": {method: results[method] for method in METHODS}, "retrieval": retrieval,
              "feature_classifier": classifier_accuracy, "num_users": len(tests)}
    return report, rows
