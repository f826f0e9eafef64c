"""Benchmark results as tables and plots: row names (with their seed), markdown tables, the NDCG@10 plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..data.files import atomic_write

HEADLINE = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10")


def budget_text(epochs: float, max_steps: int) -> str:
    """A UniMP run's budget as the protocol line states it."""
    return f"{max_steps} steps" if max_steps > 0 else f"{epochs:g} epochs (packed recommend)"


def row_name(model: str, seed: int) -> str:
    """A seeded row's name in `benchmark.json` (a UniMP variant or a `SEEDED_BASELINES` one): with its seed unless 0."""
    return model if seed == 0 else f"{model} (seed {seed})"


def model_of(row: str) -> str:
    """The model a row name stands for: the name without its seed."""
    return row.split(" (seed ")[0]


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


OTHER_TASKS = {  # UniMP's metrics key -> (its trivial baseline's row, the metrics compared; lower is better?)
    "search": ("search: popularity in the query's category", ("HR@10", "NDCG@10"), False),
    "rating": ("rating: user mean", ("expected_RMSE", "expected_MAE"), True),
    "explanation": ("explanation: most common", ("BLEU-4", "ROUGE-L"), False),
    "selection": ("selection: random", ("F1",), False),
}


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
        lines += ["### Image generation (fashion-shop)", "",
                  "| method | FID-style distance | consistency | personalization |",
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
    rows, every variant and seed, orange; references grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    rows = max(len(results["datasets"][name]["models"]) for name in names)
    figure, axes = plt.subplots(1, len(names), figsize=(7 * len(names), 1.5 + 0.3 * rows), squeeze=False)
    for axis, name in zip(axes[0], names):
        models = results["datasets"][name]["models"]
        colours = ["tab:orange" if model_of(m).startswith("unimp") else "tab:grey" if m.startswith("reference")
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


def merge_results(path: Path, dataset: str, block: dict[str, Any], **top_level: Any) -> dict[str, Any]:
    """Put `block` as `dataset`'s entry of the results JSON at `path` (written atomically) and return the whole: its
    models join the entry's earlier ones, replacing their namesakes; other datasets stay, and `top_level` keys that
    are not None replace theirs."""
    results = json.loads(path.read_text()) if path.exists() else {"datasets": {}}
    earlier = results["datasets"].get(dataset, {}).get("models", {})
    results["datasets"][dataset] = {**block, "models": {**earlier, **block.get("models", {})}}
    results.update({key: value for key, value in top_level.items() if value is not None})
    atomic_write(path, json.dumps(results, indent=2).encode())
    return results
