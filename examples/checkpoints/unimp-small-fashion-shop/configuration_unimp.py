"""Configuration of UniMP: a vision tower, a Perceiver resampler and a causal LM joined by gated cross-attention."""

from __future__ import annotations

import copy
from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

SUPPORTED_VISION_MODEL_TYPES = ("clip_vision_model", "siglip_vision_model")
DECODER_LAYERS_PATH = {
    "llama": "model.layers", "qwen2": "model.layers", "gpt_neox": "gpt_neox.layers", "gpt2": "transformer.h"
}
"""Where each supported text family keeps its list of decoder layers (the cross-attention wraps them)."""
SUPPORTED_TEXT_MODEL_TYPES = tuple(DECODER_LAYERS_PATH)
ANSWER_MEDIA = ("own_chunk", "all_images")

# CLIP ViT-L/14 at 224 px: the vision tower of OpenFlamingo-4B, which the paper builds on.
_CLIP_VIT_L14 = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}
# RedPajama-INCITE-Instruct-3B-v1 (GPT-NeoX): the language model of OpenFlamingo-4B.
_REDPAJAMA_3B = {
    "model_type": "gpt_neox",
    "vocab_size": 50432,
    "hidden_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "intermediate_size": 10240,
    "max_position_embeddings": 2048,
    "use_parallel_residual": False,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
}

# Presets: `unimp-3b` has the paper's shapes; `small` trains on 2 CPU cores in minutes; `tiny` is for tests.
UNIMP_PRESETS: dict[str, dict[str, Any]] = {
    "unimp-3b": {},
    "small": {
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 28,
            "patch_size": 7,
            "projection_dim": 128,
        },
        "text_config": {
            "model_type": "llama",
            "vocab_size": 8192,
            "hidden_size": 256,
            "intermediate_size": 704,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": True,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "num_latents": 8,
        "resampler_depth": 1,
        "resampler_heads": 4,
        "resampler_head_dim": 32,
        "cross_attention_every_n_layers": 2,
        "cross_attention_heads": 4,
        "cross_attention_head_dim": 64,
        "cross_attention_ff_mult": 2,
        "freeze_vision_tower": False,
        "freeze_language_model": False,
    },
    "tiny": {
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
            "projection_dim": 32,
        },
        "text_config": {
            "model_type": "llama",
            "vocab_size": 256,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "tie_word_embeddings": True,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        "num_latents": 4,
        "resampler_depth": 1,
        "resampler_heads": 2,
        "resampler_head_dim": 16,
        "cross_attention_every_n_layers": 1,
        "cross_attention_heads": 2,
        "cross_attention_head_dim": 16,
        "cross_attention_ff_mult": 2,
        "freeze_vision_tower": False,
        "freeze_language_model": False,
    },
}


