"""UniMP: a Flamingo-style vision-language model for unified multi-modal personalization.

A vision tower encodes each item image, a Perceiver resampler turns its patches into a few visual latents, and
tanh-gated cross-attention blocks (gates start at 0) placed before every n-th decoder layer of a causal LM let text
tokens read those latents. A per-item media mask lets each token see only the image(s) of its own item chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    CausalLMOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_unimp import DECODER_LAYERS_PATH, UniMPConfig

IMAGE_INPUTS = ("pixel_values", "image_features", "media_latents")
"""The image inputs of `forward`, from the least to the most processed; a call takes one of them."""
TRAINING_INPUTS = ("token_kinds", "task_ids")
"""The processor's outputs that only the training loss reads (`forward` refuses them)."""

# Vision-tower modules that only feed its pooled output, which UniMP never reads: frozen so that every trainable
# parameter gets a gradient.
UNUSED_VISION_MODULES = {
    "clip_vision_model": ("post_layernorm",),
    "siglip_vision_model": ("head",),
}


@dataclass
class UniMPCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    """Causal-LM output of UniMP.

    `image_outputs` (the 5.x multimodal field) holds the images resampled in this call: patch features as
    `last_hidden_state` (see `get_image_features`), latents as `pooler_output`; `None` for text only or when the call
    received `media_latents`. `media_latents` are the latents the text attended to: `generate` computes them once.
    """

    media_latents: torch.FloatTensor | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `"eager"` attention of transformers' vision models: `(B, heads, len, dim)` in, `(B, len, heads, dim)` out.

    `attention_mask` is additive (0 where allowed, the dtype's minimum elsewhere), as every implementation takes it.
    """
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _attention(module: nn.Module, implementation: str | None, query: torch.Tensor, key: torch.Tensor,
               value: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal attention through the implementation the config names (`eager`, `sdpa`, ...), as transformers'
    own modules dispatch it; returns `(B, len, heads * dim)`."""
    attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
    out, _ = attention_interface(
        module, query, key, value, attention_mask, scaling=query.shape[-1] ** -0.5, dropout=0.0, is_causal=False
    )
    return out.reshape(*out.shape[:2], -1)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, _ = x.shape
    return x.view(batch, length, heads, -1).transpose(1, 2)


class UniMPFeedForward(nn.Module):
    """Pre-norm GELU MLP used in the resampler and after each cross-attention."""

    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, dim * mult, bias=False)
        self.act = nn.GELU()
        self.down = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(self.norm(x))))


class UniMPPerceiverAttention(nn.Module):
    """Latents attend to an image's patch features concatenated with themselves (Perceiver / Flamingo)."""

    def __init__(self, dim: int, heads: int, head_dim: int, config: UniMPConfig):
        super().__init__()
        self.heads = heads
        self.config = config  # read at call time: `set_attn_implementation` may change it
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.latent_query = nn.Linear(dim, heads * head_dim, bias=False)
        self.latent_key_value = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.latent_output = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = self.norm_latents(latents)
        context = torch.cat([self.norm_media(features), latents], dim=1)
        key, value = self.latent_key_value(context).chunk(2, dim=-1)
        query = _split_heads(self.latent_query(latents), self.heads)
        key, value = _split_heads(key, self.heads), _split_heads(value, self.heads)
        return self.latent_output(_attention(self, self.config._attn_implementation, query, key, value))


class UniMPPerceiverLayer(nn.Module):
    def __init__(self, config: UniMPConfig):
        super().__init__()
        dim = config.vision_config.hidden_size
        self.attention = UniMPPerceiverAttention(dim, config.resampler_heads, config.resampler_head_dim, config)
        self.feed_forward = UniMPFeedForward(dim, config.resampler_ff_mult)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = latents + self.attention(features, latents)
        return latents + self.feed_forward(latents)


