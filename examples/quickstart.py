"""The main job: UniMP end to end on the bundled datasets, offline, on a CPU.

    python examples/quickstart.py --output-dir runs/quickstart

1. loads the bundled `fashion-shop` (semi-synthetic, real Fashion-MNIST images) and `movielens-small` datasets;
2. trains a VQ image tokenizer on the fashion-shop item images;
3. trains the `small` UniMP with the benchmark's recipe (packed next-item recommend data plus samples of the other
   tasks; the vision tower frozen and its features cached, to fit the budget): on fashion-shop on all five tasks
   (images in, image codes out) for half an epoch (`--fashion-epochs 1` trains the other tasks better, in about
   15 min); on movielens-small (text only) on the four tasks it has data for, one epoch, its item rows started
   from a rank-32 SVD of the train interactions too, as the benchmark's movielens-small recipe (the ablations,
   e.g. no images, are `examples/benchmark.py`'s);
4. evaluates them by exact full ranking against Popularity, ItemKNN, content and SASRec under the same protocol,
   and the other tasks against their trivial baselines;
5. measures full-ranking speed against the original's 10-beam search;
6. scores personalized image generation (retrieve-then-generate vs no retrieval vs the nearest item's image);
7. exports the fashion-shop model to `DIR/hub/` (carded `unimp-small-fashion-shop` with the results just measured)
   and a Space for it to `DIR/space/` (`python DIR/space/app.py`), reloads the export with `trust_remote_code=True`
   and runs `pipeline("personalization")` for one test user on every task.
Writes `results.json` (the benchmark schema), `results.md`, `results.png` and `generated_images.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import pipeline

from processing_unimp.benchmark.image_generation import evaluate_generation
from processing_unimp.benchmark.report import budget_text, markdown, plot
from processing_unimp.benchmark.runs import run_baselines, run_unimp
from processing_unimp.benchmark.speed import ranking_speed
from processing_unimp.data.builders import bundled_dataset_path, load_unimp_dataset, read_statistics
from processing_unimp.evaluation.protocol import LeaveOneOut, protocol_text
from processing_unimp.export.figures import image_grid
from processing_unimp.export.hub import export
from processing_unimp.training.image_tokenizer import train_image_tokenizer

RANKING_TASKS = "recommend,search,rate_explain,select"


def run_dataset(name: str, epochs: float, overrides: dict, args, output: Path) -> tuple[dict, tuple]:
    """Train UniMP for `epochs` (`overrides`: train.py model or data arguments) and the baselines on one bundled
    dataset; returns the results block and (model, processor, data, test samples)."""
    print(f"\n== {name} ==\n{(bundled_dataset_path(name) / 'statistics.md').read_text()}")
    data = load_unimp_dataset(name)
    split = LeaveOneOut.from_dataset(data)
    test = split.samples("test")[: args.test_users]
    metrics, model, processor, _ = run_unimp(name, "unimp", output / name, "small", epochs, args.eval_users,
                                             args.test_users, max_steps=args.max_steps, **overrides)
    models = {"unimp": metrics, **run_baselines(data, split, sasrec_epochs=args.sasrec_epochs)}
    block = {
        "protocol": protocol_text(split.num_items, len(test), exclude_seen=True)
        + f"; UniMP `small` trained {budget_text(epochs, args.max_steps)} on {overrides['tasks']}",
        "statistics": read_statistics(bundled_dataset_path(name)),
        "models": models,
    }
    return block, (model, processor, data, test)


def one_user_on_every_task(pipe, sample: dict) -> dict:
    """The exported pipeline's answer for one test user on every task."""
    history = [h["item_id"] for h in sample["history"]]
    return {
        "recommend": pipe(history=history, task="recommend", top_k=5),
        "search": pipe(history=history, task="search", query="dark bag", top_k=5),
        "rate_explain": pipe(history=history, task="rate_explain", target=sample["target"]["item_id"]),
        "select": pipe(history=history, task="select", candidates=[sample["target"]["item_id"], *history[:2]]),
        "generate_image": pipe(history=history, task="generate_image", query="dark bag", num_images=4, seed=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--fashion-epochs", type=float, default=0.5,
                        help="epochs of the fashion-shop UniMP run (packed recommend data plus the task samples)")
    parser.add_argument("--movielens-epochs", type=float, default=1,
                        help="epochs of the movielens-small UniMP run (its item rows start from titles, genres and a "
                             "rank-32 SVD of the train interactions, as in the benchmark)")
    parser.add_argument("--max-steps", type=int, default=-1, help="training steps of each UniMP run (overrides)")
    parser.add_argument("--task-samples", type=int, default=1000,
                        help="samples of the other tasks added to the packed recommend data of each run")
    parser.add_argument("--tokenizer-epochs", type=int, default=4, help="epochs of the VQ image tokenizer")
    parser.add_argument("--sasrec-epochs", type=int, default=40,
                        help="cap (the benchmark allows 300); SASRec stops early on validation")
    parser.add_argument("--eval-users", type=int, default=1000,
                        help="validation users per evaluation (one epoch: it only reports, there is nothing to select)")
    parser.add_argument("--train-vision-tower", action="store_true",
                        help="train the fashion-shop vision tower (the benchmark's default) instead of freezing it "
                             "and caching its features (about a third less time per step)")
    parser.add_argument("--test-users", type=int, default=None, help="test users per dataset (default: all)")
    parser.add_argument("--image-users", type=int, default=60, help="test users for image generation")
    args = parser.parse_args()
    started = time.perf_counter()
    output = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    stages: dict[str, float] = {}  # wall seconds of each stage, so that a reader sees where the time goes

    def stage(name: str) -> None:
        stages[name] = time.perf_counter() - started - sum(stages.values())

    fashion = load_unimp_dataset("fashion-shop")
    tokenizer_dir = output / "image_tokenizer"
    image_tokenizer, tokenizer_results = train_image_tokenizer(fashion["items"], tokenizer_dir,
                                                               epochs=args.tokenizer_epochs)
    stage("image tokenizer")
    results: dict = {"datasets": {}, "stage_seconds": stages}
    fashion_run = {"tasks": RANKING_TASKS + ",generate_image", "image_tokenizer": str(tokenizer_dir),
                   "max_train_samples": args.task_samples, "freeze_vision_tower": not args.train_vision_tower}
    results["datasets"]["fashion-shop"], (model, processor, data, test) = run_dataset(
        "fashion-shop", args.fashion_epochs, fashion_run, args, output)
    stage("fashion-shop: UniMP + baselines")
    # the benchmark's movielens-small recipe: item rows also started from a rank-32 SVD of the train interactions
    movielens_run = {"tasks": RANKING_TASKS, "max_train_samples": args.task_samples,
                     "item_init_interaction_weight": 1.0, "item_init_interaction_rank": 32}
    results["datasets"]["movielens-small"], _ = run_dataset("movielens-small", args.movielens_epochs, movielens_run,
                                                            args, output)
    stage("movielens-small: UniMP + baselines")

    results["speed"] = ranking_speed(model, processor, test[:64])
    stage("ranking speed")
    generation, rows = evaluate_generation(model, processor, image_tokenizer, data, "fashion-shop",
                                           eval_users=args.image_users, context_items=4, seed=0)
    results["image_generation"] = generation.pop("image_generation")
    results["image_generation_details"] = {**generation, "image_tokenizer": tokenizer_results}
    stage("image generation")

    # The fashion-shop model (with its image tokenizer) as a self-contained Hub folder carded with the results so far,
    # a ready-to-push Space next to it, and the export reloaded as remote code.
    (output / "results.json").write_text(json.dumps(results, indent=2))
    hub = export(output / "fashion-shop" / "unimp", output / "hub", results=output / "results.json", overwrite=True,
                 name="unimp-small-fashion-shop", dataset="fashion-shop", space_dir=output / "space")
    pipe = pipeline("personalization", model=str(hub), trust_remote_code=True)
    demo = one_user_on_every_task(pipe, test[0])
    image_grid([demo.pop("generate_image"), *rows[:4]]).save(output / "generated_images.png")
    results["pipeline_demo"] = {"user_id": test[0]["user_id"], **json.loads(json.dumps(demo, default=str))}
    stage("export + pipeline demo")
    results["runtime_seconds"] = time.perf_counter() - started

    (output / "results.json").write_text(json.dumps(results, indent=2))
    (output / "results.md").write_text(markdown(results))
    plot(results, output / "results.png")
    print(markdown(results))
    print(json.dumps(results["pipeline_demo"], indent=2)[:3000])
    print(f"Done in {results['runtime_seconds'] / 60:.1f} min; results in {output}/results.json")


if __name__ == "__main__":
    main()
