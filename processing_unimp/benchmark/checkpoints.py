"""The shipped checkpoints: `small` UniMP trained on each bundled dataset with its best measured recipe plus samples
of every other task it has data for, exported as self-contained Hub folders (`examples/checkpoints/`).

The quickstart evaluates them instead of training; `examples/train_checkpoints.py` remakes them, and a test checks
that a checkpoint still ranks its first test users as recorded when it was made.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modeling_unimp import UniMPForConditionalGeneration

from ..data.builders import load_unimp_dataset
from ..evaluation.metrics import ranking_metrics
from ..evaluation.protocol import recommend_samples
from ..evaluation.tasks import ranking_ranks
from ..export.hub import export
from ..processing_unimp import UniMPProcessor
from ..training.image_tokenizer import TOKENIZER_EPOCHS, train_image_tokenizer
from ..training.recipe import DataArguments
from .report import merge_results
from .runs import evaluate_unimp, run_unimp

RESULTS_FILE = "results.json"
CHECK_USERS = 100  # test users whose NDCG@10 the checkpoint test recomputes
TASK_SAMPLES = 1000  # samples of each non-recommend task added to the packed recommend data
# dataset -> (benchmark variant, epochs, overrides): the best measured recommend recipe of each bundled dataset
CHECKPOINT_RECIPES: dict[str, tuple[str, float, dict[str, Any]]] = {
    "fashion-shop": ("unimp", 3, {"tasks": "recommend,search,rate_explain,select,generate_image",
                                  "packed_ratings": "ratings", "max_train_samples": TASK_SAMPLES}),
    "movielens-small": ("unimp-collaborative-32", 8, {"tasks": "recommend,search,rate_explain,select",
                                                      "max_train_samples": TASK_SAMPLES}),
}


def checkpoint_name(dataset: str) -> str:
    return f"unimp-small-{dataset}"


def train_checkpoint(dataset: str, output_dir: Path, work_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Train `dataset`'s checkpoint recipe (fashion-shop: a VQ image tokenizer first), score it on test, and export
    it atomically to `output_dir/unimp-small-<dataset>` carded with its figures; returns its results block."""
    variant, epochs, overrides = CHECKPOINT_RECIPES[dataset]
    overrides = dict(overrides)
    if "generate_image" in overrides["tasks"]:
        overrides["image_tokenizer"] = str(work_dir / dataset / "image_tokenizer")
        train_image_tokenizer(load_unimp_dataset(dataset)["items"], overrides["image_tokenizer"])
    start = time.perf_counter()
    metrics, model, processor, data = run_unimp(dataset, variant, work_dir / dataset, "small", epochs, None, None,
                                                seed=seed, **overrides)
    recipe = {"variant": variant, "epochs": epochs, "seed": seed, **overrides}
    if "image_tokenizer" in recipe:
        recipe["image_tokenizer"] = f"VQ, {TOKENIZER_EPOCHS} epochs on the item images"  # not a local path
    block = {"recipe": recipe,
             "seconds": time.perf_counter() - start, "models": {"unimp": metrics},
             "check": check_figures(model, processor, data)}
    export(work_dir / dataset / variant, output_dir / checkpoint_name(dataset), overwrite=True,
           name=checkpoint_name(dataset), dataset=dataset,
           results=_card_results(work_dir / dataset / RESULTS_FILE, dataset, block))
    merge_results(output_dir / RESULTS_FILE, dataset, block)  # after the export: it never names a missing folder
    return block


def refresh_checkpoint(dataset: str, output_dir: Path) -> Path:
    """Re-export `dataset`'s checkpoint from itself, carded as recorded: its code files become the packages' current
    shipped files (no retraining; what to run after changing a shipped file)."""
    folder = output_dir / checkpoint_name(dataset)
    block = recorded_results(output_dir, dataset)
    with tempfile.TemporaryDirectory() as scratch:
        results = _card_results(Path(scratch) / RESULTS_FILE, dataset, block)
        return export(folder, folder, results=results, overwrite=True, name=checkpoint_name(dataset), dataset=dataset)


def check_figures(model, processor, data, users: int = CHECK_USERS) -> dict[str, Any]:
    """NDCG@10 and HR@10 on the first `users` test users: what the checkpoint test recomputes."""
    ranks = ranking_ranks(model, processor, recommend_samples(data, processor.item_ids, "test", users))
    return {"users": users, **{k: ranking_metrics(ranks)[k] for k in ("NDCG@10", "HR@10")}}


def load_checkpoint(folder: Path) -> tuple[UniMPForConditionalGeneration, UniMPProcessor]:
    """A shipped checkpoint's model (eval mode, float32) and processor, with the installed packages."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is no UniMP checkpoint; `python examples/train_checkpoints.py` makes it.")
    model = UniMPForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, UniMPProcessor.from_pretrained(folder)


def evaluate_checkpoint(dataset: str, folder: Path, test_users: int | None = None, task_users: int | None = 300):
    """The quickstart's scoring of a shipped checkpoint: `evaluate_unimp` on `dataset`'s test split for the tasks
    it was trained on; returns (metrics, model, processor, data)."""
    model, processor = load_checkpoint(folder)
    data = load_unimp_dataset(dataset)
    tasks = CHECKPOINT_RECIPES[dataset][2]["tasks"].split(",")
    metrics = evaluate_unimp(model, processor, data, tasks, DataArguments.task_history_items, test_users, task_users)
    return {**metrics, "checkpoint": str(folder), "recipe": recorded_results(folder.parent, dataset).get("recipe")}, \
        model, processor, data


def recorded_results(checkpoints: Path, dataset: str) -> dict[str, Any]:
    """What `train_checkpoint` recorded for `dataset`'s checkpoint (recipe, seconds, test metrics, check figures)."""
    path = checkpoints / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; `python examples/train_checkpoints.py` writes it.")
    return json.loads(path.read_text())["datasets"][dataset]


def _card_results(path: Path, dataset: str, block: dict[str, Any]) -> Path:
    """The results file the checkpoint's model card reports (this dataset's block alone)."""
    path.write_text(json.dumps({"datasets": {dataset: block}}, indent=2))
    return path
