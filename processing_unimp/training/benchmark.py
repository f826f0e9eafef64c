"""Benchmark runs behind `examples/benchmark.py` and the quickstart: UniMP variants, baselines, ranking speed, tables.

Not shipped to the Hub.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import torch

from ..data.builders import bundled_dataset_path
from ..ranking_unimp import token_scores
from .baselines import (
    ContentRecommender,
    ItemKNN,
    PopularityRecommender,
    SASRecConfig,
    SASRecRecommender,
    content_vectors,
)
from .evaluation import (
    answer_logits,
    evaluate_explanations,
    evaluate_ranking,
    evaluate_rating,
    evaluate_selection,
    prompt_inputs,
    ranking_ranks,
)
from .metrics import ranking_by_frequency, ranking_metrics
from .protocol import LeaveOneOut, evaluate_scorer, recommend_samples, scorer_ranks
from .recipe import DataArguments, ModelArguments, recent_history, run_training, select_tasks
from .task_baselines import task_baselines, user_mean_ratings
from .trainer import UniMPTrainingArguments

# The base run (`unimp_arguments`) is the packed next-item recipe: every train interaction a target once per epoch,
# compact chunks (`<answer> <item_k> <image>? <|endofchunk|>`: the item's text enters through its token's
# content-started row, not as words, so an epoch costs ~4 tokens per interaction), item rows started from title
# (+ image features, + noise that separates items with equal titles). Each variant overrides it:
# (model/data argument overrides, training argument overrides).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "unimp": ({}, {}),
    # the recipe before length-grouped batches (and the order every ablation row up to it was measured with)
    "unimp-random-order": ({}, {"train_sampling_strategy": "random"}),
    "unimp-no-images": ({"use_images": False}, {}),
    # item rows computed from content (text words + frozen vision features + a dropped residual)
    "unimp-content": ({"item_rows": "content", "freeze_vision_tower": True}, {}),
    "unimp-content-residual-0.2": ({"item_rows": "content", "freeze_vision_tower": True, "item_residual_dropout": 0.2}, {}),
    "unimp-content-no-images": ({"item_rows": "content", "freeze_vision_tower": True, "use_images": False}, {}),
    "unimp-frozen-vision": ({"freeze_vision_tower": True}, {}),
    "unimp-id-only": ({"use_images": False, "init_item_tokens_from": "", "item_init_image_weight": 0.0,
                       "item_init_noise": 0.0}, {}),
    "unimp-title-chunks": ({"item_fields": "title"}, {}),
    "unimp-gamma0": ({}, {"gamma": 0.0}),
    # SASRec's regulariser at RecBole's rate: half of every input-embedding entry dropped while training
    "unimp-dropout": ({"embedding_dropout": 0.5}, {}),
    # SASRec's whole dropout set: embeddings, every layer's residual update and the attention probabilities
    "unimp-sasrec-dropout": ({"embedding_dropout": 0.5, "hidden_dropout": 0.5, "attention_dropout": 0.5}, {}),
    "unimp-layer-dropout": ({"hidden_dropout": 0.1, "attention_dropout": 0.1}, {}),
    # item rows also started from the train interactions (a truncated SVD of the user x item matrix)
    "unimp-collaborative": ({"item_init_interaction_weight": 1.0}, {}),
    # the same from a rank-64 or rank-32 SVD: the co-consumption structure without the noise of the smallest factors
    "unimp-collaborative-64": ({"item_init_interaction_weight": 1.0, "item_init_interaction_rank": 64}, {}),
    "unimp-collaborative-32": ({"item_init_interaction_weight": 1.0, "item_init_interaction_rank": 32}, {}),
    # the paper's context reconstruction (identify each history item from its content) as a second objective: every
    # sequence also in the "after" layout, so an epoch costs twice the steps
    "unimp-identification": ({"identification": True}, {}),
    # multi-task: 1,000 samples of the other ranking tasks (10 history items each) beside the packed recommend data
    "unimp-multitask": ({"tasks": "recommend,search,rate_explain,select", "max_train_samples": 1000}, {}),
    # rating: every train interaction also a rating target (packed rating sequences, ratings only), plus 1,000
    # rate_explain samples (10 history items each) that teach the explanation after the rating
    "unimp-ratings": ({"tasks": "recommend,rate_explain", "packed_ratings": "ratings", "max_train_samples": 1000}, {}),
    # the image-generation benchmark's training without generate_image (same steps: 3,000 search samples instead of
    # its 1,500 search and 1,500 generate_image ones; 4 history items each; vision tower frozen)
    "unimp-search": ({"tasks": "recommend,search", "max_train_samples": 3000, "task_history_items": 4,
                      "freeze_vision_tower": True}, {}),
}
OTHER_TASKS = {  # UniMP's metrics key -> (its trivial baseline's row, the metrics compared; lower is better?)
    "search": ("search: popularity in the query's category", ("HR@10", "NDCG@10"), False),
    "rating": ("rating: user mean", ("expected_RMSE", "expected_MAE"), True),
    "explanation": ("explanation: most common", ("BLEU-4", "ROUGE-L"), False),
    "selection": ("selection: random", ("F1",), False),
}
HEADLINE = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10")


SEEDED_BASELINES = ("sasrec",)  # the baselines whose fit depends on the seed (the others are deterministic)


def baseline_models(data, split: LeaveOneOut, sasrec_epochs: int = 300, seed: int = 0) -> dict[str, Any]:
    """The baselines of the benchmark, unfitted, for `split`'s catalogue: content rows only where the items have
    the content (fashion-shop: text, images, both; movielens-small: text)."""
    items = data["items"]
    position = {item_id: row for row, item_id in enumerate(items["item_id"])}
    items = items.select([position[item_id] for item_id in split.item_ids])  # rows in the split's item order
    has_images = "image" in items.column_names and any(image is not None for image in items["image"])
    content = {"content-text": ("text",)}
    if has_images:
        content.update({"content-image": ("image",), "content": ("text", "image")})
    models: dict[str, Any] = {"popularity": PopularityRecommender(split.num_items), "itemknn": ItemKNN(split.num_items)}
    models.update({name: ContentRecommender(content_vectors(items, fields)) for name, fields in content.items()})
    models["sasrec"] = SASRecRecommender(SASRecConfig(num_items=split.num_items, max_epochs=sasrec_epochs, seed=seed))
    return models


def target_train_counts(data, samples) -> list[int]:
    """How often each sample's target item occurs in the train interactions (0 for an item never trained on)."""
    counts = Counter(data["train"]["item_id"])
    return [counts[sample["target"]["item_id"]] for sample in samples]


