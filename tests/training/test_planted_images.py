"""A planted dataset where only the images carry the signal: the next item is fixed by the colour of the previous
item's picture, never by its id (test sources are items never seen in training) nor its title (all the same)."""

import numpy as np
import pytest
import torch
from PIL import Image

from processing_unimp import UniMPProcessor
from processing_unimp.evaluation.tasks import evaluate_ranking
from processing_unimp.training.initialisation import unimp_for_processor
from processing_unimp.training.packing import pack_histories
from processing_unimp.training.trainer import unimp_loss

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]
CLASSES = len(COLOURS)


def planted(with_images: bool, sources: int = 3700):
    rng = np.random.default_rng(0)

    def picture(pattern: int):
        """A 16x16 picture of one of `CLASSES` colours, with pixel noise."""
        pixels = np.array(COLOURS[pattern], dtype=float) + rng.integers(-30, 31, (16, 16, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)) if with_images else None

    items = [{"item_id": f"t{c}", "title": "item"} for c in range(CLASSES)]
    items += [{"item_id": f"s{k:02d}", "title": "item", "image": picture(k % CLASSES)} for k in range(sources)]
    processor = UniMPProcessor.from_catalogue(items, vocab_size=80, image_size=16, history_ids="before")
    train, test = [], []
    for k in range(sources):
        pair = [{"user_id": f"u{k}", "item_id": f"s{k:02d}", "timestamp": 0},
                {"user_id": f"u{k}", "item_id": f"t{k % CLASSES}", "timestamp": 1}]
        (train if k < sources - 100 else test).append(pair)
    interactions = [row for pair in train for row in pair]
    samples = [{"task": "recommend", "user_id": pair[0]["user_id"], "history": [pair[0]["item_id"]],
                "target": {"item_id": pair[1]["item_id"]}} for pair in test]
    return processor, interactions, samples


def train_and_rank(with_images: bool, steps: int = 200, batch_size: int = 12) -> float:
    processor, interactions, test = planted(with_images)
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor, answer_media="own_chunk")
    encodings = pack_histories(processor, interactions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):  # each source item is seen once: its id cannot be memorised
        start = step * batch_size % len(encodings)
        batch = processor.pad(encodings[start : start + batch_size])
        labels = batch.pop("labels")
        batch.pop("token_kinds"), batch.pop("task_ids")
        # Supervise the next-item targets (the second id of each pair); the first id has no context to come from.
        labels[:, :3] = -100
        loss = unimp_loss(model(**batch).logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return evaluate_ranking(model, processor, test, batch_size=12)["HR@1"]


@pytest.mark.parametrize("with_images, low, high", [(True, 0.9, 1.0), (False, 0.0, 0.5)])
def test_next_item_from_the_previous_items_image(with_images, low, high):
    assert low <= train_and_rank(with_images) <= high
