"""Recommendation baselines under UniMP's protocol, each as strong as its reference implementation.

Every baseline is one class with `fit(train_sequences)` and `score(histories) -> (B, num_items)` over item indices
`0 .. num_items - 1`, the scoring interface of `protocol.py`, so that they are ranked exactly like UniMP.
Popularity, ItemKNN and SASRec follow RecBole 1.2.1 (its defaults, read from `recbole/properties/`); the content
baseline ranks items by the similarity of their text and image to the user's recent history.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..catalogue_unimp import words


class PopularityRecommender:
    """Scores each item by its number of training interactions (RecBole's Pop)."""

    def __init__(self, num_items: int):
        self.counts = torch.zeros(num_items)

    def fit(self, sequences: Sequence[Sequence[int]]) -> PopularityRecommender:
        for sequence in sequences:
            self.counts += torch.bincount(torch.as_tensor(sequence, dtype=torch.long), minlength=len(self.counts))
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        return self.counts.expand(len(histories), -1).clone()


class ItemKNN:
    """Item-based collaborative filtering as RecBole's ItemKNN: cosine similarity of the items' binary user vectors
    (`shrink` added to the denominator), each item keeps its `k` most similar items, and a user's score for item i
    sums the similarities of the history items among i's neighbours (defaults k=100, shrink=0)."""

    def __init__(self, num_items: int, k: int = 100, shrink: float = 0.0):
        self.num_items, self.k, self.shrink = num_items, k, shrink
        self.weights = torch.zeros(num_items, num_items)

    def fit(self, sequences: Sequence[Sequence[int]]) -> ItemKNN:
        matrix = torch.zeros(len(sequences), self.num_items)
        for row, sequence in enumerate(sequences):
            matrix[row, list(sequence)] = 1.0
        overlap = matrix.T @ matrix
        norms = overlap.diagonal().sqrt()
        similarity = overlap / (norms[:, None] * norms[None, :] + self.shrink + 1e-6)
        similarity.fill_diagonal_(0.0)
        # Column i keeps the k items most similar to item i (RecBole's per-item top-k).
        top = similarity.topk(min(self.k, self.num_items), dim=0)
        self.weights = torch.zeros_like(similarity).scatter_(0, top.indices, top.values)
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        users = torch.zeros(len(histories), self.num_items)
        for row, history in enumerate(histories):
            users[row, list(history)] = 1.0
        return users @ self.weights


def content_vectors(items, fields: Sequence[str] = ("text", "image"), image_side: int = 14) -> torch.Tensor:
    """One L2-normalised vector per item: TF-IDF of its title, categories and brand words, and/or its image's
    grey-level pixels (mean-centred, at `image_side`²) — blocks weighted equally."""
    from PIL import Image

    from ..image_processing_unimp import load_rgb_image

    blocks = []
    if "text" in fields:
        documents = [words(" ".join([title or "", *(categories or []), brand or ""]))
                     for title, categories, brand in zip(items["title"], items["categories"], items["brand"])]
        vocabulary = sorted(set().union(*documents))
        column = {word: j for j, word in enumerate(vocabulary)}
        text = torch.zeros(len(documents), len(vocabulary))
        for row, document in enumerate(documents):
            text[row, [column[w] for w in document]] = 1.0
        text *= torch.log(len(documents) / (1 + text.sum(0)))  # idf
        blocks.append(text)
    if "image" in fields:
        if "image" not in items.column_names:
            raise ValueError("The content baseline's `image` field needs an `image` column in the items table.")
        pixels = torch.zeros(len(items), image_side * image_side)
        for row, image in enumerate(items["image"]):
            if image is not None:
                grey = load_rgb_image(image, items[row]["item_id"]).convert("L").resize((image_side, image_side),
                                                                                        Image.BILINEAR)
                pixels[row] = torch.from_numpy(np.asarray(grey, dtype=np.float32).reshape(-1) / 255.0)
        has_image = pixels.abs().sum(1) > 0
        pixels[has_image] -= pixels[has_image].mean(0)
        blocks.append(pixels)
    if not blocks:
        raise ValueError(f"content fields must include 'text' and/or 'image', got {list(fields)}.")
    return torch.cat([F.normalize(b, dim=1) for b in blocks], dim=1) / math.sqrt(len(blocks))


class ContentRecommender:
    """Ranks items by the cosine of their content vector with the user's profile: a recency-weighted mean of the
    last `window` history items' vectors (weight `decay`^age). Reads no interaction but the user's own."""

    def __init__(self, vectors: torch.Tensor, window: int = 20, decay: float = 0.8):
        self.vectors, self.window, self.decay = vectors, window, decay

    def fit(self, sequences: Sequence[Sequence[int]]) -> ContentRecommender:
        return self  # nothing to learn: the profile is the user's own history

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        profiles = torch.zeros(len(histories), self.vectors.shape[1])
        for row, history in enumerate(histories):
            recent = list(history)[-self.window:]
            if recent:
                weights = self.decay ** torch.arange(len(recent) - 1, -1, -1, dtype=torch.float32)
                profiles[row] = weights @ self.vectors[recent]
        return F.normalize(profiles, dim=1) @ self.vectors.T


@dataclass
class SASRecConfig:
    """SASRec (Kang & McAuley, 2018) with RecBole's defaults (`SASRec.yaml`, `overall.yaml`): CE over the catalogue."""

    num_items: int
    hidden_size: int = 64
    inner_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    hidden_dropout: float = 0.5
    attention_dropout: float = 0.5
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_length: int = 50  # RecBole's MAX_ITEM_LIST_LENGTH
    learning_rate: float = 1e-3
    batch_targets: int = 2048  # RecBole's train_batch_size: targets (prefix samples) per step
    max_epochs: int = 300
    patience: int = 10  # RecBole's stopping_step: epochs without a better validation score
    seed: int = 0


class SASRecBlock(nn.Module):
    """One post-LayerNorm transformer block as RecBole's (attention, then GELU feed-forward, residual + LN each)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.attention = nn.MultiheadAttention(config.hidden_size, config.num_heads, dropout=config.attention_dropout,
                                               batch_first=True)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(nn.Linear(config.hidden_size, config.inner_size), nn.GELU(),
                                          nn.Linear(config.inner_size, config.hidden_size))
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(hidden, hidden, hidden, attn_mask=causal, need_weights=False)
        hidden = self.attention_norm(hidden + self.dropout(attended))
        return self.feed_forward_norm(hidden + self.dropout(self.feed_forward(hidden)))


class SASRec(nn.Module):
    """Causal self-attention over right-padded `(B, L)` sequences of item index + 1 (0 = padding)."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_layers))
        self.apply(self._init_weights)
        with torch.no_grad():  # nn.MultiheadAttention's packed projection is a bare Parameter
            for block in self.blocks:
                block.attention.in_proj_weight.normal_(0.0, config.initializer_range)
                block.attention.in_proj_bias.zero_()

    def _init_weights(self, module: nn.Module) -> None:
        """RecBole's init: N(0, 0.02) weights, zero biases, unit LayerNorm (PyTorch's N(0, 1) embeddings diverge)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position; position p sees positions <= p only (padding lies after the items)."""
        length = sequences.shape[1]
        positions = torch.arange(length, device=sequences.device)
        hidden = self.dropout(self.norm(self.item_embedding(sequences) + self.position_embedding(positions)))
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=sequences.device), 1)
        for block in self.blocks:
            hidden = block(hidden, causal)
        return hidden

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items `0 .. num_items - 1` (tied to the input embeddings; the padding row is dropped)."""
        return hidden @ self.item_embedding.weight[1:].T


def training_windows(sequences: Sequence[Sequence[int]], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of `max_length` inputs with next-item targets, in which every training interaction but each user's
    first is a target exactly once, with at least `max_length // 2` items of context (or all there are).

    RecBole trains on every prefix (one sample per target, up to `max_length` items of context); windows with a
    stride of half their length give every target the same kind of context at 2 tokens per target instead of up
    to `max_length`. Returns right-padded inputs `(W, max_length)` of item index + 1 and targets (-1 = no target).
    """
    stride = max_length // 2
    inputs, targets = [], []
    for sequence in sequences:
        sequence = list(sequence)
        start, covered = 0, 1  # covered: index of the first interaction not yet a target
        while covered < len(sequence):
            window = sequence[start : start + max_length + 1]
            row_inputs = torch.zeros(max_length, dtype=torch.long)
            row_targets = torch.full((max_length,), -1, dtype=torch.long)
            row_inputs[: len(window) - 1] = torch.as_tensor(window[:-1]) + 1
            for position in range(len(window) - 1):
                if start + position + 1 >= covered:
                    row_targets[position] = window[position + 1]
            inputs.append(row_inputs)
            targets.append(row_targets)
            covered = start + len(window)
            start += stride if start + max_length + 1 < len(sequence) else len(sequence)
    return torch.stack(inputs), torch.stack(targets)