@strict
class UniMPConfig(PreTrainedConfig):
    r"""
    Configuration of [`UniMPForConditionalGeneration`]. With no arguments it describes the paper's model, `unimp-3b`:
    CLIP ViT-L/14 + RedPajama-INCITE-Instruct-3B (GPT-NeoX, 32 layers, hidden 2560), gated cross-attention before
    every 2nd decoder layer, a Perceiver resampler with 64 latents and depth 6.

    Args:
        vision_config: a CLIP or SigLIP vision config (or its dict).
        text_config: a Llama, GPT-NeoX, GPT-2 or Qwen2 causal-LM config (or its dict).
        num_latents, resampler_depth, resampler_heads, resampler_head_dim, resampler_ff_mult:
            the Perceiver resampler that turns an image's patch features into `num_latents` visual tokens.
        cross_attention_every_n_layers: a gated cross-attention block is placed before every n-th decoder layer.
        cross_attention_heads, cross_attention_head_dim, cross_attention_ff_mult: shape of those blocks.
        answer_media: what the tokens after the last `<|endofchunk|>` (task and answer) attend to directly:
            `"own_chunk"` (default; only images inside that tail, as every other token reads only its own item's
            images: the answer reaches history images through the item tokens, as each in-chunk answer of packed
            training does, and a token's media mask then never depends on later tokens, which cached and assisted
            generation need) or `"all_images"` (every earlier image).
        image_token_id, end_of_chunk_token_id, answer_token_id: ids of `<image>`, `<|endofchunk|>`, `<answer>`.
        freeze_vision_tower, freeze_language_model: the trainable-parameter policy.
        train_new_token_rows: train the embedding (and output) rows at index >= `base_vocab_size` even when the
            language model is frozen.
        base_vocab_size: vocabulary size of the language model before UniMP's tokens were added.
        item_rows: how an item token's input and output rows are made: `"free"` (a free embedding row each) or
            `"content"` (computed from the item's content: a projection of the mean of the LM's rows of its text
            tokens and of its pooled vision features, plus a per-item residual; an item added after training gets
            a row on the same scale as trained ones, see `UniMPItemContent`).
        num_content_items, item_text_length, item_image_grid: the content table's shape: items, text tokens kept
            per item, and the side of the grid the patch features are pooled to.
        item_residual_dropout: probability that an item's residual is dropped whole in a training step, so that
            content alone must rank.
    """

    model_type = "unimp"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model", init_kwargs={
            k: v for k, v in _CLIP_VIT_L14.items() if k != "model_type"
        }),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt_neox", init_kwargs={
            k: v for k, v in _REDPAJAMA_3B.items() if k != "model_type"
        }),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_latents: int = 64
    resampler_depth: int = 6
    resampler_heads: int = 8
    resampler_head_dim: int = 64
    resampler_ff_mult: int = 4
    cross_attention_every_n_layers: int = 2
    cross_attention_heads: int = 8
    cross_attention_head_dim: int = 64
    cross_attention_ff_mult: int = 4
    answer_media: Literal["own_chunk", "all_images"] = "own_chunk"
    image_token_id: int | None = None
    end_of_chunk_token_id: int | None = None
    answer_token_id: int | None = None
    freeze_vision_tower: bool = True
    freeze_language_model: bool = True
    train_new_token_rows: bool = True
    base_vocab_size: int | None = None
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    item_rows: Literal["free", "content"] = "free"
    num_content_items: int = 0
    item_text_length: int = 24
    item_image_grid: int = 2
    item_residual_dropout: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vision_config.model_type not in SUPPORTED_VISION_MODEL_TYPES:
            raise ValueError(
                f"vision_config.model_type={self.vision_config.model_type!r} is not supported; "
                f"UniMP takes one of {SUPPORTED_VISION_MODEL_TYPES}."
            )
        if self.text_config.model_type not in SUPPORTED_TEXT_MODEL_TYPES:
            raise ValueError(
                f"text_config.model_type={self.text_config.model_type!r} is an unsupported text family; "
                f"UniMP takes one of {SUPPORTED_TEXT_MODEL_TYPES}."
            )
        if self.answer_media not in ANSWER_MEDIA:
            raise ValueError(
                f"answer_media={self.answer_media!r} is not supported; UniMP takes one of {ANSWER_MEDIA} (the former "
                "'last_image' mode was removed: no recipe used it)."
            )
        if self.item_rows == "content" and not self.freeze_vision_tower:
            raise ValueError(
                "item_rows='content' needs freeze_vision_tower=True: an item's row holds its picture's vision "
                "features, computed once when the item enters the catalogue, so the tower must not change after that."
            )
        if self.cross_attention_every_n_layers < 1:
            raise ValueError(f"cross_attention_every_n_layers must be >= 1, got {self.cross_attention_every_n_layers}.")
        if self.base_vocab_size is None:
            self.base_vocab_size = self.text_config.vocab_size
        # The output head is the language model's: its tying decides, not a default of the composite config.
        self.tie_word_embeddings = self.text_config.tie_word_embeddings

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "UniMPConfig":
        """Build a named preset (`tiny`, `small`, `unimp-3b`); keyword arguments override its fields."""
        if name not in UNIMP_PRESETS:
            raise ValueError(f"Unknown UniMP preset {name!r}; choose one of {sorted(UNIMP_PRESETS)}.")
        preset = copy.deepcopy(UNIMP_PRESETS[name])
        for key in ("vision_config", "text_config"):
            if isinstance(overrides.get(key), dict) and key in preset:
                preset[key].update(overrides.pop(key))
        preset.update(overrides)
        for key in ("vision_config", "text_config"):
            if isinstance(preset.get(key), dict):
                sub = dict(preset[key])
                preset[key] = AutoConfig.for_model(sub.pop("model_type"), **sub)
        return cls(**preset)


__all__ = ["UniMPConfig", "UNIMP_PRESETS", "SUPPORTED_TEXT_MODEL_TYPES", "SUPPORTED_VISION_MODEL_TYPES"]
