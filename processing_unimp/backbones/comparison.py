"""The measured comparison: UniMP composed from a pretrained LM against the from-scratch `small` preset, each trained
with the packed recipe for the same wall-clock budget, on where language matters (rating explanations: BLEU-4,
ROUGE-L, distinct-2; search with free-text queries: NDCG@10) and on what it costs (training tokens per second).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, set_seed

from ..data.files import atomic_write
from ..evaluation.metrics import text_metrics
from ..evaluation.tasks import evaluate_ranking, prompt_inputs
from ..training.recipe import DataArguments, ModelArguments, build_model, build_processor, recent_history, select_tasks
from ..training.trainer import UniMPTrainingArguments
from .recipe import BackboneArguments, composed_for_data, train_packed

SCRATCH_INIT = {"init_item_tokens_from": "title,categories", "item_init_image_weight": 1.0, "item_init_noise": 0.5}
"""The from-scratch arm's item-row start, as `examples/train.py` trains `small`."""


class WallClockBudget(TrainerCallback):
    """Stops training at the first step end after `seconds` of training."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of the texts (lower-cased words): 1 is all different, near 0 is one
    sentence repeated (the failure of a model that learnt the most common explanation)."""
    grams = [tuple(words[i : i + n]) for text in texts for words in [text.lower().split()]
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def generated_explanations(model, processor, samples: Sequence[Mapping[str, Any]], batch_size: int = 8,
                           max_new_tokens: int = 24) -> list[str]:
    """Greedy explanations (after the most likely rating) for rate_explain samples, in order."""
    model.eval()
    device = next(model.parameters()).device
    texts = []
    for start in range(0, len(samples), batch_size):
        inputs = prompt_inputs(processor, samples[start : start + batch_size], device)
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   suppress_tokens=[processor.end_of_chunk_token_id])
        texts += [processor.decode_explanation(row) for row in generated[:, inputs["input_ids"].shape[1]:].cpu()]
    return texts


def scratch_arm(data_args: DataArguments, data) -> tuple[Any, Any]:
    """`(processor, model)` of the from-scratch `small` preset, started as `examples/train.py` starts it."""
    model_args = ModelArguments(model_preset="small", **SCRATCH_INIT)
    processor = build_processor(model_args, data_args, data)
    model = build_model(model_args, processor, interactions=zip(data["train"]["user_id"], data["train"]["item_id"]))
    return processor, model


def score_arm(model, processor, data, data_args: DataArguments, test_samples: int, max_new_tokens: int):
    """Explanations (BLEU-4, ROUGE-L, distinct-2, examples) and search NDCG@10 on the first test samples."""
    model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    history = data_args.task_history_items
    explain = [s for s in recent_history(select_tasks(data["tasks_test"], ["rate_explain"]), history)
               if s["target"].get("explanation")][:test_samples]
    texts = generated_explanations(model, processor, explain, max_new_tokens=max_new_tokens)
    references = [s["target"]["explanation"] for s in explain]
    metrics = {**text_metrics(texts, references), "distinct-2": distinct_n(texts),
               "reference distinct-2": distinct_n(references), "examples": list(zip(texts, references))[:5]}
    search = recent_history(select_tasks(data["tasks_test"], ["search"], test_samples), history)
    return {"explanation": metrics, "search": evaluate_ranking(model, processor, search) if search else {}}


def compare(arms: Mapping[str, Callable[[], tuple[Any, Any]]], data, data_args: DataArguments,
            training_args: UniMPTrainingArguments, seconds: float, test_samples: int = 50,
            max_new_tokens: int = 24) -> dict[str, Any]:
    """Train each arm (a builder of `(processor, model)`) for `seconds` of wall clock, then score it."""
    results = {}
    for name, build in arms.items():
        set_seed(training_args.seed)
        processor, model = build()
        args = copy.deepcopy(training_args)
        args.output_dir = str(Path(training_args.output_dir) / name)
        args.include_num_input_tokens_seen = "non_padding"
        start = time.perf_counter()
        trainer = train_packed(model, processor, data, data_args, args, callbacks=[WallClockBudget(seconds)])
        elapsed = time.perf_counter() - start
        tokens = trainer.state.num_input_tokens_seen
        results[name] = {"train_seconds": elapsed, "steps": trainer.state.global_step, "tokens": tokens,
                         "tokens_per_second": tokens / max(elapsed, 1e-9),
                         "parameters": sum(p.numel() for p in trainer.model.parameters()),
                         **score_arm(trainer.model, processor, data, data_args, test_samples, max_new_tokens)}
    return results


