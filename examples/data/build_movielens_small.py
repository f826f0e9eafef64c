"""Build the bundled `movielens-small` dataset from GroupLens ml-latest-small (real ratings, text-only items).

    python examples/data/build_movielens_small.py [SOURCE_DIR] [--output DIR]

SOURCE_DIR defaults to ../shared/data next to the repository (it must hold movielens-latest-small/ with
the official `ratings.csv` and `movies.csv`). The paper's k-core (users >= 8, items >= 5) and the
leave-one-out split apply, as for every builder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from processing_unimp.data.config import BuildConfig  # noqa: E402
from processing_unimp.data.sources import build_movielens  # noqa: E402

NOTICE = """movielens-small: derived from the MovieLens ml-latest-small dataset (October 2016 release:
100,004 ratings by 671 users on 9,066 movies), F. Maxwell Harper and Joseph A. Konstan, GroupLens Research,
University of Minnesota, https://grouplens.org/datasets/movielens/

Changes: the paper's iterative k-core filter (users >= 8, items >= 5), titles split from their release
year, genres as categories, leave-one-out splits and task samples added. Built by
examples/data/build_movielens_small.py.

GroupLens usage terms (summary; full text in the original README.txt of the dataset):
- research use only; no commercial use without permission from GroupLens;
- no endorsement by the University of Minnesota or GroupLens may be stated or implied;
- publications using the data must cite: F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens
  Datasets: History and Context. ACM Transactions on Interactive Intelligent Systems (TiiS) 5, 4,
  Article 19. https://doi.org/10.1145/2827872
- the data may be redistributed only under these same terms (this copy is).
The data is provided "as is", without warranty of any kind.
"""


def build(source: Path, output: Path | None, *, seed: int = 0):
    """Build (and save when `output` is given) the movielens-small DatasetDict."""
    config = BuildConfig(seed=seed, train_targets_per_user=3)
    return build_movielens(source / "movielens-latest-small", output_dir=output, config=config, name="movielens-small",
                           extra_files={"NOTICE": NOTICE})


def main(argv: list[str] | None = None) -> None:
    """Command line: build into examples/data/movielens-small by default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=REPO / "examples" / "data" / "movielens-small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build(args.source, args.output, seed=args.seed))
    print((args.output / "statistics.md").read_text())


if __name__ == "__main__":
    main()
