"""Train UniMP on a bundled dataset or a builder's output, with UniMPTrainer and the benchmark's recipe.

    accelerate launch --config_file examples/accelerate/cpu.yaml examples/train.py \
        --model-preset small --dataset fashion-shop --output-dir runs/small

The defaults are the recipe the benchmark trains with (packed next-item recommend data; add
`--tasks recommend,search,rate_explain,select` for multi-task training). Any `TrainingArguments` flag works too
(`--learning-rate`, `--num-train-epochs`, `--resume-from-checkpoint` ...).
Each evaluation ranks the whole catalogue for validation users; the best checkpoint is chosen on validation
NDCG@10 and only then evaluated once on the test split. Writes the model and processor, `train_results.json`,
`test_results.json` and `loss_curve.png` to the output directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import HfArgumentParser

from processing_unimp.evaluation.protocol import recommend_samples
from processing_unimp.evaluation.tasks import evaluate_ranking
from processing_unimp.training.recipe import (
    TRAINING_RECIPE,
    DataArguments,
    ModelArguments,
    recipe_schedule,
    run_training,
)
from processing_unimp.training.trainer import UniMPTrainingArguments


def parse_args():
    """The three argument dataclasses: the recipe's defaults (`processing_unimp.training.recipe`), then the flags."""
    parser = HfArgumentParser((ModelArguments, DataArguments, UniMPTrainingArguments))
    parser.set_defaults(**TRAINING_RECIPE, **recipe_schedule(DataArguments.tasks), output_dir="runs/train",
                        num_train_epochs=1)
    _, data_args, training_args = parser.parse_args_into_dataclasses()  # the run's tasks and budget
    parser.set_defaults(**recipe_schedule(data_args.tasks, training_args.max_steps))
    return parser.parse_args_into_dataclasses()


def main() -> None:
    model_args, data_args, training_args = parse_args()
    trainer, processor, data = run_training(model_args, data_args, training_args)
    test = recommend_samples(data, processor.item_ids, "test", data_args.max_test_users)
    metrics = evaluate_ranking(trainer.model, processor, list(test),
                               batch_size=training_args.per_device_eval_batch_size, accelerator=trainer.accelerator)
    if trainer.is_world_process_zero():
        (Path(training_args.output_dir) / "test_results.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps({"test_recommend": metrics}, indent=2))


if __name__ == "__main__":
    main()
