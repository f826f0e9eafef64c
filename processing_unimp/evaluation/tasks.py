"""Evaluate a UniMP model on task samples, by exact ranking and teacher-forced scoring (not shipped to the Hub).

Recommendation and search rank every catalogue item at once: one forward pass over the prompt, whose last token is
`<answer>`, scores every item token (the original code ran a 10-beam search and string-matched its outputs).
Work is split across processes and the per-sample records gathered before any metric is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..generation_unimp import EXPLANATION_MAX_NEW_TOKENS
from ..ranking_unimp import tiered, token_scores
from ..schema_unimp import item_id_of
from .metrics import paired_rmse_difference, ranking_metrics, rating_metrics, selection_metrics, text_metrics
from .protocol import gather, process_batches, rank_targets


def prompt_inputs(processor, samples: Sequence[Mapping[str, Any]], device) -> dict[str, torch.Tensor]:
    """Model inputs of the samples as inference prompts (answers removed), left-padded, on `device`."""
    inputs = processor([_prompt(sample) for sample in samples], padding_side="left")
    return {k: v.to(device) for k, v in inputs.items() if k not in ("labels", "token_kinds", "task_ids")}


def _prompt_batches(model, processor, samples, batch_size: int, description: str, accelerator):
    """Yield (batch samples, prompt inputs) for this process's share of the samples (`protocol.process_batches`: a
    process whose share has run out gets an empty batch with one sample's inputs; run the model on them and drop the
    result)."""
    device = next(model.parameters()).device
    for rows in process_batches(len(samples), batch_size, accelerator, description, progress=True):
        batch = [samples[row] for row in rows]
        yield batch, prompt_inputs(processor, batch or [samples[0]], device)


def _prompt(sample: Mapping[str, Any]) -> dict[str, Any]:
    """The sample as an inference prompt: no answer; rate_explain keeps the item to rate, without its rating."""
    target = sample.get("target")
    keep = sample["task"] == "rate_explain" and target is not None
    return {**sample, "target": {"item_id": target["item_id"]} if keep else None, "answer": None}


@torch.no_grad()
def answer_logits(model, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Next-token logits at the last prompt position (`<answer>`): `(B, vocab)`."""
    return model(**inputs, logits_to_keep=1).logits[:, -1].float()


class UniMPScorer:
    """UniMP under the protocol's scoring interface (`protocol.Scorer`, RecBole's `full_sort_predict`): each history
    of item indices (`processor.item_ids` order) becomes a recommend prompt, or a search prompt with its query, and
    the item tokens' logits at its `<answer>` position score every catalogue item."""

    def __init__(self, model, processor):
        self.model = model.eval()
        self.processor = processor

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]], queries: Sequence[str | None] | None = None) -> torch.Tensor:
        """`(B, num_items)` scores; `queries[b]` (None for none) makes history `b` a search prompt."""
        item_ids = self.processor.item_ids
        queries = queries if queries is not None else [None] * len(histories)
        samples = [{"task": "recommend" if query is None else "search", "query": query,
                    "history": [item_ids[i] for i in history]} for history, query in zip(histories, queries)]
        inputs = prompt_inputs(self.processor, samples, next(self.model.parameters()).device)
        scores = token_scores(answer_logits(self.model, inputs), self.processor.item_token_ids)
        if any(query is not None for query in queries):  # search: query-word tiers first (processor.query_tiers)
            scores = tiered(scores, self.processor.query_tiers(queries).to(scores.device))
        return scores


def ranking_ranks(
    model,
    processor,
    samples: Sequence[Mapping[str, Any]],
    batch_size: int = 32,
    exclude_seen: bool = True,
    accelerator=None,
) -> torch.Tensor:
    """1-based rank of each sample's target among all catalogue items (recommend or search samples), gathered from
    every process (in sample order with one process): the samples as item-index histories (and queries), ranked by
    `UniMPScorer` through the protocol's one ranking path (`protocol.rank_targets`).

    As `protocol.evaluate_scorer`: the sample's history items are excluded from the ranking unless `exclude_seen`
    is False (give the full history, e.g. `LeaveOneOut.samples`, so that every seen item is excluded).
    """
    index = {item_id: i for i, item_id in enumerate(processor.item_ids)}
    histories = [[index[item_id_of(h)] for h in s["history"] if item_id_of(h) in index] for s in samples]
    targets = [index[s["target"]["item_id"]] for s in samples]
    queries = [s.get("query") if s["task"] == "search" else None for s in samples]
    return rank_targets(UniMPScorer(model, processor), histories, targets, exclude_seen, batch_size,
                        queries if any(q is not None for q in queries) else None, accelerator, progress=True)