def run_baselines(data, split: LeaveOneOut, exclude_seen: bool = True, sasrec_epochs: int = 300,
                  seed: int = 0) -> dict[str, dict]:
    """Fit every baseline on the train split (SASRec early-stopped on all validation users) and score it once on
    test under the protocol; each row carries its train seconds (SASRec: epochs and seconds per epoch too) and its
    test NDCG@10 by the target item's train frequency. Rows of `SEEDED_BASELINES` are named with `seed`."""
    rows = {}
    train = list(split.train.values())
    counts = target_train_counts(data, split.samples("test"))
    for name, model in baseline_models(data, split, sasrec_epochs, seed).items():
        start = time.perf_counter()
        if isinstance(model, SASRecRecommender):
            model.fit(train, validation=lambda m: evaluate_scorer(m, split, "validation", exclude_seen)["NDCG@10"])
        else:
            model.fit(train)
        seconds = time.perf_counter() - start
        ranks = scorer_ranks(model, split, "test", exclude_seen)
        row = rows[row_name(name, seed) if name in SEEDED_BASELINES else name] = {
            **ranking_metrics(ranks), "train_seconds": seconds, "by_target_frequency": ranking_by_frequency(ranks, counts)}
        if isinstance(model, SASRecRecommender):
            best = max(model.history, key=lambda r: r["validation"])
            row.update({"epochs": len(model.history), "best_epoch": best["epoch"],
                        "validation_NDCG@10": best["validation"],
                        "seconds_per_epoch": sum(r["seconds"] for r in model.history) / len(model.history)})
    return rows


def reference_rows(dataset: str, split: str = "test") -> dict[str, dict]:
    """Reference rows shipped with a bundled dataset (`reference_rows.json`, e.g. fashion-shop's oracle, which reads
    the generator's hidden taste and is no model), each labelled "reference: ..."; none when the dataset has none."""
    folder = Path(dataset) if Path(dataset).is_dir() else bundled_dataset_path(dataset)
    path = folder / "reference_rows.json"
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["splits"][split]
    return {f"reference: {row['label']}": {k: v for k, v in row.items() if k != "label"} for row in rows}