class UniMPPerceiverResampler(nn.Module):
    """Maps `(n, patches, dim)` image features to `(n, num_latents, dim)` visual latents."""

    def __init__(self, config: UniMPConfig):
        super().__init__()
        dim = config.vision_config.hidden_size
        self.latents = nn.Parameter(torch.empty(config.num_latents, dim))
        self.layers = nn.ModuleList(UniMPPerceiverLayer(config) for _ in range(config.resampler_depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(features.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(features, latents)
        return self.norm(latents)


class UniMPMediaCrossAttention(nn.Module):
    """Text tokens attend to the visual latents that their media mask allows; tokens that see none get zero."""

    def __init__(self, hidden_size: int, media_dim: int, heads: int, head_dim: int, text_config):
        super().__init__()
        self.heads = heads
        self.text_config = text_config  # read at call time: `set_attn_implementation` may change it
        self.norm = nn.LayerNorm(hidden_size)
        self.media_query = nn.Linear(hidden_size, heads * head_dim, bias=False)
        self.media_key_value = nn.Linear(media_dim, 2 * heads * head_dim, bias=False)
        self.media_output = nn.Linear(heads * head_dim, hidden_size, bias=False)

    def forward(
        self, hidden_states: torch.Tensor, media_latents: torch.Tensor, media_attention_mask: torch.Tensor
    ) -> torch.Tensor:
        batch, num_media, num_latents, media_dim = media_latents.shape
        query = _split_heads(self.media_query(self.norm(hidden_states)), self.heads)
        key, value = self.media_key_value(media_latents.reshape(batch, num_media * num_latents, media_dim)).chunk(2, -1)
        key_mask = media_attention_mask.repeat_interleave(num_latents, dim=-1)  # (B, T, N * L)
        sees_media = key_mask.any(dim=-1)
        # Rows with no visible media would softmax over nothing: let them see everything, then zero their output.
        key_mask = (key_mask | ~sees_media.unsqueeze(-1)).unsqueeze(1)
        additive = torch.zeros(key_mask.shape, dtype=query.dtype, device=query.device)
        additive = additive.masked_fill(~key_mask, torch.finfo(query.dtype).min)
        key, value = _split_heads(key, self.heads), _split_heads(value, self.heads)
        out = _attention(self, self.text_config._attn_implementation, query, key, value, additive)
        return self.media_output(out * sees_media.unsqueeze(-1).to(out.dtype))


class UniMPGatedCrossAttentionBlock(GradientCheckpointingLayer):
    """Tanh-gated cross-attention plus feed-forward; both gates start at 0 so the LM is unchanged at init."""

    def __init__(self, config: UniMPConfig, text_config):
        super().__init__()
        hidden = text_config.hidden_size
        self.cross_attention = UniMPMediaCrossAttention(
            hidden,
            config.vision_config.hidden_size,
            config.cross_attention_heads,
            config.cross_attention_head_dim,
            text_config,
        )
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.feed_forward = UniMPFeedForward(hidden, config.cross_attention_ff_mult)
        self.ff_gate = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        hidden_states: torch.Tensor,
        media_latents: torch.Tensor | None = None,
        media_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if media_latents is not None and media_latents.shape[1] > 0:
            attended = self.cross_attention(hidden_states, media_latents, media_attention_mask)
            hidden_states = hidden_states + attended * self.attn_gate.tanh()
        return hidden_states + self.feed_forward(hidden_states) * self.ff_gate.tanh()


class UniMPDecoderLayer(nn.Module):
    """One decoder layer of the wrapped LM, optionally preceded by a gated cross-attention block.

    The LM passes unknown keyword arguments from its `forward` down to each layer; this wrapper takes the media
    arguments out of them, so nothing is stored on modules between calls.
    """

    def __init__(self, decoder_layer: nn.Module, gated_cross_attention: UniMPGatedCrossAttentionBlock | None):
        super().__init__()
        self.gated_cross_attention = gated_cross_attention
        self.decoder_layer = decoder_layer

    def forward(
        self,
        hidden_states: torch.Tensor,
        *args,
        media_latents: torch.Tensor | None = None,
        media_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        if self.gated_cross_attention is not None:
            hidden_states = self.gated_cross_attention(hidden_states, media_latents, media_attention_mask)
        return self.decoder_layer(hidden_states, *args, **kwargs)


def add_cross_attention(language_model: PreTrainedModel, config: UniMPConfig) -> PreTrainedModel:
    """Wrap every decoder layer of `language_model` in place; every n-th one gets a gated cross-attention block."""
    model_type = language_model.config.model_type
    if model_type not in DECODER_LAYERS_PATH:
        raise ValueError(f"Unsupported text family {model_type!r}; UniMP takes one of {sorted(DECODER_LAYERS_PATH)}.")
    layers = language_model.get_submodule(DECODER_LAYERS_PATH[model_type])
    every = config.cross_attention_every_n_layers
    for index, layer in enumerate(layers):
        # Flamingo places a block before layers n-1, 2n-1, ...: with n=2, before every 2nd layer.
        has_block = (index + 1) % every == 0
        block = UniMPGatedCrossAttentionBlock(config, language_model.config) if has_block else None
        layers[index] = UniMPDecoderLayer(layer, block)
    _retarget_parallel_plans(language_model, DECODER_LAYERS_PATH[model_type])
    return language_model


def _retarget_parallel_plans(language_model: PreTrainedModel, layers_path: str) -> None:
    """Point the LM's tensor- and expert-parallel rules for decoder-layer internals at their wrapped names.

    The LM (and its base model) built these plans before the wrapping moved each layer's modules under
    `.decoder_layer.`; unchanged, the rules would match no parameter. The cross-attention blocks stay replicated.
    """
    for name, module in language_model.named_modules():
        if not isinstance(module, PreTrainedModel) or not (name == "" or layers_path.startswith(f"{name}.")):
            continue
        inside_layer = f"{layers_path.removeprefix(f'{name}.') if name else layers_path}.*."
        for attribute in ("_tp_plan", "_ep_plan"):
            if plan := getattr(module, attribute, None):
                setattr(module, attribute, {_into_wrapper(key, inside_layer): style for key, style in plan.items()})


def _into_wrapper(key: str, inside_layer: str) -> str:
    """`layers.*.self_attn.q_proj` -> `layers.*.decoder_layer.self_attn.q_proj`; keys outside the layers unchanged."""
    return f"{inside_layer}decoder_layer.{key.removeprefix(inside_layer)}" if key.startswith(inside_layer) else key


def _media_layout(input_ids: torch.Tensor, config: UniMPConfig, num_images: int):
    """Per token: index of the latest image at or before it, its chunk, and whether it follows the last chunk.

    A chunk ends with `<|endofchunk|>` (which belongs to the chunk it closes). Returns `image_index (B, T)` (-1 if
    none), `chunk (B, T)`, `image_chunk (B, N)` (the chunk of each image) and `tail (B, T)`.
    """
    is_image = input_ids == config.image_token_id
    if config.end_of_chunk_token_id is None:
        is_end = torch.zeros_like(is_image)
    else:
        is_end = input_ids == config.end_of_chunk_token_id
    image_index = is_image.long().cumsum(-1) - 1
    chunk = is_end.long().cumsum(-1) - is_end.long()
    tail = chunk == is_end.long().sum(-1, keepdim=True)
    # Scatter each image token's chunk into its image slot; other tokens, and generated `<image>` tokens beyond the
    # given images (an assistant's candidates may hold some), go to a dropped extra column.
    slots = torch.where(is_image & (image_index < num_images), image_index, torch.full_like(image_index, num_images))
    image_chunk = torch.full((input_ids.shape[0], num_images + 1), -1, dtype=torch.long, device=input_ids.device)
    image_chunk.scatter_(1, slots, chunk)
    return image_index, chunk, image_chunk[:, :num_images], tail


def build_media_attention_mask(
    input_ids: torch.Tensor,
    config: UniMPConfig,
    image_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean `(B, T, N)` mask: which images each token may attend to (see `UniMPConfig.answer_media`).

    Each token sees the images of its own item chunk up to itself; with `answer_media="all_images"` the tokens after
    the last `<|endofchunk|>` also see every earlier image.
    """
    num_images = image_mask.shape[1]
    image_index, chunk, image_chunk, tail = _media_layout(input_ids, config, num_images)
    media = torch.arange(num_images, device=input_ids.device)
    seen = media.view(1, 1, -1) <= image_index.unsqueeze(-1)
    mask = seen & (image_chunk.unsqueeze(1) == chunk.unsqueeze(-1))
    if config.answer_media == "all_images":
        mask = mask | (tail.unsqueeze(-1) & seen)
    mask = mask & image_mask.bool().unsqueeze(1)
    if attention_mask is not None:
        mask = mask & attention_mask.bool().unsqueeze(-1)
    return mask


class UniMPItemContent(nn.Module):
    """Item-token rows computed from content: projections of the item's text (the mean of the LM's own rows of its
    text tokens) and of its pooled vision features, plus a per-item residual that training drops whole.

    Items with similar content get similar rows, so sparse items borrow from their neighbours, and an item added
    after training (`add_items`) gets a row on the same scale as trained ones without retraining.
    """

    def __init__(self, config: UniMPConfig):
        super().__init__()
        hidden, vision = config.text_config.hidden_size, config.vision_config.hidden_size
        items, image_dim = config.num_content_items, config.item_image_grid**2 * vision
        self.residual_dropout = config.item_residual_dropout
        self.register_buffer("token_ids", torch.zeros(items, dtype=torch.long))
        self.register_buffer("text_ids", torch.full((items, config.item_text_length), -1, dtype=torch.long))
        self.register_buffer("image_features", torch.zeros(items, image_dim))
        self.text_projection = nn.Linear(hidden, hidden, bias=False)
        self.image_projection = nn.Linear(image_dim, hidden, bias=False)
        self.residual = nn.Parameter(torch.zeros(items, hidden))

    def rows(self, word_rows: torch.Tensor) -> torch.Tensor:
        """`(num_items, hidden)` rows from the LM's current input-embedding matrix `word_rows`."""
        present = (self.text_ids >= 0).unsqueeze(-1).to(word_rows.dtype)
        words = word_rows[self.text_ids.clamp(min=0)] * present
        text = words.sum(1) / present.sum(1).clamp(min=1)
        text = F.layer_norm(text, text.shape[-1:]) * present.amax(1)
        has_image = self.image_features.abs().sum(-1, keepdim=True) > 0
        image = F.layer_norm(self.image_features, self.image_features.shape[-1:]) * has_image
        residual = self.residual
        if self.training and self.residual_dropout:
            keep = torch.ones(residual.shape[0], 1, device=residual.device, dtype=residual.dtype)
            residual = residual * F.dropout(keep, self.residual_dropout)
        return self.text_projection(text.to(self.text_projection.weight.dtype)) + self.image_projection(
            image.to(self.image_projection.weight.dtype)
        ) + residual

    def positions(self, input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Per token, the index of its item in the content table, or -1 for any other token."""
        lookup = torch.full((vocab_size,), -1, dtype=torch.long, device=input_ids.device)
        lookup[self.token_ids] = torch.arange(len(self.token_ids), device=input_ids.device)
        return lookup[input_ids]

    @torch.no_grad()
    def grow(self, token_ids: torch.Tensor, text_ids: torch.Tensor, image_features: torch.Tensor,
             residual_std: float = 0.0) -> None:
        """Append items (their token ids, padded text ids, pooled image features); their residuals start at
        N(0, residual_std), zero (content alone) for items added after training."""
        self.token_ids = torch.cat([self.token_ids, token_ids.to(self.token_ids)])
        self.text_ids = torch.cat([self.text_ids, text_ids.to(self.text_ids)])
        self.image_features = torch.cat([self.image_features, image_features.to(self.image_features)])
        added = self.residual.new_zeros(len(token_ids), self.residual.shape[1]).normal_(0.0, residual_std)
        self.residual = nn.Parameter(torch.cat([self.residual, added]), requires_grad=self.residual.requires_grad)


class UniMPPreTrainedModel(PreTrainedModel):
    config_class = UniMPConfig
    # The wrapped causal LM is the body that text runs through (UniMP has no headless base model of its own).
    base_model_prefix = "language_model"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["UniMPDecoderLayer", "UniMPPerceiverLayer"]
    # UniMP ties nothing itself: its LM's tying (`lm_head` to `embed_tokens`) is collected from that submodule. A dict
    # (transformers 5's form), not None, is what lets peft find that tie and keep its trainable token rows tied too.
    _tied_weights_keys: dict[str, str] = {}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """UniMP's own modules here; a module of the vision tower or the LM by that sub-model's `_init_weights`, so
        that applying this to every module (as `initialize_weights` after a meta-device build) leaves none out."""
        if isinstance(module, UniMPGatedCrossAttentionBlock):
            init.zeros_(module.attn_gate)
            init.zeros_(module.ff_gate)
        elif isinstance(module, UniMPPerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=1.0)
        elif isinstance(module, UniMPItemContent):
            init.zeros_(module.residual)
        elif (sub_model := self._sub_model_owning(module)) is not None:
            sub_model._init_weights(module)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    def _sub_model_owning(self, module: nn.Module) -> PreTrainedModel | None:
        """The vision tower or language model that `module` belongs to (`None` for UniMP's own modules)."""
        for sub_model in (getattr(self, "vision_tower", None), getattr(self, "language_model", None)):
            if sub_model is not None and any(child is module for child in sub_model.modules()):
                return sub_model
        return None

    @torch.no_grad()
    def initialize_weights(self) -> None:
        super().initialize_weights()
        # The gated blocks live inside the LM, whose own `_init_weights` does not know their gates.
        for module in self.modules():
            if isinstance(module, UniMPGatedCrossAttentionBlock):
                self._init_weights(module)


class UniMPForConditionalGeneration(UniMPPreTrainedModel, GenerationMixin):
    """UniMP: vision tower -> Perceiver resampler -> causal LM with gated cross-attention, with a LM head.

    Images enter as `pixel_values (B, N, 3, H, W)` with `image_mask (B, N)`, as precomputed vision-tower
    `image_features (B, N, P, D)` (see `get_image_features`, to encode a catalogue once), or as resampled
    `media_latents (B, N, L, D)`. Row `b` must hold one `<image>` token per real image, in image order.
    """

    def __init__(self, config: UniMPConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.resampler = UniMPPerceiverResampler(config)
        self.language_model = add_cross_attention(AutoModelForCausalLM.from_config(config.text_config), config)
        # One config object for the LM and the composite: resizing or attention switches update both.
        config.text_config = self.language_model.config
        self.vocab_size = config.text_config.vocab_size
        self.item_content = UniMPItemContent(config) if config.item_rows == "content" else None
        self.post_init()
        # Tied output rows are saved once; a Trainer reloading a checkpoint then re-ties them instead of warning.
        tied = self.language_model.all_tied_weights_keys
        self._keys_to_ignore_on_save = [f"language_model.{k}" for k in tied] or None
        self.apply_trainable_policy()

    # ----- embeddings -------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Resize the LM's vocabulary (for UniMP's added tokens), then re-apply the trainable-parameter policy.

        As in transformers, the text config's `vocab_size` and the model's `vocab_size` follow the new matrix.
        """
        embeddings = self.language_model.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.config.text_config = self.language_model.config
        self.vocab_size = self.config.text_config.vocab_size = embeddings.weight.shape[0]
        self.apply_trainable_policy()
        return embeddings

    # ----- trainable-parameter policy -------------------------------------------------------------------------------
    def apply_trainable_policy(self) -> None:
        """Set `requires_grad` from the config, independently of library defaults.

        The resampler and the cross-attention blocks always train. When the LM is frozen and
        `train_new_token_rows` is set, the embedding and output matrices train, with the gradient of the rows below
        `base_vocab_size` masked to zero, so only the added tokens (items, ratings, image codes) learn. The vision
        tower's pooling modules never train: UniMP reads patch features only, so they would get no gradient.
        """
        self.vision_tower.requires_grad_(not self.config.freeze_vision_tower)
        for name in UNUSED_VISION_MODULES.get(self.config.vision_config.model_type, ()):
            if (module := getattr(self.vision_tower, name, None)) is not None:
                module.requires_grad_(False)
        self.language_model.requires_grad_(not self.config.freeze_language_model)
        self.resampler.requires_grad_(True)
        if self.item_content is not None:
            self.item_content.requires_grad_(True)
        for module in self.language_model.modules():
            if isinstance(module, UniMPGatedCrossAttentionBlock):
                module.requires_grad_(True)
        for handle in getattr(self, "_row_gradient_hooks", []):
            handle.remove()
        self._row_gradient_hooks = []
        base = self.config.base_vocab_size
        vocab = self.get_input_embeddings().weight.shape[0]
        if self.config.freeze_language_model and self.config.train_new_token_rows and vocab > base:
            matrices = {id(m.weight): m.weight for m in (self.get_input_embeddings(), self.get_output_embeddings())}
            for weight in matrices.values():
                weight.requires_grad_(True)
                self._row_gradient_hooks.append(weight.register_hook(_mask_rows_below(base)))

    @classmethod
    def from_pretrained(cls, *args, output_loading_info: bool = False, **kwargs):
        """Load as transformers does (a `(model, loading_info)` pair with `output_loading_info=True`), then apply
        the trainable-parameter policy: loading replaces parameters, dropping their flags and gradient hooks.

        A bare language-model checkpoint raises instead of loading only its non-layer weights (transformers adds
        the `language_model.` prefix, but UniMP's decoder layers are wrapped): see `from_vision_text_pretrained`.
        """
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        layers = re.escape(DECODER_LAYERS_PATH[model.config.text_config.model_type])
        bare_layer = re.compile(rf"(language_model\.)?{layers}\.\d+\.(?!decoder_layer\.|gated_cross_attention\.)")
        if bare := [key for key in loading_info["unexpected_keys"] if bare_layer.match(key)]:
            raise ValueError(
                f"The checkpoint holds bare language-model decoder layers ({bare[0]}, ...), which UniMP wraps; build "
                "UniMP from it with UniMPForConditionalGeneration.from_vision_text_pretrained(vision, text)."
            )
        model.apply_trainable_policy()
        return (model, loading_info) if output_loading_info else model

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path: str, text_model_name_or_path: str,
                                    **config_kwargs: Any) -> "UniMPForConditionalGeneration":
        """Compose UniMP from a pretrained vision model (CLIP/SigLIP, full or vision-only) and a causal LM.

        Only the resampler, the cross-attention blocks and (with `item_rows="content"`) the content projections start
        from random weights; content rows then read the pretrained LM's rows of the item's words.
        """
        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIP/SigLIP checkpoint
        vision = MODEL_MAPPING[type(vision_config)].from_pretrained(vision_model_name_or_path)
        text = AutoModelForCausalLM.from_pretrained(text_model_name_or_path)
        config = UniMPConfig(vision_config=vision.config, text_config=text.config, **config_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.vision_tower = vision
        model.resampler = UniMPPerceiverResampler(config)
        model.language_model = add_cross_attention(text, config)
        if config.item_rows == "content":
            model.item_content = UniMPItemContent(config)  # empty: `fill_item_content` adds the catalogue
        config.text_config = text.config
        for module in model.modules():
            if isinstance(module, (UniMPPerceiverResampler, UniMPGatedCrossAttentionBlock, UniMPItemContent)):
                for child in module.modules():
                    model._init_weights(child)
        model.tie_weights()
        model.apply_trainable_policy()
        return model

    # ----- images ---------------------------------------------------------------------------------------------------
    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        image_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        r"""
        Encode a batch's images as `forward` takes them and resample them into the latents the text attends to.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_images, 3, image_size, image_size)`):
                The images of each row, padded along `num_images`.
            image_mask (`torch.BoolTensor` of shape `(batch_size, num_images)`, *optional*):
                Which image slots hold an image; padding slots are not encoded. Defaults to every slot.
            output_hidden_states (`bool`, *optional*):
                Whether to return the vision tower's hidden states (embeddings and every layer), each of shape
                `(batch_size, num_images, sequence_length, hidden_size)` with zeros at padding slots.
            output_attentions (`bool`, *optional*):
                Whether to return the vision tower's attention weights, each of shape
                `(batch_size, num_images, num_heads, sequence_length, sequence_length)` with zeros at padding slots.
                Only implementations that compute them return them (e.g. `attn_implementation="eager"`).

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`]: `last_hidden_state`, the patch features
            `(batch_size, num_images, num_patches, hidden_size)` (CLIP's CLS token dropped, zeros at padding slots):
            with a frozen vision tower they depend on the image alone, so a catalogue can be encoded once and passed
            back as `forward`'s `image_features`. `pooler_output`, the resampled latents
            `(batch_size, num_images, num_latents, hidden_size)`. `hidden_states` and `attentions` when asked for.
        """
        _check_batched("pixel_values", pixel_values, 5)
        vision = self.config.vision_config
        if tuple(pixel_values.shape[2:]) != (3, vision.image_size, vision.image_size):
            raise ValueError(
                f"pixel_values must have shape (batch, num_images, 3, {vision.image_size}, {vision.image_size}); "
                f"got {tuple(pixel_values.shape)}."
            )
        batch, num_images = pixel_values.shape[:2]
        image_mask = _default_image_mask(pixel_values, image_mask)
        real = image_mask.flatten().to(pixel_values.device)
        num_patches = (vision.image_size // vision.patch_size) ** 2
        features = pixel_values.new_zeros(batch * num_images, num_patches, vision.hidden_size, dtype=self.dtype)
        tower = BaseModelOutputWithPooling()
        if real.any():
            tower = self.vision_tower(
                pixel_values=pixel_values.flatten(0, 1)[real].to(self.dtype),
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
            )
            # Flamingo resamples patch tokens only: CLIP's CLS token is dropped.
            features[real] = tower.last_hidden_state[:, 1:] if vision.model_type == "clip_vision_model" else (
                tower.last_hidden_state
            )
        features = features.view(batch, num_images, num_patches, vision.hidden_size)
        return BaseModelOutputWithPooling(
            last_hidden_state=features,
            pooler_output=self.get_media_latents(features, image_mask),
            hidden_states=_per_image_slot(tower.hidden_states, real, batch, num_images),
            attentions=_per_image_slot(tower.attentions, real, batch, num_images),
        )

    def get_media_latents(self, image_features: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """Resample `(B, N, P, D)` image features into `(B, N, L, D)` latents (padding slots are computed, unused)."""
        batch, num_images = image_mask.shape
        latents = self.resampler(image_features.flatten(0, 1))
        return latents.view(batch, num_images, *latents.shape[1:])

    def _check_images(self, input_ids: torch.Tensor, image_mask: torch.Tensor) -> None:
        if self.config.image_token_id is None:
            raise ValueError("Images were given but config.image_token_id is not set; set it from the processor.")
        tokens = (input_ids == self.config.image_token_id).sum(-1)
        images = image_mask.sum(-1).to(tokens.device)
        bad = (tokens != images).nonzero().flatten().tolist()
        if bad:
            b = bad[0]
            raise ValueError(
                f"Row {b} has {int(tokens[b])} <image> tokens but {int(images[b])} images; every image needs exactly "
                "one <image> token, in the same order."
            )

    def _check_text_only(self, input_ids: torch.Tensor, media_attention_mask: torch.Tensor | None) -> None:
        """Without images, no token may be an `<image>` or see an image: nothing would silently drop them."""
        if media_attention_mask is not None and media_attention_mask.any():
            raise ValueError(
                "media_attention_mask lets tokens see images, but no pixel_values, image_features or media_latents "
                "were given. A cache holds no images: pass the first call's media_latents."
            )
        if self.config.image_token_id is not None:
            self._check_images(input_ids, torch.zeros(input_ids.shape[0], 0, dtype=torch.bool))

    def _media_mask_for(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_mask: torch.Tensor,
        media_attention_mask: torch.Tensor | None,
        continuing: bool,
    ) -> torch.Tensor:
        """The `(B, T, N)` media mask of the tokens fed now: the given one, or one built from `input_ids`."""
        if media_attention_mask is None:
            if continuing:
                raise ValueError(
                    "Continuing from a cache with images needs the new tokens' media_attention_mask: which images a "
                    "token sees depends on the whole sequence. Pass build_media_attention_mask(all_input_ids, "
                    "config, image_mask)[:, -num_new_tokens:], as generate does."
                )
            self._check_images(input_ids, image_mask)
            return build_media_attention_mask(input_ids, self.config, image_mask, attention_mask)
        expected = (*input_ids.shape, image_mask.shape[1])
        if tuple(media_attention_mask.shape) != expected:
            raise ValueError(
                f"media_attention_mask must have shape (batch, tokens fed now, num_images) = {expected}; "
                f"got {tuple(media_attention_mask.shape)}."
            )
        return media_attention_mask

    def _encode_images(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        images: tuple[str, torch.Tensor],
        image_mask: torch.Tensor | None,
        media_attention_mask: torch.Tensor | None,
        continuing: bool,
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling | None, torch.Tensor]:
        """`(media_latents, image_outputs, media_attention_mask)` for the one image input given as `(name, tensor)`;
        `image_outputs` is `None` when the latents were given."""
        name, media = images
        if media.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{name} is batched for {media.shape[0]} rows but input_ids has {input_ids.shape[0]}.")
        image_mask = _default_image_mask(media, image_mask)
        media_attention_mask = self._media_mask_for(
            input_ids, attention_mask, image_mask, media_attention_mask, continuing
        )
        if name == "media_latents":
            return media, None, media_attention_mask
        if name == "pixel_values":
            image_outputs = self.get_image_features(media, image_mask)
        else:
            latents = self.get_media_latents(media, image_mask)
            image_outputs = BaseModelOutputWithPooling(last_hidden_state=media, pooler_output=latents)
        return image_outputs.pooler_output, image_outputs, media_attention_mask

    # ----- forward ----------------------------------------------------------------------------------------------------
    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_mask: torch.Tensor | None = None,
        image_features: torch.FloatTensor | None = None,
        media_latents: torch.FloatTensor | None = None,
        media_attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> UniMPCausalLMOutputWithPast | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_images, 3, image_size, image_size)`, *optional*):
            The images of each row, padded along `num_images`. Give at most one of `pixel_values`, `image_features`
            and `media_latents`.
        image_mask (`torch.BoolTensor` of shape `(batch_size, num_images)`, *optional*):
            Which image slots hold an image (the others are padding). Defaults to every slot.
        image_features (`torch.FloatTensor` of shape `(batch_size, num_images, num_patches, hidden_size)`, *optional*):
            Precomputed `get_image_features(...).last_hidden_state`, instead of `pixel_values` (a frozen vision
            tower's features depend on the image alone: a catalogue can be encoded once).
        media_latents (`torch.FloatTensor` of shape `(batch_size, num_images, num_latents, hidden_size)`, *optional*):
            Resampled latents (a previous output's `media_latents`), instead of either: `generate` passes them after
            its first step.
        media_attention_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length, num_images)`, *optional*):
            Which images each token fed now sees. Built from `input_ids` when omitted; needed when continuing from a
            cache, as the rows of `build_media_attention_mask` over the whole sequence for the new tokens.
        cache (`Cache`, *optional*, also accepted as the deprecated `past_key_values`):
            The language model's KV cache. It holds no images: to continue a sequence whose tokens see images, pass
            the first call's `media_latents` and the new tokens' `media_attention_mask`, as `generate` does.
        """
        if input_ids is None:
            raise ValueError("UniMP needs input_ids: the media mask is read from the <image> and chunk tokens.")
        _refuse_training_inputs(kwargs)
        images = _given_images(pixel_values=pixel_values, image_features=image_features, media_latents=media_latents)
        image_outputs = media_latents = None
        if images is None:
            self._check_text_only(input_ids, media_attention_mask)
        else:
            continuing = cache is not None and cache.get_seq_length() > 0
            media_latents, image_outputs, media_attention_mask = self._encode_images(
                input_ids, attention_mask, images, image_mask, media_attention_mask, continuing
            )
        if position_ids is None and attention_mask is not None:
            # Left padding: positions count real tokens only, as in one-by-one runs.
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]

        outputs = self._language_model(
            input_ids,
            inputs_embeds,
            logits_to_keep,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            media_latents=media_latents,
            media_attention_mask=media_attention_mask,
            **kwargs,
        )
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=outputs.logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return UniMPCausalLMOutputWithPast(
            loss=loss,
            logits=outputs.logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            media_latents=media_latents,
        )

    def _language_model(self, input_ids, inputs_embeds, logits_to_keep, **kwargs) -> CausalLMOutputWithPast:
        """Run the LM; with content item rows, item tokens read and are scored by `UniMPItemContent.rows`."""
        if self.item_content is None:
            return self.language_model(
                input_ids=None if inputs_embeds is not None else input_ids, inputs_embeds=inputs_embeds,
                logits_to_keep=logits_to_keep, return_dict=True, **kwargs,
            )
        embeddings = self.get_input_embeddings()
        rows = self.item_content.rows(embeddings.weight)
        inputs_embeds = embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        position = self.item_content.positions(input_ids, embeddings.weight.shape[0])
        item_embeds = rows[position.clamp(min=0)].to(inputs_embeds.dtype)
        inputs_embeds = torch.where((position >= 0).unsqueeze(-1), item_embeds, inputs_embeds)
        outputs = self.language_model.get_decoder()(inputs_embeds=inputs_embeds, return_dict=True, **kwargs)
        hidden = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.get_output_embeddings()(hidden)
        item_logits = (hidden @ rows.to(hidden.dtype).T).to(logits.dtype)
        logits = logits.index_copy(-1, self.item_content.token_ids, item_logits)
        return CausalLMOutputWithPast(logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states,
                                      attentions=outputs.attentions)

    # ----- content item rows ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def item_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(n, grid * grid * D)` pooled vision features of `n` item images `(n, 3, H, W)`: the content table's."""
        features = self.get_image_features(pixel_values[None]).last_hidden_state[0]
        side = int(features.shape[1] ** 0.5)
        grid = features.transpose(1, 2).reshape(len(features), -1, side, side)
        return F.adaptive_avg_pool2d(grid, self.config.item_image_grid).flatten(1).float()

    def add_item_content(self, token_ids: torch.Tensor, text_ids: torch.Tensor, image_features: torch.Tensor,
                         residual_std: float = 0.0) -> None:
        """Append items to the content table (token ids `(n,)`, text ids `(n, L)` padded with -1, pooled image
        features `(n, F)`, zeros where an item has no image). Their residuals start at N(0, residual_std): random
        for items about to be trained (as free rows start), zero for items added after training."""
        if self.item_content is None:
            raise ValueError("This model has free item rows (config.item_rows='free'): it has no content table.")
        known = set(self.item_content.token_ids.tolist()) & set(token_ids.tolist())
        if known:
            raise ValueError(f"Item tokens {sorted(known)[:5]} already have content rows.")
        self.item_content.grow(token_ids, text_ids, image_features, residual_std)
        self.config.num_content_items = len(self.item_content.token_ids)
        self.apply_trainable_policy()

    # ----- generation -------------------------------------------------------------------------------------------------
    def _prepare_model_inputs(self, *args, **kwargs) -> tuple[torch.Tensor, str | None, dict[str, Any]]:
        """`generate`'s prompt: one image input, and one `<image>` token per image (checked before any token is
        generated or proposed by an assistant: such `<image>` tokens have no image and see none). A prompt that
        continues a filled cache (an assistant's later rounds) holds accepted tokens and is not checked."""
        inputs, input_name, model_kwargs = super()._prepare_model_inputs(*args, **kwargs)
        images = _given_images(**{name: model_kwargs.get(name) for name in IMAGE_INPUTS})
        cache = model_kwargs.get("cache")
        if images is not None and input_name == "input_ids" and (cache is None or cache.get_seq_length() == 0):
            self._check_images(inputs, _default_image_mask(images[1], model_kwargs.get("image_mask")))
        return inputs, input_name, model_kwargs

    def prepare_inputs_for_generation(self, input_ids, *args, attention_mask=None, **kwargs) -> dict[str, Any]:
        """Feed the most processed image input kept (the first step's `media_latents` once there are some, else the
        images given, again if a cache was filled without them: an assistant's later rounds), and the media mask
        built from the whole sequence so far, cut to the tokens fed now (one, or an assistant's candidates)."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, *args, attention_mask=attention_mask, **kwargs)
        for name in IMAGE_INPUTS:
            model_inputs.pop(name, None)
        name = next((name for name in reversed(IMAGE_INPUTS) if kwargs.get(name) is not None), None)
        if name is not None and (images := _given_images(**{name: kwargs[name]})) is not None:
            model_inputs[name] = images[1]
            image_mask = model_inputs["image_mask"] = _default_image_mask(images[1], kwargs.get("image_mask"))
            full_mask = build_media_attention_mask(input_ids, self.config, image_mask, attention_mask)
            model_inputs["media_attention_mask"] = full_mask[:, -model_inputs["input_ids"].shape[1]:]
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        """Keep the visual latents of the first step: later steps reuse them instead of re-encoding the images."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if outputs.media_latents is not None:
            model_kwargs["media_latents"] = outputs.media_latents
        return model_kwargs


def _check_batched(name: str, media: torch.Tensor, dims: int) -> None:
    if media.dim() != dims:
        raise ValueError(f"{name} must be batched per row as (batch, num_images, ...); got shape {tuple(media.shape)}.")


def _refuse_training_inputs(kwargs: dict[str, Any]) -> None:
    """The processor's training-only outputs would reach the LM's keyword arguments and be ignored there."""
    if given := [name for name in TRAINING_INPUTS if name in kwargs]:
        raise ValueError(
            f"forward does not take {' or '.join(given)}: they are read by UniMPTrainer's loss, which pops them. "
            "Drop them before calling the model (evaluation.prompt_inputs does)."
        )


def _given_images(**media: torch.Tensor | None) -> tuple[str, torch.Tensor] | None:
    """The one image input given, as `(name, tensor)`: `None` if none is, or if it holds no image slot (a batch
    without images). Several given raise: which one the text should read would be a guess."""
    given = {name: tensor for name, tensor in media.items() if tensor is not None}
    if len(given) > 1:
        raise ValueError(
            f"Give one of pixel_values, image_features and media_latents, not {' and '.join(given)}: they are the "
            "same images at different stages (pixels, vision-tower features, resampled latents)."
        )
    if not given:
        return None
    (name, tensor), = given.items()
    _check_batched(name, tensor, 5 if name == "pixel_values" else 4)
    return None if tensor.shape[1] == 0 else (name, tensor)


def _per_image_slot(states: tuple[torch.Tensor, ...] | None, real: torch.Tensor, batch: int,
                    num_images: int) -> tuple[torch.Tensor, ...] | None:
    """Vision-tower outputs of the real images `(num_real, ...)` laid out per slot `(batch, num_images, ...)`."""
    if states is None:
        return None
    laid_out = []
    for state in states:
        full = state.new_zeros(batch * num_images, *state.shape[1:])
        full[real] = state
        laid_out.append(full.view(batch, num_images, *state.shape[1:]))
    return tuple(laid_out)


def _default_image_mask(media: torch.Tensor, image_mask: torch.Tensor | None) -> torch.Tensor:
    """The given `(B, N)` image mask, or one that marks every image slot real."""
    if image_mask is not None:
        return image_mask
    return torch.ones(media.shape[:2], dtype=torch.bool, device=media.device)


def _mask_rows_below(base: int):
    """A gradient hook that zeroes the gradient of rows `[0, base)`, so only rows added after them train."""

    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:base] = 0
        return grad

    return hook


__all__ = [
    "UniMPForConditionalGeneration",
    "UniMPPreTrainedModel",
    "UniMPCausalLMOutputWithPast",
    "build_media_attention_mask",
]
