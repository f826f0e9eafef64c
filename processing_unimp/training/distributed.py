"""Distributed training fixes: DDP on CPU processes (not shipped to the Hub).

- `torchrun` (and `accelerate launch` with a multi-process config, which runs torchrun) on a host without an
  accelerator trained independent copies: `TrainingArguments` builds accelerate's `PartialState(cpu=False)`, which,
  with `LOCAL_RANK` set and no accelerator found, initialises the default process group and yet reports
  `DistributedType.NO`. The Trainer warned "torch.distributed process group is initialized, but parallel_mode !=
  ParallelMode.DISTRIBUTED", never wrapped the model in DDP nor sharded the data, and every process acted as the
  main one; `save_pretrained` writes weights on rank 0 only once a process group exists, so rank 1's checkpoint had
  none and, with no barrier, it warned "Could not locate the best model" and kept its last weights. With
  `use_cpu=True` (`resolve_use_cpu`) the same state is `MULTI_CPU` over gloo: real DDP.
"""

from __future__ import annotations

import torch
from transformers.utils import is_torch_xla_available


def has_accelerator() -> bool:
    """Whether torch sees a CUDA, XPU, MPS, HPU, NPU... device (or XLA is installed)."""
    if is_torch_xla_available():
        return True
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return accelerator.is_available()
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def resolve_use_cpu(use_cpu: bool) -> bool:
    """`use_cpu` as it must be for `TrainingArguments`: True on a host without any accelerator, so that several
    processes (torchrun's `LOCAL_RANK`/`WORLD_SIZE`) join one gloo process group and train with DDP."""
    return use_cpu or not has_accelerator()


__all__ = ["has_accelerator", "resolve_use_cpu"]
