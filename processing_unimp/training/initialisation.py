"""Model initialisation for training (not shipped to the Hub): a preset sized for a processor, and the new token rows
(item tokens, image-code tokens) started from content instead of at random.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from modeling_unimp.configuration_unimp import UniMPConfig
from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration

from ..image_processing_unimp import load_rgb_image


def unimp_for_processor(preset: str, processor, **overrides) -> UniMPForConditionalGeneration:
    """A from-scratch UniMP preset sized for `processor`: its vocabulary and special-token ids.

    The processor's images must have the preset's `vision_config.image_size`.
    """
    tokenizer = processor.tokenizer
    text = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = UniMPConfig.from_preset(
        preset,
        text_config={**text, **overrides.pop("text_config", {})},
        image_token_id=processor.image_token_id,
        end_of_chunk_token_id=processor.end_of_chunk_token_id,
        answer_token_id=processor.answer_token_id,
        **overrides,
    )
    return UniMPForConditionalGeneration(config)


def _token_matrices(model) -> list[torch.Tensor]:
    """The input embedding matrix, and the output one unless it is tied to it."""
    matrices = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())}
    return list(matrices.values())


def _standardised(rows: torch.Tensor) -> torch.Tensor:
    """Rows centred over the catalogue and scaled to unit standard deviation (overall)."""
    rows = rows - rows.mean(0, keepdim=True)
    return rows / rows.std().clamp(min=1e-12)


def interaction_factors(item_ids: Sequence[str], interactions: Iterable[tuple[str, str]], rank: int,
                        seed: int = 0, dense_max_cells: int = 2**25) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's factor in a rank-`rank` truncated SVD of the (user x item) interaction matrix (PureSVD: rows
    scaled to unit length, factors `V * sqrt(S)`): `(factors (num_items, rank), has_interactions (num_items,))`.

    Items that the same users consumed get close factors; items never interacted with get zeros. Pass train
    interactions only, as `(user_id, item_id)` pairs. A matrix of at most `dense_max_cells` cells (the bundled
    datasets') is factorised dense, which reproduces the benchmark rows bit for bit; a larger one stays sparse.
    """
    if rank < 1:
        raise ValueError(f"The interaction SVD's rank (--item-init-interaction-rank) must be >= 1, got {rank}.")
    column = {item_id: index for index, item_id in enumerate(item_ids)}
    users: dict[str, int] = {}
    cells = {(users.setdefault(user, len(users)), column[item]) for user, item in interactions if item in column}
    rank = min(rank, len(users), len(item_ids))
    has_interactions = torch.zeros(len(item_ids), dtype=torch.bool)
    if not cells:
        return torch.zeros(len(item_ids), max(rank, 1)), has_interactions
    index = torch.tensor(sorted(cells)).T
    if len(users) * len(item_ids) <= dense_max_cells:
        matrix = torch.zeros(len(users), len(item_ids))
        matrix[tuple(index)] = 1.0
        matrix = matrix / matrix.norm(dim=1, keepdim=True)
    else:
        per_user = torch.bincount(index[0], minlength=len(users)).float()
        matrix = torch.sparse_coo_tensor(index, per_user[index[0]].rsqrt(), (len(users), len(item_ids)),
                                         check_invariants=True, is_coalesced=True)
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws its start from the global generator: seed a copy
        torch.manual_seed(seed)
        _, singular, v = torch.svd_lowrank(matrix, q=rank, niter=4)
    has_interactions[index[1]] = True
    return v * singular.sqrt(), has_interactions


