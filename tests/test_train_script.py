"""`accelerate launch examples/train.py` end to end on the bundled data, as the README documents it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(*args: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "examples/accelerate/cpu.yaml"), str(ROOT / "examples/train.py"), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_multi_task_run_then_single_task_lora_fine_tuning(tmp_path):
    launch("--model-preset", "tiny", "--dataset", "fashion-shop", "--max-steps", "3", "--max-test-users", "40",
           "--output-dir", str(tmp_path / "multi"))
    multi = tmp_path / "multi"
    assert (multi / "model.safetensors").exists() and (multi / "processor_config.json").exists()
    assert (multi / "loss_curve.png").exists()
    test = json.loads((multi / "test_results.json").read_text())
    assert test["num_users"] == 40 and 0 <= test["NDCG@10"] <= 1

    launch("--model-name-or-path", str(multi), "--dataset", "fashion-shop", "--tasks", "recommend", "--lora",
           "--max-steps", "2", "--max-test-users", "20", "--output-dir", str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