def unimp_arguments(dataset: str, variant: str, output_dir: Path, preset: str, epochs: float, eval_users: int | None,
                    max_steps: int = -1, seed: int = 0, init_fields: str = "title,categories", **overrides):
    """The three argument dataclasses of `examples/train.py` for one variant (`overrides`, model or data arguments,
    apply first, then the variant's).

    The budget is `epochs` of the packed training data, evaluated (validation ranking) after each epoch, or
    `max_steps` optimiser steps (evaluated three times) when positive. `init_fields`: the item attributes whose
    text starts each item token's row.
    """
    data_model, training = VARIANTS[variant]
    model_args = ModelArguments(model_preset=preset, init_item_tokens_from=init_fields, item_init_image_weight=1.0,
                                item_init_noise=0.5)
    data_args = DataArguments(dataset=dataset, max_eval_users=eval_users, packed=True, tasks="recommend",
                              item_fields="", max_history_items=50)
    for key, value in {**overrides, **data_model}.items():
        target = next((args for args in (model_args, data_args) if hasattr(args, key)), None)
        if target is None:
            raise ValueError(f"UniMP override {key!r} is neither a ModelArguments nor a DataArguments field.")
        setattr(target, key, value)
    # length-sorted batches pad less (movielens-small: 1.01x the real tokens against 1.77x at random) but are
    # single-task batches, so runs that mix in other tasks keep the random order (README, "Training recipe")
    sampling = "group_by_length" if data_args.tasks == "recommend" else "random"
    schedule = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if max_steps > 0:
        every = max(max_steps // 3, 1)
        schedule = {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every}
    training_args = UniMPTrainingArguments(
        output_dir=str(output_dir / variant), num_train_epochs=epochs, max_steps=max_steps, learning_rate=1e-3,
        lr_scheduler_type="cosine", warmup_steps=0.02, per_device_train_batch_size=8, per_device_eval_batch_size=32,
        save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="NDCG@10", greater_is_better=True,
        logging_steps=50, report_to="none", prediction_loss_only=True, disable_tqdm=False, seed=seed,
        **{"train_sampling_strategy": sampling, **schedule, **training},
    )
    return model_args, data_args, training_args


def run_unimp(dataset: str, variant: str, output_dir: Path, preset: str, epochs: float, eval_users: int | None,
              test_users: int | None, task_users: int | None = 300, exclude_seen: bool = True,
              max_steps: int = -1, seed: int = 0, init_fields: str = "title,categories", **overrides):
    """Train one UniMP variant and score it on the test split; returns (metrics, model, processor, data)."""
    args = unimp_arguments(dataset, variant, output_dir, preset, epochs, eval_users, max_steps, seed, init_fields,
                           **overrides)
    start = time.perf_counter()
    trainer, processor, data = run_training(*args)
    seconds = time.perf_counter() - start
    model = trainer.model
    test = recommend_samples(data, processor.item_ids, "test", test_users)
    state = trainer.state
    best = max((r for r in state.log_history if "eval_NDCG@10" in r), key=lambda r: r["eval_NDCG@10"], default={})
    ranks = ranking_ranks(model, processor, test, exclude_seen=exclude_seen)
    metrics = {**ranking_metrics(ranks), "train_seconds": seconds,
               "train_steps": state.global_step, "epochs": state.epoch, "best_epoch": best.get("epoch"),
               "validation_NDCG@10": best.get("eval_NDCG@10"), "seed": args[2].seed,
               "item_init_fields": args[0].init_item_tokens_from,
               "torch_threads": torch.get_num_threads(),
               "by_target_frequency": ranking_by_frequency(ranks, target_train_counts(data, test))}
    available = set(data["tasks_test"]["task"])
    trained = set(args[1].tasks.split(","))
    # the other trained tasks (none for recommend-only runs) on the first `task_users` test users each
    history = args[1].task_history_items if args[1].packed else None  # as they were trained
    samples = {task: recent_history(select_tasks(data["tasks_test"], [task], task_users), history)
               for task in ("search", "rate_explain", "select") if task in available and task in trained}
    if "search" in samples:
        metrics["search"] = evaluate_ranking(model, processor, samples["search"])
    if "rate_explain" in samples:
        metrics["rating"] = evaluate_rating(model, processor, samples["rate_explain"],
                                            reference=user_mean_ratings(samples["rate_explain"], data["train"]))
        if any(s["target"].get("explanation") for s in samples["rate_explain"]):
            metrics["explanation"] = evaluate_explanations(model, processor, samples["rate_explain"][:50])
    if "select" in samples:
        metrics["selection"] = evaluate_selection(model, processor, samples["select"])
    if samples:  # the floors each task must beat, on the same samples (explanations: the same 50)
        floors = task_baselines(data, samples, seed)
        if "explanation" in metrics:
            explanation = "explanation: most common"
            floors[explanation] = task_baselines(data, {"rate_explain": samples["rate_explain"][:50]})[explanation]
        metrics["task_baselines"] = floors
    return metrics, model, processor, data


class PeakMemory:
    """Peak resident memory of this process while the block runs, above its level at entry (MiB)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (self.peak - self.start) / 2**20


@torch.no_grad()
def ranking_speed(model, processor, samples, batch_size: int = 8) -> dict[str, float]:
    """Exact full-ranking top-10 vs the original's 10-beam search (string-matched to items), on the same model."""
    model.eval()
    token_to_item = {token: item for item, token in zip(processor.item_ids, processor.item_token_ids)}
    full, beam = [], []
    timings = {}
    for method in ("full_rank", "beam10"):
        start = time.perf_counter()
        with PeakMemory() as memory:
            for begin in range(0, len(samples), batch_size):
                inputs = prompt_inputs(processor, samples[begin : begin + batch_size], model.device)
                if method == "full_rank":
                    logits = token_scores(answer_logits(model, inputs), processor.item_token_ids)
                    full += [[processor.item_ids[i] for i in row] for row in logits.topk(10).indices.tolist()]
                else:
                    out = model.generate(**inputs, num_beams=10, num_return_sequences=10, max_new_tokens=2,
                                         do_sample=False, suppress_tokens=[processor.end_of_chunk_token_id])
                    first = out[:, inputs["input_ids"].shape[1]].view(-1, 10).tolist()
                    # The original decoded each beam to text and kept those naming a catalogue item.
                    beam += [list(dict.fromkeys(token_to_item[t] for t in row if t in token_to_item)) for row in first]
        timings[method] = (time.perf_counter() - start, memory.mib)
    targets = [s["target"]["item_id"] for s in samples]

    def hit(lists) -> float:
        return sum(t in top for t, top in zip(targets, lists)) / len(targets)

    return {
        "num_users": len(samples),
        "full_rank_users_per_s": len(samples) / timings["full_rank"][0],
        "beam10_users_per_s": len(samples) / timings["beam10"][0],
        "speedup": timings["beam10"][0] / timings["full_rank"][0],
        "top10_agreement": sum(len(set(a) & set(b)) for a, b in zip(full, beam)) / (10 * len(samples)),
        "full_rank_HR@10": hit(full),
        "beam10_HR@10": hit(beam),
        "beam10_valid_items_per_user": sum(map(len, beam)) / len(samples),
        "full_rank_peak_rss_mib": timings["full_rank"][1],
        "beam10_peak_rss_mib": timings["beam10"][1],
    }


def budget_text(epochs: float, max_steps: int) -> str:
    """A UniMP run's budget as the protocol line states it."""
    return f"{max_steps} steps" if max_steps > 0 else f"{epochs:g} epochs (packed recommend)"


def row_name(model: str, seed: int) -> str:
    """A seeded row's name in `benchmark.json` (a UniMP variant or a `SEEDED_BASELINES` one): with its seed unless 0."""
    return model if seed == 0 else f"{model} (seed {seed})"


def model_of(row: str) -> str:
    """The model a row name stands for: the name without its seed."""
    return row.split(" (seed ")[0]


def variant_of(row: str) -> str | None:
    """The UniMP variant a row name (`row_name`) stands for, or None for a baseline or reference row."""
    return model_of(row) if model_of(row) in VARIANTS else None


def seed_summary(models: dict[str, dict], metric: str = "NDCG@10") -> dict[str, tuple[float, float, int]]:
    """`model -> (mean, sample std, runs)` of `metric` over the seeds of every model (UniMP variant or seeded
    baseline) run with several seeds."""
    runs: dict[str, list[float]] = {}
    for name, metrics in models.items():
        if metric in metrics:
            runs.setdefault(model_of(name), []).append(metrics[metric])
    summary = {}
    for variant, values in runs.items():
        if len(values) > 1:
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            summary[variant] = (mean, std, len(values))
    return summary


def _other_tasks_table(models: dict[str, dict]) -> list[str]:
    """Markdown rows of each UniMP run's other-task metrics beside their trivial baselines (test split)."""
    lines = []
    for name, metrics in models.items():
        floors = metrics.get("task_baselines", {})
        for key, (baseline, measures, lower) in OTHER_TASKS.items():
            if key not in metrics or baseline not in floors:
                continue
            for measure in measures:
                ours, floor = metrics[key][measure], floors[baseline][measure]
                better = ours < floor if lower else ours > floor
                lines.append(f"| {name} | {key} {measure} | {ours:.4f} | {baseline}: {floor:.4f} | "
                             f"{'yes' if better else 'no'} |")
    header = ["| UniMP run | task, metric | UniMP | trivial baseline | UniMP better |", "|---|---|---|---|---|"]
    return header + lines + [""] if lines else []


def _frequency_table(models: dict[str, dict]) -> list[str]:
    """Test NDCG@10 of each row by the target item's train interactions (rows that carry `by_target_frequency`)."""
    rows = {name: m["by_target_frequency"] for name, m in models.items() if m.get("by_target_frequency")}
    if not rows:
        return []
    buckets = list(dict.fromkeys(b for r in rows.values() for b in r))
    users = {b: next(r[b]["users"] for r in rows.values() if b in r) for b in buckets}
    lines = ["Test NDCG@10 (± s.e.) by the target item's train interactions (users per bucket in brackets):", "",
             "| model | " + " | ".join(f"{b} ({users[b]})" for b in buckets) + " |", "|---|" + "---|" * len(buckets)]
    for name, row in rows.items():
        cells = [f"{row[b]['NDCG@10']:.4f} ± {row[b]['NDCG@10_se']:.4f}" if b in row else "–" for b in buckets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(results: dict) -> str:
    lines = []
    for name, block in results["datasets"].items():
        lines += [f"### {name}", "", block["protocol"], "", "| model | " + " | ".join(HEADLINE) + " | NDCG@10 s.e. | "
                  "train s |", "|---|" + "---|" * (len(HEADLINE) + 2)]
        for model, metrics in block["models"].items():
            cells = [f"{metrics[k]:.4f}" if k in metrics else "–" for k in (*HEADLINE, "NDCG@10_se")]
            seconds = f"{metrics['train_seconds']:.0f}" if "train_seconds" in metrics else "–"
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {seconds} |")
        lines.append("")
        lines += _frequency_table(block["models"])
        lines += _other_tasks_table(block["models"])
        summary = seed_summary(block["models"])
        if summary:
            lines += ["| model | test NDCG@10, mean ± std over seeds | seeds |", "|---|---|---|",
                      *[f"| {v} | {m:.4f} ± {sd:.4f} | {n} |" for v, (m, sd, n) in summary.items()], ""]
    if "image_generation" in results:
        lines += ["### Image generation (fashion-shop)", "", "| method | FID-style distance | consistency | personalization |",
                  "|---|---|---|---|",
                  *[f"| {m} | {v['fid']:.1f} | {v['consistency']:.3f} | {v['personalization']:.3f} |"
                    for m, v in results["image_generation"].items()], ""]
    if "speed" in results:
        speed = results["speed"]
        lines += ["### Full ranking vs 10-beam search", "", "| measure | value |", "|---|---|",
                  *[f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in speed.items()], ""]
    if "stage_seconds" in results:
        stages = results["stage_seconds"]
        lines += ["### Where the time went", "", "| stage | wall seconds |", "|---|---:|",
                  *[f"| {name} | {seconds:.0f} |" for name, seconds in stages.items()],
                  f"| total | {sum(stages.values()):.0f} |", ""]
    return "\n".join(lines)


def short_labels(names: list[str], width: int = 40) -> list[str]:
    """Plot labels of at most `width` characters that keep each name's start and end (where a seed suffix sits)."""
    head = (width - 1) * 3 // 5
    return [name if len(name) <= width else name[:head] + "…" + name[len(name) - (width - 1 - head):]
            for name in names]


def plot(results: dict, path: Path) -> None:
    """Test NDCG@10 of every row, one panel per dataset, with the standard error over users as error bars (UniMP
    rows orange, references grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    rows = max(len(results["datasets"][name]["models"]) for name in names)
    figure, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 1.5 + 0.3 * rows), squeeze=False)
    for axis, name in zip(axes[0], names):
        models = results["datasets"][name]["models"]
        colours = ["tab:orange" if variant_of(m) else "tab:grey" if m.startswith("reference")
                   else "tab:blue" for m in models]
        # one bar per row by position: labels as categories would stack rows whose short labels coincide
        axis.barh(range(len(models)), [m["NDCG@10"] for m in models.values()],
                  xerr=[m.get("NDCG@10_se", 0) for m in models.values()], color=colours)
        axis.set_yticks(range(len(models)), short_labels(list(models)))
        axis.set_title(name)
        axis.set_xlabel("test NDCG@10 (exact full ranking; bars: s.e. over users)")
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
