"""Benchmark UniMP against Popularity, ItemKNN, content and SASRec baselines under one protocol.

    python examples/benchmark.py --dataset movielens-small --baselines-only --output-dir runs/benchmark
    python examples/benchmark.py --dataset fashion-shop --variants unimp --epochs 7 --output-dir runs/benchmark
    python examples/benchmark.py --dataset fashion-shop --variants unimp-no-images --epochs 7 --seed 1 \
        --skip-baselines --output-dir runs/benchmark                          # one more row: a variant, a seed
    python examples/benchmark.py --dataset fashion-shop --export-recbole runs/recbole   # RecBole atomic files

Protocol (`processing_unimp.evaluation.protocol`): leave-one-out by time; every model gets each user's whole earlier
history and ranks the whole catalogue; items the user interacted with are excluded (`--keep-seen` keeps them),
the target never; ties count against the target, NaN ranks last; UniMP checkpoints and SASRec epochs are chosen
on all validation users; test is scored once. Writes `benchmark.json` (merged with an existing one row by row, so
variants can run separately with `--skip-baselines`; the protocol, seed and torch thread count in it),
`benchmark.md` and `benchmark.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from processing_unimp.benchmark.report import budget_text, markdown, merge_results, plot, row_name
from processing_unimp.benchmark.runs import VARIANTS, reference_rows, run_baselines, run_unimp
from processing_unimp.benchmark.speed import ranking_speed
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.data.recbole import export_recbole
from processing_unimp.evaluation.protocol import LeaveOneOut, protocol_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/benchmark"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"UniMP variants among {list(VARIANTS)}")
    parser.add_argument("--baselines-only", action="store_true", help="score the baselines only (no UniMP run)")
    parser.add_argument("--skip-baselines", action="store_true",
                        help="train and score the UniMP variants only; rows already in benchmark.json are kept")
    parser.add_argument("--keep-seen", action="store_true", help="rank the user's own earlier items too")
    parser.add_argument("--export-recbole", type=Path, metavar="DIR", help="write RecBole atomic files and stop")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=float, default=8, help="UniMP budget: epochs of the packed train data")
    parser.add_argument("--max-steps", type=int, default=-1, help="UniMP budget in optimiser steps (overrides)")
    parser.add_argument("--item-init-fields", default="title,categories",
                        help="item attributes whose text starts each UniMP item token's row")
    parser.add_argument("--eval-users", type=int, default=None, help="validation users per evaluation (all)")
    parser.add_argument("--test-users", type=int, default=None, help="UniMP test users (default: all)")
    parser.add_argument("--sasrec-epochs", type=int, default=300, help="cap; SASRec stops early on validation")
    parser.add_argument("--speed-users", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"seed {args.seed}, torch threads {torch.get_num_threads()}")

    data = load_unimp_dataset(args.dataset)
    if args.export_recbole:
        print(f"RecBole dataset written to {export_recbole(data, args.export_recbole, Path(args.dataset).name)}")
        return
    torch.manual_seed(args.seed)
    exclude_seen = not args.keep_seen
    split = LeaveOneOut.from_dataset(data)
    models, speed = {}, None
    variants = [] if args.baselines_only else [v for v in args.variants.split(",") if v]
    for variant in variants:
        metrics, model, processor, _ = run_unimp(args.dataset, variant, args.output_dir, args.preset, args.epochs,
                                                 args.eval_users, args.test_users,
                                                 exclude_seen=exclude_seen, max_steps=args.max_steps, seed=args.seed,
                                                 init_fields=args.item_init_fields)
        models[row_name(variant, args.seed)] = metrics
        if variant == "unimp":
            speed = ranking_speed(model, processor, split.samples("test")[: args.speed_users])
    if not args.skip_baselines:
        models.update(run_baselines(data, split, exclude_seen, args.sasrec_epochs, args.seed))
    models.update(reference_rows(args.dataset))

    block = {
        "protocol": protocol_text(split.num_items, len(split.test), exclude_seen)
        + (f"; UniMP `{args.preset}` trained {budget_text(args.epochs, args.max_steps)}" if variants else ""),
        "seed": args.seed, "torch_threads": torch.get_num_threads(), "models": models,
    }
    results = merge_results(args.output_dir / "benchmark.json", args.dataset, block, speed=speed)
    (args.output_dir / "benchmark.md").write_text(markdown(results))
    plot(results, args.output_dir / "benchmark.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
