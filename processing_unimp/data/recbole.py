"""Export a leave-one-out UniMP dataset as RecBole atomic files, so that any RecBole model runs on the same split.

RecBole's leave-one-out (`eval_args: {split: {LS: valid_and_test}, order: TO, group_by: user}`) sorts each user's
interactions by time and takes the last as test and the second last as validation. The export writes a surrogate
timestamp, the global rank of (timestamp, position among the user's interactions at that timestamp): chronological
across users, strictly increasing within a user in the project's order, exact as RecBole's float32.
"""

from __future__ import annotations

import os
from pathlib import Path

from .files import atomic_directory

RECBOLE_CONFIG = """\
# RecBole 1.2.1: the UniMP protocol on `{name}` (leave-one-out by time, full ranking, no filtering).
# Model settings are RecBole's defaults; README "Benchmark" shows how to run a model on it.
data_path: {data_path}
dataset: {name}
load_col:
  inter: [user_id, item_id, timestamp]
USER_ID_FIELD: user_id
ITEM_ID_FIELD: item_id
TIME_FIELD: timestamp
user_inter_num_interval: "[0,inf)"
item_inter_num_interval: "[0,inf)"
eval_args:
  split: {{LS: valid_and_test}}
  order: TO
  group_by: user
  mode: full
metrics: [Hit, NDCG, MRR]
topk: [5, 10, 20]
valid_metric: NDCG@10
MAX_ITEM_LIST_LENGTH: 50
train_neg_sample_args: ~
# RecBole 1.2.1 runs sequential models only with `repeatable: True`; their full-sort evaluation then does not mask
# the user's seen items, which this project's protocol excludes: compare with `--keep-seen`, or mask them yourself.
repeatable: True
"""


def export_recbole(data, output_dir: str | os.PathLike, name: str) -> Path:
    """Write `output_dir/name/name.inter` and `output_dir/name.yaml` from a UniMP DatasetDict's `interactions`.

    The interactions table is in the project's order (by user, then time, ties in source order), whose last two
    rows per user are the test and validation targets; the written order makes RecBole pick the same two.
    """
    interactions = data["interactions"]
    users, items, times = interactions["user_id"], interactions["item_id"], interactions["timestamp"]
    ties, previous = [], None
    for user, time in zip(users, times):
        ties.append(ties[-1] + 1 if previous == (user, time) else 0)
        previous = (user, time)
    order = sorted(range(len(users)), key=lambda row: (times[row], ties[row], row))
    surrogate = [0] * len(users)
    for rank, row in enumerate(order, start=1):
        surrogate[row] = rank
    if len(users) >= 2**24:
        raise ValueError(f"{len(users)} interactions: too many for exact float32 surrogate timestamps.")
    for field, values in (("user_id", users), ("item_id", items)):
        bad = next((v for v in values if any(c.isspace() for c in v)), None)
        if bad is not None:
            raise ValueError(f"Field `{field}` value {bad!r} holds white space, which RecBole's token reader splits.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_directory(output_dir / name) as staging:
        lines = ["user_id:token\titem_id:token\ttimestamp:float"]
        lines += [f"{u}\t{i}\t{t}" for u, i, t in zip(users, items, surrogate)]
        (staging / f"{name}.inter").write_text("\n".join(lines) + "\n")
    (output_dir / f"{name}.yaml").write_text(RECBOLE_CONFIG.format(name=name, data_path=output_dir.resolve()))
    return output_dir / name


__all__ = ["RECBOLE_CONFIG", "export_recbole"]
