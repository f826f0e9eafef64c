"""Rank new items: the baselines under the new-item protocol (RecFormer's in-set/cold split).

    python examples/benchmark_new_items.py --dataset fashion-shop --new-items 0.1 --seed 0 --output-dir runs/new_items
    python examples/benchmark_new_items.py --dataset fashion-shop --new-items 0 --seed 0 --output-dir runs/new_items

Protocol (`processing_unimp.data.splits.NEW_ITEM_PROTOCOL`): a seeded fraction of the catalogue occurs in no
training or validation history, only as test targets; a second seeded fraction, among the items that are no user's
test target, occurs in no training history, only as validation targets, so that model selection (SASRec's early
stopping) sees new items without touching test. Everything else is the leave-one-out protocol of
`examples/benchmark.py`. Every row reports NDCG@10 (± standard error over users) and HR@10 on new-item targets, on
the other targets and on all; `--new-items 0` is the bundled split (nothing removed). Writes `new_items.json`
(merged row by row with an existing one; the protocol, seed and torch thread count in it), `new_items.md` and
`new_items.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from processing_unimp.benchmark.new_items import (
    new_item_markdown,
    new_item_plot,
    run_new_item_benchmark,
    run_unimp_new_items,
)
from processing_unimp.benchmark.report import merge_results, row_name
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.data.config import BuildConfig
from processing_unimp.data.splits import new_item_split
from processing_unimp.evaluation.protocol import LeaveOneOut, protocol_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--new-items", type=float, default=0.1, help="fraction of the catalogue new at test")
    parser.add_argument("--validation-new-items", type=float, default=None,
                        help="fraction of the catalogue new at validation (default: --new-items)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new items and the SASRecs")
    parser.add_argument("--models", default="",
                        help="comma-separated baseline rows to run (default: all; none: only --unimp-variants)")
    parser.add_argument("--id-dropout", type=float, default=0.5, help="content SASRec: chance of dropping an ID row")
    parser.add_argument("--sasrec-epochs", type=int, default=300, help="cap; the SASRecs stop early on validation")
    parser.add_argument("--keep-seen", action="store_true", help="rank the user's own earlier items too")
    parser.add_argument("--build-seed", type=int, default=0, help="the dataset's build seed (bundled: 0)")
    parser.add_argument("--train-targets-per-user", type=int, default=3,
                        help="the dataset's build setting (bundled: 3)")
    parser.add_argument("--unimp-variants", default="",
                        help="UniMP variants with content item rows to run too, e.g. unimp-content")
    parser.add_argument("--unimp-epochs", type=float, default=4, help="UniMP budget: epochs of the packed train data")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/new_items"))
    args = parser.parse_args()
    print(f"seed {args.seed}, torch threads {torch.get_num_threads()}")

    config = BuildConfig(seed=args.build_seed, train_targets_per_user=args.train_targets_per_user)
    split = new_item_split(load_unimp_dataset(args.dataset, materialize=False), config, args.new_items,
                           args.validation_new_items, args.seed)
    data = split.materialize()
    loo = LeaveOneOut.from_dataset(data)
    only = [name for name in args.models.split(",") if name]
    rows = {} if only == ["none"] else run_new_item_benchmark(data, loo, split.test_items, not args.keep_seen,
                                                              args.sasrec_epochs, args.seed, args.id_dropout, only)
    for variant in filter(None, args.unimp_variants.split(",")):
        rows[row_name(variant, args.seed)] = run_unimp_new_items(
            split, data, variant, args.output_dir, args.unimp_epochs, args.seed, not args.keep_seen)

    key = f"{args.dataset}, {args.new_items:.0%} new items, seed {args.seed}"
    results = merge_results(args.output_dir / "new_items.json", key, {
        "protocol": f"{protocol_text(loo.num_items, len(loo.test), not args.keep_seen)}; {split.protocol()}",
        "seed": args.seed, "torch_threads": torch.get_num_threads(), "id_dropout": args.id_dropout, "models": rows,
    })
    (args.output_dir / "new_items.md").write_text(new_item_markdown(results))
    new_item_plot(results, args.output_dir / "new_items.png")
    print(new_item_markdown(results))


if __name__ == "__main__":
    main()
