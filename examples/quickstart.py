"""The main job: the shipped UniMP checkpoints benchmarked end to end on the bundled datasets, offline, on a CPU.

    python examples/quickstart.py --output-dir runs/quickstart

1. loads the bundled `fashion-shop` (semi-synthetic, real Fashion-MNIST images) and `movielens-small` datasets and
   the `small` UniMP checkpoint shipped for each (`examples/checkpoints/`, remade by
   `python examples/train_checkpoints.py`: each dataset's best measured recipe plus samples of the other tasks);
2. scores them by exact full ranking against Popularity, ItemKNN, content and SASRec (trained here, early-stopped on
   validation) under the same protocol, and the other tasks against their floors on the same samples;
3. measures full-ranking speed against the original's 10-beam search;
4. scores personalized image generation (retrieve-then-generate vs no retrieval vs the nearest item's image);
5. exports the fashion-shop checkpoint to `DIR/hub/` (carded with the results just measured) and a Space for it to
   `DIR/space/` (`python DIR/space/app.py`), reloads the export with `trust_remote_code=True` and runs
   `pipeline("personalization")` for one test user on every task.
Writes `results.json` (the benchmark schema), `results.md`, `results.png` and `generated_images.png`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import pipeline

from processing_unimp.benchmark.checkpoints import checkpoint_name, evaluate_checkpoint
from processing_unimp.benchmark.image_generation import evaluate_generation
from processing_unimp.benchmark.report import markdown, plot
from processing_unimp.benchmark.runs import run_baselines
from processing_unimp.benchmark.speed import ranking_speed
from processing_unimp.data.builders import bundled_dataset_path, read_statistics
from processing_unimp.evaluation.protocol import LeaveOneOut, protocol_text
from processing_unimp.export.figures import image_grid
from processing_unimp.export.hub import export
from processing_unimp.image_codes_unimp import IMAGE_TOKENIZER_FOLDER, load_image_tokenizer

RANKING_TASKS = "recommend,search,rate_explain,select"


def run_dataset(name: str, args) -> tuple[dict, tuple]:
    """Score the shipped checkpoint and the baselines on one bundled dataset; returns the results block and (model,
    processor, data, test samples)."""
    print(f"\n== {name} ==\n{(bundled_dataset_path(name) / 'statistics.md').read_text()}")
    metrics, model, processor, data = evaluate_checkpoint(name, args.checkpoints / checkpoint_name(name),
                                                          args.test_users)
    split = LeaveOneOut.from_dataset(data)
    test = split.samples("test")[: args.test_users]
    models = {"unimp": metrics, **run_baselines(data, split, sasrec_epochs=args.sasrec_epochs)}
    recipe = metrics["recipe"]
    block = {
        "protocol": protocol_text(split.num_items, len(test), exclude_seen=True)
        + f"; UniMP: the shipped `small` checkpoint ({recipe['variant']}, {recipe['epochs']} epochs on "
          f"{recipe['tasks']}, seed {recipe['seed']})",
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
    parser.add_argument("--checkpoints", type=Path, default=Path("examples/checkpoints"),
                        help="folder of the checkpoints (`examples/train_checkpoints.py --output-dir`)")
    parser.add_argument("--sasrec-epochs", type=int, default=40,
                        help="cap (the benchmark allows 300); SASRec stops early on validation")
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

    results: dict = {"datasets": {}, "stage_seconds": stages}
    results["datasets"]["fashion-shop"], (model, processor, data, test) = run_dataset("fashion-shop", args)
    stage("fashion-shop: UniMP + baselines")
    results["datasets"]["movielens-small"], _ = run_dataset("movielens-small", args)
    stage("movielens-small: UniMP + baselines")

    results["speed"] = ranking_speed(model, processor, test[:64])
    stage("ranking speed")
    checkpoint = args.checkpoints / checkpoint_name("fashion-shop")
    image_tokenizer = load_image_tokenizer(checkpoint, subfolder=IMAGE_TOKENIZER_FOLDER)
    generation, rows = evaluate_generation(model, processor, image_tokenizer, data, "fashion-shop",
                                           eval_users=args.image_users, context_items=4, seed=0)
    results["image_generation"] = generation.pop("image_generation")
    results["image_generation_details"] = generation
    stage("image generation")

    # The fashion-shop checkpoint (with its image tokenizer) as a self-contained Hub folder carded with the results so
    # far, a ready-to-push Space next to it, and the export reloaded as remote code.
    (output / "results.json").write_text(json.dumps(results, indent=2))
    hub = export(checkpoint, output / "hub", results=output / "results.json", overwrite=True,
                 name=checkpoint_name("fashion-shop"), dataset="fashion-shop", space_dir=output / "space")
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