ARMS = ("pretrained", "scratch")


def default_arms(backbones: BackboneArguments, data_args: DataArguments, data,
                 which: Sequence[str] = ARMS) -> dict[str, Callable]:
    """The pretrained composition (with `backbones`) and/or the from-scratch `small` preset (`which`: names in
    `ARMS`; one arm per process lets both train side by side under the same machine load)."""
    unknown = set(which) - set(ARMS)
    if unknown:
        raise ValueError(f"Unknown comparison arms {sorted(unknown)}; choose among {ARMS}.")
    label = "pretrained LM" + (f" + LoRA r{backbones.lora_rank}" if backbones.lora_rank else " (frozen)")
    arms = {"pretrained": (label, lambda: composed_for_data(backbones, data_args, data)),
            "scratch": ("small (from scratch)", lambda: scratch_arm(data_args, data))}
    return dict(arms[name] for name in ARMS if name in which)


def markdown(results: Mapping[str, Any]) -> str:
    """The comparison table (each arm with the command and thread count that produced it), and a few generated
    explanations."""
    lines = ["| model | train s | steps | tokens/s | BLEU-4 | ROUGE-L | distinct-2 | search NDCG@10 | threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        e = r["explanation"]
        lines.append(f"| {name} | {r['train_seconds']:.0f} | {r['steps']} | {r['tokens_per_second']:.0f} | "
                     f"{e['BLEU-4']:.4f} | {e['ROUGE-L']:.4f} | {e['distinct-2']:.3f} | "
                     f"{r['search'].get('NDCG@10', float('nan')):.4f} | {r['torch_threads']} |")
    lines += ["", *[f"{name}: `{r['command']}`" for name, r in results.items()]]
    for name, r in results.items():
        lines += ["", f"{name}, generated vs reference:"]
        lines += [f"- {generated!r} / {reference!r}" for generated, reference in r["explanation"]["examples"]]
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Bars of BLEU-4, ROUGE-L, distinct-2 and search NDCG@10 per arm, and training tokens/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["BLEU-4", "ROUGE-L", "distinct-2"]
    figure, (quality, speed) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(results)
    for index, (name, r) in enumerate(results.items()):
        values = [r["explanation"][m] for m in metrics] + [r["search"].get("NDCG@10", 0.0)]
        quality.bar([x + index * width for x in range(len(values))], values, width, label=name)
        speed.bar(index, r["tokens_per_second"], label=name)
    quality.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(metrics) + 1)],
                       [*metrics, "search NDCG@10"])
    quality.set_title("same wall-clock budget")
    quality.legend()
    speed.set_xticks(range(len(results)), [name.split(" ")[0] for name in results])
    speed.set_title("training tokens/s")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(results: Mapping[str, Any], output_dir: Path, command: str) -> dict[str, Any]:
    """Add `results` (arms run by `command`) to `output_dir`'s `comparison.json` (arms of other runs stay) and
    rewrite it atomically with `comparison.md` and `comparison.png`; returns every arm's results."""
    path = output_dir / "comparison.json"
    merged = json.loads(path.read_text())["results"] if path.is_file() else {}
    merged.update({name: {**r, "command": command, "torch_threads": torch.get_num_threads()}
                   for name, r in results.items()})
    atomic_write(path, json.dumps({"results": merged}, indent=2).encode())
    (output_dir / "comparison.md").write_text(markdown(merged))
    plot(merged, output_dir / "comparison.png")
    return merged
