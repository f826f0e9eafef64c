"""Remake the shipped checkpoints that the quickstart evaluates and the README's first contact loads.

    python examples/train_checkpoints.py                      # both bundled datasets into examples/checkpoints/
    python examples/train_checkpoints.py --datasets movielens-small --output-dir runs/checkpoints
    python examples/train_checkpoints.py --refresh-code      # after changing a shipped file: re-export, no training

Each is the `small` UniMP trained with its dataset's best measured recommend recipe plus 1,000 samples of every other
task the dataset has (`processing_unimp.benchmark.checkpoints.CHECKPOINT_RECIPES`), model selection on all validation
users, scored once on test, and exported as a self-contained Hub folder carded with its figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from processing_unimp.benchmark.checkpoints import CHECKPOINT_RECIPES, refresh_checkpoint, train_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(CHECKPOINT_RECIPES), help="comma-separated bundled datasets")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/checkpoints"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/checkpoints"), help="training folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refresh-code", action="store_true",
                        help="re-export the existing checkpoints with the packages' current shipped code files")
    args = parser.parse_args()
    for dataset in args.datasets.split(","):
        if args.refresh_code:
            print(refresh_checkpoint(dataset, args.output_dir))
            continue
        block = train_checkpoint(dataset, args.output_dir, args.work_dir, args.seed)
        print(dataset, json.dumps({k: block[k] for k in ("recipe", "seconds", "check")}, indent=2))


if __name__ == "__main__":
    main()
