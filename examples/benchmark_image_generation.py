"""Personalized image generation on a bundled dataset: retrieve-then-generate against two baselines, in pixels.

    python examples/benchmark_image_generation.py --dataset fashion-shop --output-dir runs/image_generation

1. Trains the VQ image tokenizer (`train_image_tokenizer.py`; or loads one with `--image-tokenizer DIR`) and adds
   every item's codes to the catalogue, so that the processor's generate_image template can print them.
2. Trains a small UniMP from scratch on the search and generate_image tasks (UniMPTrainer). A generate_image
   sample's context is the user's `--context-items` most recent history items.
3. For test users (their generate_image samples) it makes one image per user three ways:
   - retrieve_then_generate: the model's search task ranks the catalogue for the user's history and query, the
     top `--context-items` items become the context, and the model generates the codes (`generation_unimp`);
   - no_retrieval: the same generation from the user's `--context-items` most recent history items;
   - nearest_item: the real image of the top retrieved item.
4. Scores them in the feature space of a CNN trained on the catalogue images (class and, when the dataset has
   `preference_model.json`, hidden visual style heads): FID-style distance to the users' real target images,
   class consistency with the query, and personalization (own history vs. random users' histories).

Writes `image_generation.json` (results under "image_generation"), `image_generation.md`,
`image_generation_grid.png`, and the trained model with its processor and `image_tokenizer/` subfolder in
`model/`. The defaults run in about 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from transformers import set_seed

from modeling_unimp.configuration_unimp import UniMPConfig
from modeling_unimp.trainer_unimp import (
    UniMPTrainer,
    UniMPTrainingArguments,
    init_image_code_tokens,
    init_item_tokens_from_text,
    unimp_for_processor,
)
from processing_unimp.builders_unimp import bundled_dataset_path, load_unimp_dataset
from processing_unimp.files_unimp import atomic_directory
from processing_unimp.generation_unimp import generate_image_codes, image_grid, retrieve_items
from processing_unimp.image_codes_unimp import (
    IMAGE_TOKENIZER_FOLDER,
    add_image_codes,
    code_grid_size,
    decode_image_codes,
    load_image_tokenizer,
)
from processing_unimp.image_eval_unimp import evaluate_image_generation, train_feature_classifier
from processing_unimp.processing_unimp import UniMPProcessor
from train_image_tokenizer import RESULTS_FILE, train_image_tokenizer

METHODS = ("retrieve_then_generate", "no_retrieval", "nearest_item")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/image_generation"))
    parser.add_argument("--image-tokenizer", type=Path, default=None,
                        help="A trained VQModel folder; by default one is trained into OUTPUT_DIR/image_tokenizer.")
    parser.add_argument("--tokenizer-epochs", type=int, default=8)
    parser.add_argument("--model-preset", default="small")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--context-items", type=int, default=4,
                        help="Items in a generate_image context: retrieved ones, or the most recent history items.")
    parser.add_argument("--max-history-items", type=int, default=8, help="History items a search prompt keeps.")
    parser.add_argument("--item-fields", default="title", help="Item attributes written per chunk.")
    parser.add_argument("--eval-users", type=int, default=150)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="Sample among the k most likely codes (0: all).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


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


def train_model(args: argparse.Namespace, processor: UniMPProcessor, vq, items, data) -> tuple[torch.nn.Module, dict]:
    """A from-scratch UniMP trained on the search and generate_image tasks.

    Half of the generate_image samples keep the user's most recent history items as context, the other half get
    query-matched catalogue items (`query_matched_samples`), so that the model learns both kinds of context.
    """
    model = unimp_for_processor(args.model_preset, processor)
    # Item tokens start at their title's mean embedding and code tokens at their codebook vector, so that a
    # from-scratch model learns in hundreds of steps.
    init_item_tokens_from_text(model, processor, "title")
    init_image_code_tokens(model, processor, vq)
    train = data["tasks_train"]
    search = [s for s in train if s["task"] == "search"]
    generate = [s for s in train if s["task"] == "generate_image"]
    half = len(generate) // 2
    generate = [{**s, "history": s["history"][-args.context_items:]} for s in generate[:half]] + \
        query_matched_samples(generate[half:], items, args.context_items, args.seed)
    mixed = search + generate
    random.Random(args.seed).shuffle(mixed)
    training_args = UniMPTrainingArguments(
        output_dir=str(args.output_dir / "checkpoints"), max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=0.03, logging_steps=25, save_strategy="no", report_to="none", seed=args.seed,
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


def main() -> None:
    args = parse_args()
    set_seed(args.seed)
    start = time.perf_counter()
    data = load_unimp_dataset(args.dataset)
    items = data["items"]
    if args.image_tokenizer is not None:
        vq = load_image_tokenizer(args.image_tokenizer)
        saved = args.image_tokenizer / RESULTS_FILE
        tokenizer_results = json.loads(saved.read_text()) if saved.is_file() else {"path": str(args.image_tokenizer)}
    else:
        vq, tokenizer_results = train_image_tokenizer(
            items, args.output_dir / IMAGE_TOKENIZER_FOLDER, epochs=args.tokenizer_epochs, seed=args.seed)
    items = add_image_codes(items, vq)

    image_size = UniMPConfig.from_preset(args.model_preset).vision_config.image_size
    processor = UniMPProcessor.from_catalogue(
        items, image_size=image_size, vocab_size=2048, item_fields=args.item_fields.split(","),
        max_history_items=args.max_history_items, max_length=512, codebook_size=vq.config.num_vq_embeddings,
    )
    model, training = train_model(args, processor, vq, items, data)

    evaluation, rows = evaluate_generation(
        model, processor, vq, data, args.dataset, eval_users=args.eval_users, context_items=args.context_items,
        seed=args.seed, temperature=args.temperature, top_k=args.top_k,
    )
    results = evaluation["image_generation"]
    report = {
        **evaluation,
        "image_tokenizer": tokenizer_results,
        "training": training,
        "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "code_grid": list(code_grid_size(vq))},
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "image_generation.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "image_generation.md").write_text(markdown_table(results))
    image_grid(rows).save(args.output_dir / "image_generation_grid.png")
    with atomic_directory(args.output_dir / "model") as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        vq.save_pretrained(staging / IMAGE_TOKENIZER_FOLDER)
    print(markdown_table(results))
    print(json.dumps({key: report[key] for key in ("retrieval", "feature_classifier", "training", "seconds")}, indent=2))


if __name__ == "__main__":
    main()
