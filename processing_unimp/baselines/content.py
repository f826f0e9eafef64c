"""A content-aware SASRec, the reference of the new-item benchmark (not shipped to the Hub).

`ContentSASRecRecommender` is SASRec in the transductive setting of UniSRec and MoRec: an item's embedding is a
learned projection of the content vector the content kNN reads (`baselines.content_vectors`: text TF-IDF and image
pixels) plus an ID embedding. Only items seen in training have an ID part; an item the model never trained on is
embedded, and ranked, by its content alone. ID rows are dropped item by item while training (`id_dropout`), so the
content part must rank on its own too. `run_new_item_benchmark` scores every baseline under the new-item protocol
(`processing_unimp.data.splits.new_item_split`) on new-item targets, on the other targets and on all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .recommenders import SASRec, SASRecConfig, SASRecRecommender


@dataclass
class ContentSASRecConfig(SASRecConfig):
    """SASRec's configuration plus the content side: the chance of dropping an item's ID row at each forward pass
    while training (content must then rank it alone)."""

    id_dropout: float = 0.5


class ContentItemEmbedding(nn.Module):
    """Rows `0 .. num_items` (0 = padding) = ID embedding (items with an ID only) + projection of the content vector.

    `weight` is the whole table, so that SASRec's forward pass and its tied output layer read it unchanged.
    """

    def __init__(self, content: torch.Tensor, hidden_size: int, id_dropout: float):
        super().__init__()
        self.id_embedding = nn.Embedding(len(content) + 1, hidden_size, padding_idx=0)
        self.projection = nn.Linear(content.shape[1], hidden_size, bias=False)
        self.register_buffer("content", torch.cat([content.new_zeros(1, content.shape[1]), content.float()]))
        self.register_buffer("has_id", torch.zeros(len(content) + 1, dtype=torch.bool))
        self.id_dropout = id_dropout

    @property
    def weight(self) -> torch.Tensor:
        keep = self.has_id
        if self.training and self.id_dropout > 0:
            keep = keep & (torch.rand(len(keep), device=keep.device) >= self.id_dropout)
        return self.id_embedding.weight * keep[:, None] + self.projection(self.content)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.weight)


class ContentSASRec(SASRec):
    """SASRec whose item embedding (input and tied output) is `ContentItemEmbedding` of `content` (num_items, D)."""

    def __init__(self, config: ContentSASRecConfig, content: torch.Tensor):
        if len(content) != config.num_items:
            raise ValueError(f"ContentSASRec: {len(content)} content vectors for num_items={config.num_items}.")
        super().__init__(config)
        self.item_embedding = ContentItemEmbedding(content, config.hidden_size, config.id_dropout)
        self.item_embedding.apply(self._init_weights)


class ContentSASRecRecommender(SASRecRecommender):
    """`ContentSASRec` trained as `SASRecRecommender` trains SASRec (every training interaction a target, CE,
    validation NDCG@10 each epoch, early stopping, best weights restored); the items of the training sequences get
    ID rows, the others are ranked by content alone. The CE runs over the items of the training sequences only: an
    item added later is no negative of every training step (that pushes its content row, and the content rows like
    it, below every warm item: measured, new-item NDCG@10 0.0000 on fashion-shop)."""

    def __init__(self, config: ContentSASRecConfig, content: torch.Tensor):
        super().__init__(config)
        self.content = content

    def _build_model(self, sequences: Sequence[Sequence[int]]) -> ContentSASRec:
        """A `ContentSASRec` whose ID rows are those of the items in the training `sequences`."""
        model = ContentSASRec(self.config, self.content)
        trained = [item + 1 for sequence in sequences for item in sequence]
        model.item_embedding.has_id[torch.as_tensor(trained, dtype=torch.long)] = True
        return model

    def _training_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The catalogue while training: items without an ID row (new ones) are not in it yet."""
        known = self.model.item_embedding.has_id[1:]
        return self.model.item_logits(hidden).masked_fill(~known, -math.inf)


__all__ = ["ContentItemEmbedding", "ContentSASRec", "ContentSASRecConfig", "ContentSASRecRecommender"]