@torch.no_grad()
def item_content_rows(
    model,
    processor,
    fields: Sequence[str] = ("title",),
    image_weight: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    interactions: Iterable[tuple[str, str]] = (),
    interaction_weight: float = 0.0,
    interaction_rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A content start for every item token: `(rows (num_items, hidden), has_content (num_items,) bool)`.

    Per item, in `processor.item_ids` order: the mean input-embedding row of the tokens of its `fields` text (each
    field as the chunk prints it), plus `image_weight` times a fixed seeded random projection of its image's
    vision-tower features (mean over patches; items without an image get none), plus `interaction_weight` times
    a fixed random projection of its rank-`interaction_rank` `interaction_factors` (default rank: the hidden size) in
    the train `(user_id, item_id)` pairs (a collaborative start: what SASRec must learn from scratch), plus `noise`
    times a seeded Gaussian, which separates items whose content is identical (fashion-shop has 90 distinct titles
    for 2,305 items). Each part is standardised over the catalogue first, and the sum is scaled to the embedding's
    std.
    """
    weight = model.get_input_embeddings().weight
    catalogue = processor.catalogue
    attributes = [dict(catalogue[item_id]) if catalogue is not None and item_id in catalogue else {}
                  for item_id in processor.item_ids]
    texts = [" ".join(str(a.get(f) if not isinstance(a.get(f), (list, tuple)) else " ".join(map(str, a[f])))
                      for f in fields if a.get(f) is not None) for a in attributes]
    encoded = processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if fields else [[] for _ in texts]
    has_text = torch.tensor([bool(ids) for ids in encoded])
    rows = torch.zeros(len(texts), weight.shape[1])
    text = torch.stack([weight[ids].float().mean(0) if ids else weight.new_zeros(weight.shape[1]).float()
                        for ids in encoded])
    if has_text.any():
        rows[has_text] = _standardised(text[has_text])
    generator = torch.Generator().manual_seed(seed)
    images = [(row, a["image"]) for row, a in enumerate(attributes) if a.get("image") is not None]
    has_image = torch.zeros(len(texts), dtype=torch.bool)
    if image_weight and images:
        device = next(model.parameters()).device
        features = []
        for start in range(0, len(images), batch_size):
            part = [load_rgb_image(image, processor.item_ids[row]) for row, image in images[start : start + batch_size]]
            pixels = processor.image_processor(part, return_tensors="pt")["pixel_values"].to(device)
            features.append(model.get_image_features(pixels[None]).last_hidden_state[0].float().mean(1).cpu())
        features = torch.cat(features)
        projection = torch.randn(features.shape[1], weight.shape[1], generator=generator)
        index = torch.tensor([row for row, _ in images])
        rows[index] += image_weight * _standardised(_standardised(features) @ projection)
        has_image[index] = True
    has_interactions = torch.zeros(len(texts), dtype=torch.bool)
    if interaction_weight:
        rank = weight.shape[1] if interaction_rank is None else interaction_rank
        factors, has_interactions = interaction_factors(processor.item_ids, interactions, rank, seed)
        projection = torch.randn(factors.shape[1], weight.shape[1], generator=generator)
        projected = _standardised(factors[has_interactions]) @ projection
        rows[has_interactions] += interaction_weight * _standardised(projected)
    if noise:
        rows += noise * torch.randn(rows.shape, generator=generator)
    rows = rows / rows.std().clamp(min=1e-12) * weight.float().std()
    return rows, has_text | has_image | has_interactions | bool(noise)


@torch.no_grad()
def init_item_tokens_from_content(model, processor, fields: Sequence[str] = ("title",), image_weight: float = 0.0,
                                  noise: float = 0.0, seed: int = 0, interactions: Iterable[tuple[str, str]] = (),
                                  interaction_weight: float = 0.0, interaction_rank: int | None = None) -> int:
    """Start each item token's embedding (and output) row at `item_content_rows`; returns how many were set.

    Items with similar content then start close and share what is learnt about their neighbours; `noise` keeps items
    with identical content apart (their rows would otherwise start equal and only separate slowly).
    """
    rows, has_content = item_content_rows(model, processor, fields, image_weight, noise, seed,
                                          interactions=interactions, interaction_weight=interaction_weight,
                                          interaction_rank=interaction_rank)
    token_rows = torch.tensor(processor.item_token_ids)[has_content]
    for matrix in _token_matrices(model):
        matrix[token_rows] = rows[has_content].to(matrix.dtype).to(matrix.device)
    return int(has_content.sum())


@torch.no_grad()
def init_item_residuals_from_interactions(model, processor, interactions: Iterable[tuple[str, str]],
                                          rank: int | None = None, seed: int = 0) -> int:
    """Start the content rows' per-item residuals at the collaborative part of `item_content_rows` (a projection of
    each item's interaction-SVD factor, at the embedding's scale), the start that serves free rows best on
    movielens-small; items without train interactions keep theirs. Returns how many were set."""
    rows, has_interactions = item_content_rows(model, processor, fields=(), seed=seed, interactions=interactions,
                                               interaction_weight=1.0, interaction_rank=rank)
    residual = model.item_content.residual
    residual[has_interactions] = rows[has_interactions].to(residual.dtype).to(residual.device)
    return int(has_interactions.sum())


@torch.no_grad()
def init_image_code_tokens(model, processor, image_tokenizer, seed: int = 0) -> None:
    """Start each `<img_k>` row at a fixed random projection of VQ codebook vector k, at the embedding's scale, so
    that codes that decode alike start close."""
    weight = model.get_input_embeddings().weight
    codebook = image_tokenizer.quantize.embedding.weight.detach().float()
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(codebook.shape[1], weight.shape[1], generator=generator)
    projected = (codebook - codebook.mean(0)) @ projection
    rows = projected / projected.std() * weight.std()
    for matrix in _token_matrices(model):
        matrix[processor.image_code_token_ids] = rows.to(matrix.dtype)


__all__ = [
    "init_image_code_tokens",
    "init_item_tokens_from_content",
    "interaction_factors",
    "item_content_rows",
    "unimp_for_processor",
]
