"""A few-minute check of UniMP on CUDA GPUs, behind `examples/gpu_check.py` (not shipped to the Hub).

1. `bf16_training`: trains the `small` preset in bf16 with SDPA attention on one GPU through `run_training`
   (the Trainer path of `examples/train.py`), with validation ranking and `load_best_model_at_end`.
2. `full_ranking`: exact full-catalogue ranking throughput (users/s) of that model on the GPU, and its peak memory.
3. `distributed`: where more than one CUDA device exists, `accelerate launch examples/train.py` with the DDP config
   (`multi_gpu.yaml`) and the DeepSpeed ZeRO-2 one (`deepspeed_zero2.yaml`) on every device, bf16, a few steps.

Everything goes into one JSON report; without a CUDA device the report only says "skipped: no CUDA device".
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

SKIPPED_NO_CUDA = "skipped: no CUDA device"


def environment() -> dict[str, Any]:
    """Versions and devices, for the report."""
    devices = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            devices.append({"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                            "capability": f"{properties.major}.{properties.minor}"})
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "transformers": transformers.__version__, "devices": devices}


def bf16_training(output_dir: Path, preset: str, max_steps: int, eval_users: int, dataset: str) -> tuple[dict, Any]:
    """Train `preset` with the recipe in bf16 on one GPU, evaluated once; returns (report, trainer)."""
    from ..training.recipe import DataArguments, ModelArguments, run_training, training_arguments

    data_args = DataArguments(dataset=dataset, max_eval_users=eval_users)
    args = training_arguments(output_dir, data_args.tasks, max_steps, bf16=True, per_device_eval_batch_size=64,
                              eval_steps=max_steps, save_steps=max_steps, logging_steps=max(max_steps // 10, 1), seed=0)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer, processor, data = run_training(ModelArguments(model_preset=preset), data_args, args)
    seconds = time.perf_counter() - start
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    config = trainer.model.config
    report = {
        "preset": preset, "steps": trainer.state.global_step, "seconds_with_setup": seconds,
        "train_steps_per_second": trainer.state.log_history[-1].get("train_steps_per_second"),
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "losses_finite": bool(losses) and all(math.isfinite(loss) for loss in losses),
        "attn_implementation": config.text_config._attn_implementation,
        "vision_attn_implementation": config.vision_config._attn_implementation,
        "mixed_precision": trainer.accelerator.mixed_precision,
        "device": str(next(trainer.model.parameters()).device),
        "best_model_checkpoint": trainer.state.best_model_checkpoint,
        "validation_NDCG@10": trainer.state.best_metric,
        "peak_cuda_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    return report, (trainer, processor, data)


def full_ranking(model, processor, data, users: int, batch_size: int = 64) -> dict[str, Any]:
    """Users per second of exact full-catalogue ranking (bf16 autocast), after one warm-up batch."""
    from ..evaluation.protocol import recommend_samples
    from ..evaluation.tasks import evaluate_ranking

    samples = list(recommend_samples(data, processor.item_ids, "test", users))
    model.eval()
    with torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16):
        evaluate_ranking(model, processor, samples[:batch_size], batch_size=batch_size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        metrics = evaluate_ranking(model, processor, samples, batch_size=batch_size)
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"num_users": len(samples), "num_items": len(processor.item_ids), "batch_size": batch_size,
            "users_per_second": len(samples) / seconds, "seconds": seconds, "NDCG@10": metrics["NDCG@10"],
            "peak_cuda_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def launch_training(config: Path, train_script: Path, output_dir: Path, processes: int, preset: str,
                    max_steps: int, timeout: float) -> dict[str, Any]:
    """`accelerate launch --config_file config train_script` on `processes` GPUs, bf16, a few steps."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", str(processes), "--mixed_precision", "bf16", str(train_script),
               "--model-preset", preset, "--max-steps", str(max_steps), "--bf16", "--eval-steps", str(max_steps),
               "--save-steps", str(max_steps), "--max-eval-users", "200", "--max-test-users", "200",
               "--output-dir", str(output_dir)]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"failed: timed out after {timeout:.0f} s", "command": command}
    report: dict[str, Any] = {"status": "ok" if result.returncode == 0 else f"failed: exit code {result.returncode}",
                              "seconds": time.perf_counter() - start, "processes": processes}
    results = output_dir / "train_results.json"
    if results.exists():
        report["train"] = json.loads(results.read_text())
    if (output_dir / "test_results.json").exists():
        report["test_NDCG@10"] = json.loads((output_dir / "test_results.json").read_text())["NDCG@10"]
    warnings = ("parallel_mode != ParallelMode.DISTRIBUTED", "Could not locate the best model")
    report["warnings"] = [w for w in warnings if w in result.stderr]
    if result.returncode != 0:
        report["stderr_tail"] = result.stderr[-3000:]
    return report


def distributed(train_script: Path, accelerate_configs: Path, output_dir: Path, preset: str, max_steps: int,
                timeout: float) -> dict[str, Any]:
    """DDP and DeepSpeed ZeRO-2 on every CUDA device, or why not."""
    count = torch.cuda.device_count()
    if count < 2:
        reason = f"skipped: {count} CUDA device (DDP and ZeRO-2 need more than one)"
        return {"ddp": reason, "deepspeed_zero2": reason}
    report = {"ddp": launch_training(accelerate_configs / "multi_gpu.yaml", train_script, output_dir / "ddp", count,
                                     preset, max_steps, timeout)}
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        report["deepspeed_zero2"] = "skipped: deepspeed is not installed (pip install deepspeed)"
    else:
        report["deepspeed_zero2"] = launch_training(accelerate_configs / "deepspeed_zero2.yaml", train_script,
                                                    output_dir / "zero2", count, preset, max_steps, timeout)
    return report


def run_gpu_check(output_dir: str | Path, train_script: str | Path, accelerate_configs: str | Path,
                  preset: str = "small", max_steps: int = 60, eval_users: int = 300, ranking_users: int = 1000,
                  dataset: str = "fashion-shop", launch_timeout: float = 300) -> dict[str, Any]:
    """Run the checks and write `gpu_check.json` to `output_dir`; returns the report."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"status": "ok", **environment()}
    if not torch.cuda.is_available():
        report["status"] = SKIPPED_NO_CUDA
    else:
        start = time.perf_counter()
        checks = report["checks"] = {}
        try:
            checks["bf16_training"], (trainer, processor, data) = bf16_training(
                output_dir / "bf16", preset, max_steps, eval_users, dataset)
            checks["full_ranking"] = full_ranking(trainer.model, processor, data, ranking_users)
            del trainer
            torch.cuda.empty_cache()
        except Exception as error:  # the report says what failed; the distributed launches still run
            checks["bf16_training_error"] = f"{type(error).__name__}: {error}"
        checks["distributed"] = distributed(Path(train_script), Path(accelerate_configs), output_dir, preset,
                                            max_steps, launch_timeout)
        report["seconds"] = time.perf_counter() - start
        failed = [name for name, value in _leaves(checks)
                  if str(value).startswith("failed") or name.endswith("error") or (name.endswith("warnings") and value)]
        bf16 = checks.get("bf16_training", {})
        if bf16 and not (bf16["losses_finite"] and bf16["attn_implementation"] == "sdpa"):
            failed.append("bf16_training")
        report["status"] = "failed: " + ", ".join(failed) if failed else "ok"
    (output_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


__all__ = ["SKIPPED_NO_CUDA", "run_gpu_check"]
