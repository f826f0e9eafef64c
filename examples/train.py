"""Train UniMP multi-task on a bundled dataset or a builder's output, with UniMPTrainer.

    accelerate launch --config_file examples/accelerate/cpu.yaml examples/train.py \
        --model-preset small --dataset fashion-shop --output-dir runs/small

Any `TrainingArguments` flag works too (`--learning-rate`, `--num-train-epochs`, `--resume-from-checkpoint` ...).
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
from processing_unimp.training.recipe import DataArguments, ModelArguments, run_training
from processing_unimp.training.trainer import UniMPTrainingArguments


def parse_args():
    parser = HfArgumentParser((ModelArguments, DataArguments, UniMPTrainingArguments))
    # Defaults that train `small` on a CPU in minutes; every one can be overridden on the command line. Recommend
    # trains packed (every train interaction a next-item target once per epoch) on compact chunks whose item text
    # enters through content-started item rows, as in the benchmark (README, "Training recipe").
    parser.set_defaults(
        packed=True, item_fields="", max_history_items=50, init_item_tokens_from="title,categories",
        item_init_image_weight=1.0, item_init_noise=0.5,
        output_dir="runs/train", learning_rate=1e-3, per_device_train_batch_size=8, per_device_eval_batch_size=32,
        num_train_epochs=1, lr_scheduler_type="cosine", warmup_steps=0.01, eval_strategy="steps", eval_steps=200,
        save_strategy="steps", save_steps=200, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="NDCG@10", greater_is_better=True, logging_steps=20, report_to="none",
        prediction_loss_only=True,
    )
    return parser.parse_args_into_dataclasses()


def main() -> None:
    model_args, data_args, training_args = parse_args()
    trainer, processor, data = run_training(model_args, data_args, training_args)
    test = recommend_samples(data, processor.item_ids, "test", data_args.max_test_users)
    metrics = evaluate_ranking(trainer.model, processor, list(test), batch_size=training_args.per_device_eval_batch_size,
                               accelerator=trainer.accelerator)
    if trainer.is_world_process_zero():
        (Path(training_args.output_dir) / "test_results.json").write_text(json.dumps(metrics, indent=2))
        print(json.dumps({"test_recommend": metrics}, indent=2))


if __name__ == "__main__":
    main()
