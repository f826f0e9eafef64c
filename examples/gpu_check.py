"""A few-minute check of UniMP on CUDA GPUs: bf16 + SDPA training of `small`, full-ranking throughput, and the DDP and
DeepSpeed ZeRO-2 configs where more than one GPU exists.

    python examples/gpu_check.py --output-dir runs/gpu_check

Writes `gpu_check.json` (its `status` is "ok", "failed: <checks>" or "skipped: no CUDA device") and exits 0 unless
a check failed. Without a CUDA device it does nothing else, says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from processing_unimp.benchmark.gpu_check import run_gpu_check

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/gpu_check")
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--eval-users", type=int, default=300, help="validation users ranked at the evaluation")
    parser.add_argument("--ranking-users", type=int, default=1000, help="test users of the throughput run")
    parser.add_argument("--dataset", default="fashion-shop")
    parser.add_argument("--launch-timeout", type=float, default=300, help="seconds per distributed launch")
    args = parser.parse_args()
    report = run_gpu_check(args.output_dir, HERE / "train.py", HERE / "accelerate", preset=args.preset,
                           max_steps=args.max_steps, eval_users=args.eval_users, ranking_users=args.ranking_users,
                           dataset=args.dataset, launch_timeout=args.launch_timeout)
    path = Path(args.output_dir) / "gpu_check.json"
    if "checks" in report:
        print(json.dumps(report["checks"], indent=2, default=str))
    print(f"gpu_check: {report['status']} (torch {report['torch']}, CUDA build {report['cuda_build']}); wrote {path}")
    return 1 if report["status"].startswith("failed") else 0


if __name__ == "__main__":
    raise SystemExit(main())
