"""Distributed training fixes: DDP and FSDP2 on CPU processes, FSDP sharded checkpoints (not shipped to the Hub).

- `torchrun` (and `accelerate launch` with a multi-process config, which runs torchrun) on a host without an
  accelerator trained independent copies: `TrainingArguments` builds accelerate's `PartialState(cpu=False)`, which,
  with `LOCAL_RANK` set and no accelerator found, initialises the default process group and yet reports
  `DistributedType.NO`. The Trainer warned "torch.distributed process group is initialized, but parallel_mode !=
  ParallelMode.DISTRIBUTED", never wrapped the model in DDP nor sharded the data, and every process acted as the
  main one; `save_pretrained` writes weights on rank 0 only once a process group exists, so rank 1's checkpoint had
  none and, with no barrier, it warned "Could not locate the best model" and kept its last weights. With
  `use_cpu=True` (`resolve_use_cpu`) the same state is `MULTI_CPU` over gloo: real DDP.
- `enable_fsdp_on_cpu`: FSDP2 for an FSDP launch on CPU processes, which accelerate silently runs as DDP.
- `save_fsdp_sharded`: what `Trainer.save_model` gets wrong or leaves out under `SHARDED_STATE_DICT`.
"""

from __future__ import annotations

import os

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


def enable_fsdp_on_cpu(accelerator) -> bool:
    """Make an FSDP launch (`ACCELERATE_USE_FSDP`, e.g. `fsdp.yaml`) on CPU processes shard with FSDP2 over gloo.

    accelerate's `AcceleratorState` turns only GPU-like multi-process states into `DistributedType.FSDP`: a
    `MULTI_CPU` state keeps its FSDP plugin unused and trains plain DDP, silently. torch's `fully_shard` runs on CPU
    with gloo, so this sets the plugin and the distributed type as accelerate does on GPUs. Returns whether it did.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    fsdp_launch = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    if state.distributed_type != DistributedType.MULTI_CPU or not fsdp_launch:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError("FSDP on CPU processes is set up for fsdp_version: 2 only (examples/accelerate/fsdp.yaml).")
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    # Both singletons: every later `AcceleratorState()` copies `PartialState`'s fields over its own.
    state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    return True


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's whole state dict on the host, its FSDP2 shards (`DTensor`s) gathered: a collective, in the same
    order on every process. (`get_model_state_dict(full_state_dict=True, cpu_offload=True)`, what accelerate's
    `get_state_dict` calls, returns the shards still as `DTensor`s when the mesh is on the CPU.)"""
    from torch.distributed.tensor import DTensor

    return {name: (value.full_tensor() if isinstance(value, DTensor) else value).detach().cpu()
            for name, value in model.state_dict().items()}


def save_fsdp_sharded(trainer, output_dir: str, internal_call: bool) -> None:
    """What `Trainer.save_model` leaves out under FSDP with `SHARDED_STATE_DICT` (`fsdp.yaml`); call it on every
    process before `Trainer.save_model`.

    - A checkpoint (`internal_call`): the Trainer writes the shards only after every process has checked that the
      best checkpoint's folder exists, so a process that checks before another has started writing never records
      the best checkpoint, skips `load_best_model_at_end` and hangs the others in its collective. The folder is made
      here, before the check.
    - A final save: the Trainer saves nothing at all; here the full state dict is gathered and the main process
      writes `model.safetensors` with `save_pretrained`, loadable with `from_pretrained`.
    """
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if not trainer.is_fsdp_enabled or "SHARDED_STATE_DICT" not in str(getattr(plugin, "state_dict_type", "")):
        return
    if internal_call:
        os.makedirs(output_dir, exist_ok=True)
    else:
        trainer._save(output_dir, state_dict=full_state_dict(trainer.model))


__all__ = ["enable_fsdp_on_cpu", "full_state_dict", "has_accelerator", "resolve_use_cpu", "save_fsdp_sharded"]
