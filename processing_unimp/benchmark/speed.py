"""Ranking speed: exact full ranking against the original's 10-beam search, with peak memory."""

from __future__ import annotations

import threading
import time

import psutil
import torch

from ..evaluation.tasks import answer_logits, prompt_inputs
from ..ranking_unimp import token_scores


class PeakMemory:
    """Peak resident memory of this process while the block runs, above its level at entry (MiB)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (self.peak - self.start) / 2**20


@torch.no_grad()
def ranking_speed(model, processor, samples, batch_size: int = 8) -> dict[str, float]:
    """Exact full-ranking top-10 vs the original's 10-beam search (string-matched to items), on the same model."""
    model.eval()
    token_to_item = {token: item for item, token in zip(processor.item_ids, processor.item_token_ids)}
    full, beam = [], []
    timings = {}
    for method in ("full_rank", "beam10"):
        start = time.perf_counter()
        with PeakMemory() as memory:
            for begin in range(0, len(samples), batch_size):
                inputs = prompt_inputs(processor, samples[begin : begin + batch_size], model.device)
                if method == "full_rank":
                    logits = token_scores(answer_logits(model, inputs), processor.item_token_ids)
                    full += [[processor.item_ids[i] for i in row] for row in logits.topk(10).indices.tolist()]
                else:
                    out = model.generate(**inputs, num_beams=10, num_return_sequences=10, max_new_tokens=2,
                                         do_sample=False, suppress_tokens=[processor.end_of_chunk_token_id])
                    first = out[:, inputs["input_ids"].shape[1]].view(-1, 10).tolist()
                    # The original decoded each beam to text and kept those naming a catalogue item.
                    beam += [list(dict.fromkeys(token_to_item[t] for t in row if t in token_to_item)) for row in first]
        timings[method] = (time.perf_counter() - start, memory.mib)
    targets = [s["target"]["item_id"] for s in samples]

    def hit(lists) -> float:
        return sum(t in top for t, top in zip(targets, lists)) / len(targets)

    return {
        "num_users": len(samples),
        "full_rank_users_per_s": len(samples) / timings["full_rank"][0],
        "beam10_users_per_s": len(samples) / timings["beam10"][0],
        "speedup": timings["beam10"][0] / timings["full_rank"][0],
        "top10_agreement": sum(len(set(a) & set(b)) for a, b in zip(full, beam)) / (10 * len(samples)),
        "full_rank_HR@10": hit(full),
        "beam10_HR@10": hit(beam),
        "beam10_valid_items_per_user": sum(map(len, beam)) / len(samples),
        "full_rank_peak_rss_mib": timings["full_rank"][1],
        "beam10_peak_rss_mib": timings["beam10"][1],
    }
