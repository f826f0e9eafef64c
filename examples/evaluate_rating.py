"""Score a saved UniMP's rating on a dataset's test rate_explain samples against the user-mean predictor.

The benchmark scores the other tasks on 300 test users; this scores as many as you ask (all by default), paired
with the user mean on the same samples (the mean of each sample's history ratings), with the bootstrap standard
error of the RMSE difference. Prints and writes JSON.

    python examples/evaluate_rating.py runs/benchmark/unimp-ratings --dataset fashion-shop [--users N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration
from processing_unimp.baselines.tasks import user_mean_ratings
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.evaluation.tasks import evaluate_rating
from processing_unimp.processing_unimp import UniMPProcessor
from processing_unimp.training.recipe import recent_history, select_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a saved UniMP folder (model + processor)")
    parser.add_argument("--dataset", default="fashion-shop", help="bundled name or a builder's output folder")
    parser.add_argument("--users", type=int, default=None, help="test samples scored (default: all)")
    parser.add_argument("--history-items", type=int, default=10,
                        help="latest history items per sample (the benchmark trains and scores with 10)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file (default: MODEL/rating_results.json)")
    args = parser.parse_args()

    model = UniMPForConditionalGeneration.from_pretrained(args.model)
    processor = UniMPProcessor.from_pretrained(args.model)
    data = load_unimp_dataset(args.dataset)
    samples = recent_history(select_tasks(data["tasks_test"], ["rate_explain"], args.users), args.history_items)
    rating = evaluate_rating(model, processor, samples, reference=user_mean_ratings(samples, data["train"]))
    results = {"dataset": args.dataset, "history_items": args.history_items, "rating": rating}
    (args.output or args.model / "rating_results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