def evaluate_ranking(
    model,
    processor,
    samples: Sequence[Mapping[str, Any]],
    batch_size: int = 32,
    exclude_seen: bool = True,
    accelerator=None,
) -> dict[str, float]:
    """HR/NDCG/MRR@{1,5,10,20} of the target item among all catalogue items (`ranking_ranks`)."""
    return ranking_metrics(ranking_ranks(model, processor, samples, batch_size, exclude_seen, accelerator))


def rating_predictions(
    model, processor, samples: Sequence[Mapping[str, Any]], batch_size: int = 32, accelerator=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: the expected rating (softmax over rating tokens), the most likely one, and the true one; in
    `samples` order on one process (gathered from several, the shards follow each other)."""
    model.eval()
    values = torch.tensor(processor.rating_values)
    records: list[tuple[float, float, float]] = []
    for batch, inputs in _prompt_batches(model, processor, samples, batch_size, "rating", accelerator):
        logits = answer_logits(model, inputs).cpu()
        if not batch:
            continue
        expected = processor.expected_rating(logits)
        most_likely = values[processor.rating_distribution(logits).argmax(-1)]
        truth = [float(s["target"]["rating"]) for s in batch]
        records += list(zip(expected.tolist(), most_likely.tolist(), truth))
    expected, most_likely, truth = torch.tensor(gather(records, accelerator)).T
    return expected, most_likely, truth


def evaluate_rating(
    model, processor, samples: Sequence[Mapping[str, Any]], batch_size: int = 32, accelerator=None,
    reference: torch.Tensor | None = None,
) -> dict[str, Any]:
    """RMSE/MAE of the expected rating (softmax over rating tokens) and of the most likely rating; with `reference`
    (another predictor's rating per sample, e.g. the user mean), also `vs_reference`: the expected rating's RMSE
    minus the reference's, paired, with its bootstrap standard error (is the gap beyond the noise?)."""
    if reference is not None and accelerator is not None and accelerator.num_processes > 1:
        raise ValueError("evaluate_rating's `reference` pairs ratings with samples in order: run it on one process.")
    expected, most_likely, truth = rating_predictions(model, processor, samples, batch_size, accelerator)
    metrics = {**rating_metrics(expected, truth, "expected_"), **rating_metrics(most_likely, truth, "argmax_")}
    if reference is not None:
        metrics["vs_reference"] = paired_rmse_difference(expected, reference, truth)
    return metrics


def evaluate_explanations(
    model, processor, samples: Sequence[Mapping[str, Any]], batch_size: int = 16,
    max_new_tokens: int = EXPLANATION_MAX_NEW_TOKENS,
    accelerator=None,
) -> dict[str, float]:
    """BLEU-1/4 and ROUGE-1/2/L of greedy explanations against the reference ones (samples that have one)."""
    model.eval()
    samples = [s for s in samples if s["target"].get("explanation")]
    records: list[tuple[str, str]] = []
    for batch, inputs in _prompt_batches(model, processor, samples, batch_size, "explanations", accelerator):
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                   suppress_tokens=[processor.end_of_chunk_token_id],
                                   synced_gpus=accelerator is not None and accelerator.num_processes > 1)
        new = generated[:, inputs["input_ids"].shape[1]:].cpu()
        records += [(processor.decode_explanation(row), s["target"]["explanation"]) for row, s in zip(new, batch)]
    records = gather(records, accelerator)
    return {**text_metrics([h for h, _ in records], [r for _, r in records]), "num_explanations": len(records)}


def evaluate_selection(
    model, processor, samples: Sequence[Mapping[str, Any]], batch_size: int = 32, accelerator=None
) -> dict[str, float]:
    """Precision/recall/F1 of the most likely slot as the selected item (every sample has >= 1 positive)."""
    model.eval()
    records: list[tuple[list[str], list[str]]] = []
    for batch, inputs in _prompt_batches(model, processor, samples, batch_size, "selection", accelerator):
        logits = token_scores(answer_logits(model, inputs), processor.slot_token_ids).cpu()
        if not batch:
            continue
        for row, sample in zip(logits, batch):
            candidates = list(sample["candidates"])
            row = row[: len(candidates)]
            records.append(([candidates[int(row.argmax())]], list(sample["answer"])))
    records = gather(records, accelerator)
    return selection_metrics([set(p) for p, _ in records], [set(g) for _, g in records])


__all__ = [
    "UniMPScorer",
    "answer_logits",
    "evaluate_explanations",
    "evaluate_ranking",
    "evaluate_rating",
    "evaluate_selection",
    "prompt_inputs",
    "ranking_ranks",
    "rating_predictions",
]
