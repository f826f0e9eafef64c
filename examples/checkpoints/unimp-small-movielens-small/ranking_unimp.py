"""Answers as catalogue entries: exact ranking over atomic answer tokens, and trie-constrained decoding.

An answer that is one token (an item, a rating, a selection slot) is ranked exactly: one forward pass to the
`<answer>` position scores every allowed token at once. An answer that spans several tokens (a set of selection
slots, or items named by multi-token strings) is decoded with beam search under `TrieLogitsProcessor`, which lets
every beam extend only a prefix of a valid answer, so that decoding can only ever yield a valid one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from transformers import LogitsProcessor


def token_scores(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """The logits of the answer tokens `token_ids` in each row of `logits` `(B, vocab)` or `(vocab,)`, in fp32.

    The one scoring of atomic answers (items, ratings, slots): rankings, evaluation and the pipeline all use it.
    """
    return logits.reshape(-1, logits.shape[-1])[:, list(token_ids)].float()


def tiered(scores: torch.Tensor, tiers: torch.Tensor) -> torch.Tensor:
    """`scores` `(B, n)` made to order by `tiers` `(B, n)` first (higher first) and by score within a tier: each
    tier is lifted above the whole finite score range of its row."""
    finite = scores.masked_fill(~scores.isfinite(), 0.0)
    span = finite.amax(-1, keepdim=True) - finite.amin(-1, keepdim=True) + 1.0
    return scores + tiers.to(scores.dtype) * span


def rank_tokens(
    logits: torch.Tensor,
    token_ids: Sequence[int],
    top_k: int | None = None,
    exclude: Sequence[Iterable[int]] | None = None,
    tiers: torch.Tensor | None = None,
) -> list[list[tuple[int, float]]]:
    """Rank the answer tokens `token_ids` by their logit in each row of `logits` `(B, vocab)`.

    Scores are probabilities under the softmax over `token_ids` alone (computed before exclusion, so a score does
    not depend on what else is excluded). `exclude[b]` holds positions in `token_ids` to leave out of row `b`;
    `tiers` `(B, len(token_ids))` ranks higher tiers first (`tiered`). Returns, per row, up to `top_k`
    `(position in token_ids, probability)` pairs, best first.
    """
    scores = token_scores(logits, token_ids)
    probabilities = scores.softmax(dim=-1)
    scores = scores.clone() if tiers is None else tiered(scores, tiers.to(scores.device))
    for row, positions in enumerate(exclude or ()):
        scores[row, list(positions)] = float("-inf")
    k = scores.shape[-1] if top_k is None else min(top_k, scores.shape[-1])
    top = scores.topk(k, dim=-1)
    return [
        [(position, float(probabilities[row, position]))
         for position, score in zip(positions, values) if score > float("-inf")]
        for row, (positions, values) in enumerate(zip(top.indices.tolist(), top.values.tolist()))
    ]


class TokenTrie:
    """A prefix tree over token-id sequences: which tokens may follow a prefix of a valid sequence."""

    def __init__(self, sequences: Iterable[Sequence[int]]):
        self._root: dict = {}
        self._ends: set[tuple[int, ...]] = set()
        for sequence in sequences:
            sequence = tuple(int(token) for token in sequence)
            if not sequence:
                raise ValueError("A TokenTrie sequence must have at least one token.")
            node = self._root
            for token in sequence:
                node = node.setdefault(token, {})
            self._ends.add(sequence)
        if not self._ends:
            raise ValueError("A TokenTrie needs at least one sequence.")

    def __contains__(self, sequence: Sequence[int]) -> bool:
        """Whether `sequence` is one of the valid sequences (not just a prefix of one)."""
        return tuple(int(token) for token in sequence) in self._ends

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def max_length(self) -> int:
        return max(map(len, self._ends))

    def next_tokens(self, prefix: Sequence[int]) -> tuple[list[int], bool] | None:
        """`(tokens that may follow prefix, whether prefix is itself complete)`, or None if it is no valid prefix."""
        node = self._root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return list(node), tuple(int(token) for token in prefix) in self._ends


class TrieLogitsProcessor(LogitsProcessor):
    """Constrain generation to the sequences of a `TokenTrie`, each followed by `eos_token_id`.

    Args:
        tries: one trie per batch row (each row's beams share it), or a single trie for every row.
        prompt_length: length of the (padded) prompt; tokens after it are the answer generated so far.
        eos_token_id: the token that ends an answer; allowed exactly when the answer so far is complete.

    A beam whose answer has left the trie (only a finished beam padded by `generate` can) may only emit
    `eos_token_id`, so that no score row is ever fully masked.
    """

    def __init__(self, tries: Sequence[TokenTrie] | TokenTrie, prompt_length: int, eos_token_id: int):
        self.tries = [tries] if isinstance(tries, TokenTrie) else list(tries)
        self.prompt_length = prompt_length
        self.eos_token_id = eos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] % len(self.tries):
            raise ValueError(f"{input_ids.shape[0]} generation rows cannot be split over {len(self.tries)} tries.")
        beams = input_ids.shape[0] // len(self.tries)
        allowed = torch.zeros_like(scores, dtype=torch.bool)
        for row, generated in enumerate(input_ids[:, self.prompt_length :].tolist()):
            step = self.tries[row // beams].next_tokens(generated)
            tokens, complete = step if step is not None else ([], True)
            allowed[row, tokens + ([self.eos_token_id] if complete else [])] = True
        return scores.masked_fill(~allowed, float("-inf"))


def answer_sequences(generated: torch.Tensor, prompt_length: int, eos_token_id: int) -> list[list[int]]:
    """The answer of each generated row: the tokens after the prompt, up to (without) the first `eos_token_id`."""
    answers = []
    for row in generated[:, prompt_length:].tolist():
        answers.append(row[: row.index(eos_token_id)] if eos_token_id in row else row)
    return answers


__all__ = ["TokenTrie", "TrieLogitsProcessor", "answer_sequences", "rank_tokens"]
