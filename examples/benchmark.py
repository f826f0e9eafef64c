"""Benchmark UniMP against Popularity and SASRec, with ablations, under one protocol; and full ranking vs beam search.

    python examples/benchmark.py --dataset fashion-shop --output-dir runs/benchmark

Protocol: leave-one-out by time (the bundled datasets' split); every model ranks the whole catalogue for each test
user from the same history (the test sample's last `max_history_items` items), the target never removed, seen
items not filtered. Checkpoints (UniMP) and epochs (SASRec) are chosen on validation NDCG@10; test is scored once.
Writes `benchmark.json` (merged with an existing one, dataset by dataset), `benchmark.md` and `benchmark.png`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.training.benchmark import VARIANTS, markdown, plot, ranking_speed, run_baselines, run_unimp
from processing_unimp.training.recipe import select_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"UniMP variants among {list(VARIANTS)}")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--eval-users", type=int, default=300, help="validation users ranked per evaluation")
    parser.add_argument("--test-users", type=int, default=None, help="test users (default: all)")
    parser.add_argument("--sasrec-epochs", type=int, default=100)
    parser.add_argument("--speed-users", type=int, default=64)
    args = parser.parse_args()

    data = load_unimp_dataset(args.dataset)
    test = list(select_tasks(data["tasks_test"], ["recommend"], args.test_users))
    validation = list(select_tasks(data["tasks_validation"], ["recommend"], args.eval_users))
    models, speed = {}, None
    for variant in [v for v in args.variants.split(",") if v]:
        metrics, model, processor, _ = run_unimp(args.dataset, variant, args.output_dir, args.preset, args.max_steps,
                                                 args.eval_users, args.test_users, tasks_metrics=variant == "unimp")
        models[variant] = metrics
        if variant == "unimp":
            speed = ranking_speed(model, processor, test[: args.speed_users])
            item_ids = processor.item_ids
    item_ids = list(data["items"]["item_id"]) if speed is None else item_ids
    models.update(run_baselines(data, item_ids, validation, test, args.sasrec_epochs))

    output = args.output_dir / "benchmark.json"
    results = json.loads(output.read_text()) if output.exists() else {"datasets": {}}
    results["datasets"][args.dataset] = {
        "protocol": (f"leave-one-out by time; exact full ranking over {len(item_ids)} items; "
                     f"{len(test)} test users; no seen-item filtering; UniMP `{args.preset}` trained "
                     f"{args.max_steps} steps, checkpoint chosen on validation NDCG@10"),
        "models": models,
    }
    if speed is not None:
        results["speed"] = speed
    args.output_dir.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    (args.output_dir / "benchmark.md").write_text(markdown(results))
    plot(results, args.output_dir / "benchmark.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
