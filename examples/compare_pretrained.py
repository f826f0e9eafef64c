"""Pretrained LM vs from scratch at the same wall-clock budget: rating explanations (BLEU-4, ROUGE-L, distinct-2),
search NDCG@10, and training tokens/s. Writes comparison.json, comparison.md and comparison.png.

    python examples/compare_pretrained.py --budget-seconds 1800 --output-dir runs/compare       # ~1 h on 2 cores
    python examples/compare_pretrained.py --budget-seconds 20 --test-samples 8 --output-dir runs/compare-smoke

Both arms train the packed recipe on the same data settings: UniMP composed from SmolLM2-135M-Instruct (frozen, or
LoRA with --lora-rank) and the from-scratch `small` preset. A constant learning rate, so that stopping on the clock
cuts no schedule short.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from processing_unimp.backbones import BackboneArguments
from processing_unimp.backbones.comparison import ARMS, compare, default_arms, write_report
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.training.recipe import DataArguments
from processing_unimp.training.trainer import UniMPTrainingArguments


@dataclass
class ComparisonArguments:
    budget_seconds: float = field(default=1800, metadata={"help": "Training wall clock per arm."})
    test_samples: int = field(default=50, metadata={"help": "Test rate_explain and search samples scored."})
    max_new_tokens: int = field(default=24, metadata={"help": "Explanation length cap."})
    arms: str = field(default=",".join(ARMS), metadata={
        "help": "Comma-separated arms to train here; run one per process to train them side by side under the same "
                "load (both write into --output-dir)."})


def main() -> None:
    parser = HfArgumentParser((ComparisonArguments, BackboneArguments, DataArguments, UniMPTrainingArguments))
    parser.set_defaults(
        packed=True, item_fields="", max_history_items=20, max_length=128, task_history_items=4,
        tasks="recommend,search,rate_explain", output_dir="runs/compare", learning_rate=1e-3,
        per_device_train_batch_size=4, max_steps=1_000_000, lr_scheduler_type="constant", eval_strategy="no",
        save_strategy="no", logging_steps=10, report_to="none",
    )
    comparison, backbones, data_args, training_args = parser.parse_args_into_dataclasses()
    data = load_unimp_dataset(data_args.dataset)
    arms = default_arms(backbones, data_args, data, comparison.arms.split(","))
    results = compare(arms, data, data_args, training_args,
                      comparison.budget_seconds, comparison.test_samples, comparison.max_new_tokens)
    command = "python " + shlex.join(["examples/compare_pretrained.py", *sys.argv[1:]])
    write_report(results, Path(training_args.output_dir), command)
    print((Path(training_args.output_dir) / "comparison.md").read_text())


if __name__ == "__main__":
    main()
