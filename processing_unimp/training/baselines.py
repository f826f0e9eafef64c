"""Sequential-recommendation baselines scored under UniMP's protocol (not shipped to the Hub).

Both score every catalogue item for a user, so they are ranked exactly like UniMP's item-token logits. Items are
indices `0 .. num_items - 1` (the processor's item-token order).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange


class PopularityRecommender:
    """Scores each item by its number of training interactions."""

    def __init__(self, num_items: int):
        self.counts = torch.zeros(num_items)

    def fit(self, sequences: Sequence[Sequence[int]]) -> "PopularityRecommender":
        for sequence in sequences:
            self.counts += torch.bincount(torch.as_tensor(sequence, dtype=torch.long), minlength=len(self.counts))
        return self

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        return self.counts.expand(len(histories), -1).clone()


@dataclass
class SASRecConfig:
    """SASRec (Kang & McAuley, 2018) trained with cross-entropy over the full catalogue (its strong variant)."""

    num_items: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 1
    max_length: int = 50
    dropout: float = 0.2


class SASRec(nn.Module):
    """Causal self-attention over a user's item sequence; index 0 of the embedding table is padding."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden_size, config.num_heads, config.hidden_size, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position of left-padded `(B, L)` sequences of item index + 1."""
        length = sequences.shape[1]
        positions = torch.arange(length, device=sequences.device)
        hidden = self.item_embedding(sequences) * self.config.hidden_size**0.5 + self.position_embedding(positions)
        # Blocked: future positions and padding; every position may see itself, so no softmax row is empty.
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=sequences.device), 1)
        blocked = (future | (sequences == 0).unsqueeze(1)) & ~torch.eye(length, dtype=torch.bool, device=sequences.device)
        blocked = blocked.repeat_interleave(self.config.num_heads, dim=0)
        return self.norm(self.encoder(self.dropout(hidden), mask=blocked))

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items `0 .. num_items - 1` (the padding row is dropped)."""
        return hidden @ self.item_embedding.weight[1:].T

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores of every item as the next one after each history."""
        self.eval()
        hidden = self(_left_pad(histories, self.config.max_length))
        return self.item_logits(hidden[:, -1])


def _left_pad(sequences: Sequence[Sequence[int]], max_length: int) -> torch.Tensor:
    """`(B, max_length)` tensor of the last items of each sequence, shifted by one (0 = padding), left-padded."""
    out = torch.zeros(len(sequences), max_length, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        tail = list(sequence)[-max_length:]
        if tail:
            out[row, max_length - len(tail):] = torch.as_tensor(tail) + 1
    return out


def train_sasrec(
    sequences: Sequence[Sequence[int]],
    config: SASRecConfig,
    epochs: int = 30,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    validation: Callable[[SASRec], float] | None = None,
    validate_every: int = 5,
) -> SASRec:
    """Train SASRec on every position of every training sequence (next-item cross-entropy).

    With `validation` (a score to maximise, e.g. validation NDCG@10), it is computed every `validate_every` epochs
    and the best weights are returned: the number of epochs is chosen on validation, never on test.
    """
    torch.manual_seed(seed)
    model = SASRec(config)
    usable = [s for s in sequences if len(s) >= 2]
    padded = _left_pad(usable, config.max_length + 1)
    inputs, targets = padded[:, :-1], padded[:, 1:] - 1  # target -1 = padding
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    best_score, best_state = -math.inf, None
    for epoch in trange(epochs, desc="training SASRec", disable=not progress):
        model.train()
        for batch in torch.randperm(len(usable), generator=generator).split(batch_size):
            logits = model.item_logits(model(inputs[batch]))
            loss = F.cross_entropy(logits.flatten(0, 1), targets[batch].flatten(), ignore_index=-1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if validation is not None and ((epoch + 1) % validate_every == 0 or epoch + 1 == epochs):
            score = validation(model)
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


__all__ = ["PopularityRecommender", "SASRec", "SASRecConfig", "train_sasrec"]
