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
import time
from pathlib import Path

from transformers import set_seed

from modeling_unimp.configuration_unimp import UniMPConfig
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.data.files import atomic_directory
from processing_unimp.generation_unimp import image_grid
from processing_unimp.image_codes_unimp import (
    IMAGE_TOKENIZER_FOLDER,
    add_image_codes,
    code_grid_size,
    load_image_tokenizer,
)
from processing_unimp.processing_unimp import UniMPProcessor
from processing_unimp.training.image_generation import evaluate_generation, markdown_table, train_model
from processing_unimp.training.image_tokenizer import RESULTS_FILE, train_image_tokenizer


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
    model, training = train_model(
        processor, vq, items, data, args.output_dir, model_preset=args.model_preset, max_steps=args.max_steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, context_items=args.context_items, seed=args.seed,
    )

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
