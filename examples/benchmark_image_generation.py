"""Personalized image generation on a bundled dataset: retrieve-then-generate against two baselines, in pixels.

    python examples/benchmark_image_generation.py --dataset fashion-shop --output-dir runs/image_generation

1. Trains the VQ image tokenizer (`train_image_tokenizer.py`; or loads one with `--image-tokenizer DIR`), whose
   codes the processor's generate_image template prints.
2. Trains UniMP with the benchmark's recipe (`examples/benchmark.py`: `small` from scratch, packed recommend data,
   content-started item rows, the best epoch on validation) plus `--task-samples` search and generate_image
   samples, each keeping its `--context-items` latest history items (by default every other generate_image sample
   gets catalogue items matching its query instead, a stand-in for what retrieval gives at inference); the vision
   tower frozen with cached features unless `--train-vision-tower`. Its test search ranking is reported beside the
   images: retrieval can only help once search ranks.
3. For test users (their generate_image samples) it generates one image per user two ways:
   - retrieve_then_generate: the model's search task ranks the catalogue for the user's history and query, the
     top `--context-items` items become the context, and the model generates the codes (`generation_unimp`);
   - no_retrieval: the same generation from the user's `--context-items` most recent history items;
   and scores reference image sets beside them, to show what each measure rewards: the real images of the top
   retrieved item (nearest_item) and of the user's latest history item, the wanted item through the VQ tokenizer
   (the best any code generator can do) and the wanted item itself.
4. Scores them in the feature space of a CNN trained on the catalogue images (class and, when the dataset has
   `preference_model.json`, hidden visual style heads): FID-style distance to the users' real target images,
   class consistency with the query, and personalization (own history vs. random users' histories).

Writes `image_generation.json` (results under "image_generation"), `image_generation.md` and
`image_generation_grid.png`; the trained model with its processor and `image_tokenizer/` subfolder is in `unimp/`.
`--model OUTPUT_DIR/unimp --split validation --temperature T` scores a saved model's images again (no training):
sampling settings are chosen that way, on validation users, before the test split is scored.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from processing_unimp.benchmark.image_generation import markdown_table, run_image_generation
from processing_unimp.export.figures import image_grid
from processing_unimp.generation_unimp import SAMPLING
from processing_unimp.training.image_tokenizer import TOKENIZER_EPOCHS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/image_generation"))
    parser.add_argument("--model", type=Path, default=None,
                        help="A saved run's unimp/ folder (with image_tokenizer/): evaluate it, no training.")
    parser.add_argument("--split", default="test", help="users generated for: test, or validation to compare "
                                                        "sampling settings")
    parser.add_argument("--image-tokenizer", type=Path, default=None,
                        help="A trained VQModel folder; by default one is trained into OUTPUT_DIR/image_tokenizer.")
    parser.add_argument("--tokenizer-epochs", type=int, default=TOKENIZER_EPOCHS)
    parser.add_argument("--model-preset", default="small")
    parser.add_argument("--epochs", type=float, default=3, help="epochs of the packed data plus the task samples")
    parser.add_argument("--max-steps", type=int, default=-1, help="training steps (overrides --epochs)")
    parser.add_argument("--task-samples", type=int, default=3000,
                        help="search and generate_image training samples, together")
    parser.add_argument("--train-vision-tower", action="store_true")
    parser.add_argument("--generate-contexts", default="mixed", choices=("history", "mixed"),
                        help="generate_image training contexts: the user's latest items, or for every other sample "
                             "catalogue items matching its query (a stand-in for retrieval; chosen on validation)")
    parser.add_argument("--validation-users", type=int, default=1000,
                        help="validation users ranked (recommend) after each epoch to pick the checkpoint")
    parser.add_argument("--context-items", type=int, default=4,
                        help="Items in a generate_image context: retrieved ones, or the most recent history items.")
    parser.add_argument("--eval-users", type=int, default=150, help="test users images are generated for")
    parser.add_argument("--temperature", type=float, default=SAMPLING["temperature"],
                        help="code sampling temperature (chosen on validation)")
    parser.add_argument("--top-k", type=int, default=0, help="Sample among the k most likely codes (0: all).")
    parser.add_argument("--copy-weight", type=float, default=SAMPLING["copy_weight"],
                        help="weight of the context items' codes mixed into each position's sampling, for both "
                             "generating methods (0: the model alone; the default was chosen on validation)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print(f"seed {args.seed}, torch threads {torch.get_num_threads()} (the feature classifier and the sampled codes "
          "depend on both)")
    start = time.perf_counter()
    report, rows = run_image_generation(
        args.dataset, args.output_dir, model_dir=args.model, image_tokenizer=args.image_tokenizer,
        tokenizer_epochs=args.tokenizer_epochs, preset=args.model_preset, epochs=args.epochs, max_steps=args.max_steps,
        task_samples=args.task_samples, train_vision_tower=args.train_vision_tower,
        validation_users=args.validation_users, generate_contexts=args.generate_contexts, eval_users=args.eval_users,
        context_items=args.context_items, temperature=args.temperature, top_k=args.top_k,
        copy_weight=args.copy_weight, split=args.split, seed=args.seed,
    )
    report["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report["torch_threads"] = torch.get_num_threads()
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "image_generation.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output_dir / "image_generation.md").write_text(markdown_table(report["image_generation"]))
    image_grid(rows).save(args.output_dir / "image_generation_grid.png")
    print(markdown_table(report["image_generation"]))
    print(json.dumps({key: report.get(key) for key in ("retrieval", "search", "feature_classifier", "training",
                                                       "torch_threads", "seconds")}, indent=2))


if __name__ == "__main__":
    main()
