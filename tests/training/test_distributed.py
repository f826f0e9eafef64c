"""Distributed training on this CPU machine, through `accelerate launch examples/train.py` as the README runs it.

Two processes with per-device batch 2 (DDP over gloo with `cpu_ddp.yaml`, and FSDP2 with `fsdp.yaml`) must train
exactly as one process with batch 4: same seed, same data order, no dropout in `tiny`, so the same loss and gradient
norm at every step to float tolerance, and the same validation (gathered from both processes' shares) and final
weights. `load_best_model_at_end` must restore the best checkpoint (under FSDP2 every process's shard of it). To make
that restore observable the best checkpoint must not be the last one: the "best" metric here is the highest
validation loss, which is the first of the two evaluations. Multi-task data trains in random order (the recipe's
length-grouped batches, for recommend-only data, come from megabatches sized by the per-device batch: 2 x 2 and
1 x 4 would group differently).
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--model-preset", "tiny", "--dataset", "fashion-shop", "--max-steps", "4", "--logging-steps", "1",
        "--eval-steps", "2", "--save-steps", "2", "--max-eval-users", "30", "--max-test-users", "30",
        "--max-eval-loss-samples", "8", "--metric-for-best-model", "loss", "--greater-is-better", "True",
        "--save-total-limit", "2", "--tasks", "recommend,search,rate_explain,select"]
NOT_DISTRIBUTED = "parallel_mode != ParallelMode.DISTRIBUTED"
BEST_NOT_FOUND = "Could not locate the best model"


def _free_port() -> int:
    with socket.socket() as probe:  # torchrun's default port may be taken by another run on the machine
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(output: Path, config: str, processes: int, batch_size: int) -> str:
    """Run examples/train.py under `accelerate launch`; the global batch is 4 (train) and 8 (validation loss)."""
    launcher = ["--config_file", str(ROOT / "examples/accelerate" / config), "--num_processes", str(processes),
                "--mixed_precision", "no", "--main_process_port", str(_free_port())]
    script = [str(ROOT / "examples/train.py"), *ARGS, "--per-device-train-batch-size", str(batch_size),
              "--per-device-eval-batch-size", str(2 * batch_size), "--output-dir", str(output)]
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, *script]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert NOT_DISTRIBUTED not in result.stderr and BEST_NOT_FOUND not in result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("single")
    train(output, "cpu.yaml", 1, 4)
    return output


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("ddp")
    stdout = train(output, "cpu_ddp.yaml", 2, 2)
    assert stdout.count('"test_recommend"') == 1  # only the main process reports
    return output


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("fsdp")
    train(output, "fsdp.yaml", 2, 2)
    return output


def history(run: Path) -> tuple[list[dict], list[dict]]:
    """(training logs, evaluation logs) of the run, step by step."""
    logs = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    steps = [{k: r[k] for k in ("step", "loss", "grad_norm")} for r in logs if "loss" in r]
    evals = {}
    for record in logs:
        if any(key.startswith("eval_") for key in record):
            evals.setdefault(record["step"], {}).update({k: v for k, v in record.items() if k.startswith("eval_")
                                                         and not k.endswith(("runtime", "per_second"))})
    return steps, [evals[step] for step in sorted(evals)]


def assert_trains_as_single_process(run: Path, single: Path) -> None:
    steps, evals = history(run)
    reference_steps, reference_evals = history(single)
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    for step, reference in zip(steps, reference_steps):
        assert step["loss"] == pytest.approx(reference["loss"], rel=1e-5), step
        assert step["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4), step
    assert [e["eval_num_users"] for e in evals] == [30, 30]  # every validation user, from both processes' shares
    for evaluation, reference in zip(evals, reference_evals):
        assert evaluation == pytest.approx(reference, rel=1e-5)
    test, reference_test = (json.loads((r / "test_results.json").read_text()) for r in (run, single))
    assert test["num_users"] == 30 and test == pytest.approx(reference_test, rel=1e-5)
    weights, reference_weights = load_file(run / "model.safetensors"), load_file(single / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, reference_weights[name], rtol=1e-4, atol=1e-5, msg=name)


def test_ddp_on_two_cpu_processes_trains_as_one_process_with_the_same_global_batch(ddp, single):
    assert {p.name for p in (ddp / "checkpoint-2").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert_trains_as_single_process(ddp, single)


def test_fsdp2_on_two_cpu_processes_shards_and_trains_as_one_process(fsdp, single):
    # `fsdp.yaml` on CPU processes: FSDP2 over gloo, SHARDED_STATE_DICT checkpoints with one shard file per process.
    shards = fsdp / "checkpoint-2" / "pytorch_model_fsdp_0"
    assert sorted(p.name for p in shards.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (fsdp / "checkpoint-2" / "model.safetensors").exists()
    assert_trains_as_single_process(fsdp, single)  # the final save gathers the shards into model.safetensors


def checkpoint_weights(checkpoint: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    if (checkpoint / "model.safetensors").exists():
        return load_file(checkpoint / "model.safetensors")
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", tmp_path / "full.pt")
    return torch.load(tmp_path / "full.pt")["model"]


@pytest.mark.parametrize("engine", ["single", "ddp", "fsdp"])
def test_load_best_model_at_end_restores_the_best_checkpoint(engine, request, tmp_path):
    run = request.getfixturevalue(engine)
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    losses = {r["step"]: r["eval_loss"] for r in state["log_history"] if "eval_loss" in r}
    assert losses[2] > losses[4] and Path(state["best_model_checkpoint"]).name == "checkpoint-2"
    final = load_file(run / "model.safetensors")  # saved after training, i.e. after the best model was loaded
    best, last = (checkpoint_weights(run / f"checkpoint-{step}", tmp_path) for step in (2, 4))
    assert all(torch.equal(value, best[name]) for name, value in final.items())
    assert not all(torch.equal(value, last[name]) for name, value in final.items())
