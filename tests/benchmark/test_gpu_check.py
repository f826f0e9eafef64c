"""`examples/gpu_check.py`: a clean skip without CUDA, and its training and ranking steps run (here on the CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from processing_unimp.benchmark import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_it_says_so_writes_a_skipped_report_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA device, even on a GPU machine
    result = subprocess.run([sys.executable, str(ROOT / "examples/gpu_check.py"), "--output-dir", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gpu_check: skipped: no CUDA device" in result.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["status"] == gpu_check.SKIPPED_NO_CUDA == "skipped: no CUDA device"
    assert report["devices"] == [] and "checks" not in report and report["torch"] == torch.__version__


def test_bf16_training_and_full_ranking_steps_run(tmp_path, monkeypatch):
    """The GPU checks' own code on `tiny`, with the CUDA memory counters stubbed: device time is too scarce to find
    a typo there."""
    for name in ("reset_peak_memory_stats", "synchronize", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args, **kwargs: 0)
    report, (trainer, processor, data) = gpu_check.bf16_training(tmp_path, "tiny", 2, 8, "fashion-shop")
    assert report["steps"] == 2 and report["losses_finite"] and report["mixed_precision"] == "bf16"
    assert report["attn_implementation"] == "sdpa" and report["best_model_checkpoint"].endswith("checkpoint-2")
    ranking = gpu_check.full_ranking(trainer.model, processor, data, users=6, batch_size=4)
    assert ranking["num_users"] == 6 and ranking["users_per_second"] > 0 and 0 <= ranking["NDCG@10"] <= 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    examples = ROOT / "examples"
    distributed = gpu_check.distributed(examples / "train.py", examples / "accelerate", tmp_path, "tiny", 2, 60)
    assert distributed == {"ddp": "skipped: 1 CUDA device (DDP and ZeRO-2 need more than one)",
                           "deepspeed_zero2": "skipped: 1 CUDA device (DDP and ZeRO-2 need more than one)"}