def _right_pad(histories: Sequence[Sequence[int]], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `max_length` items of each history as right-padded index + 1, and the last real position."""
    out = torch.zeros(len(histories), max_length, dtype=torch.long)
    last = torch.zeros(len(histories), dtype=torch.long)
    for row, history in enumerate(histories):
        tail = list(history)[-max_length:]
        if tail:
            out[row, : len(tail)] = torch.as_tensor(tail) + 1
        last[row] = max(len(tail) - 1, 0)
    return out, last


class SASRecRecommender:
    """SASRec trained as RecBole trains it: Adam, CE over the whole catalogue, validation NDCG@10 every epoch,
    early stopping after `patience` epochs without improvement, best weights restored."""

    def __init__(self, config: SASRecConfig):
        self.config = config
        self.model: SASRec | None = None
        self.history: list[dict[str, float]] = []

    def fit(self, sequences: Sequence[Sequence[int]], validation: Callable[[SASRecRecommender], float] | None = None,
            progress: bool = True) -> SASRecRecommender:
        config = self.config
        torch.manual_seed(config.seed)
        self.model = self._build_model(sequences)
        inputs, targets = training_windows([s for s in sequences if len(s) >= 2], config.max_length)
        per_window = (targets >= 0).sum().item() / len(inputs)
        batch_windows = max(1, round(config.batch_targets / per_window))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        generator = torch.Generator().manual_seed(config.seed)
        best_score, best_state, stale = -math.inf, None, 0
        bar = tqdm(range(config.max_epochs), desc=f"training {type(self.model).__name__}", disable=not progress)
        for epoch in bar:
            start = time.perf_counter()
            self.model.train()
            total = 0.0
            for batch in torch.randperm(len(inputs), generator=generator).split(batch_windows):
                batch_targets = targets[batch]
                hidden = self.model(inputs[batch])[batch_targets >= 0]
                loss = F.cross_entropy(self._training_logits(hidden), batch_targets[batch_targets >= 0])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            record = {"epoch": epoch + 1, "loss": total / math.ceil(len(inputs) / batch_windows),
                      "seconds": time.perf_counter() - start}
            if validation is not None:
                record["validation"] = validation(self)
                if record["validation"] > best_score:
                    best_score, best_state, stale = record["validation"], copy.deepcopy(self.model.state_dict()), 0
                else:
                    stale += 1
            self.history.append(record)
            bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if validation is not None and stale >= config.patience:
                break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self

    def _build_model(self, sequences: Sequence[Sequence[int]]) -> SASRec:
        """The network `fit` trains (seeded just before); subclasses read the training `sequences`."""
        return SASRec(self.config)

    def _training_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits the training cross-entropy runs over: the whole catalogue."""
        return self.model.item_logits(hidden)

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError("SASRecRecommender.score before fit.")
        was_training = self.model.training
        self.model.eval()
        sequences, last = _right_pad(histories, self.config.max_length)
        hidden = self.model(sequences)[torch.arange(len(histories)), last]
        self.model.train(was_training)
        return self.model.item_logits(hidden)


__all__ = ["ContentRecommender", "ItemKNN", "PopularityRecommender", "SASRec", "SASRecConfig", "SASRecRecommender",
           "content_vectors", "training_windows"]
