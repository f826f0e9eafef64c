"""Content item rows on a planted dataset where the next item is fixed by the previous item's picture: items that
training never saw, added afterwards through `add_items`, are ranked from their content alone."""

import numpy as np
import pytest
import torch
from PIL import Image

from processing_unimp import UniMPProcessor
from processing_unimp.content_unimp import add_items, fill_item_content
from processing_unimp.evaluation.tasks import answer_logits, evaluate_ranking, prompt_inputs
from processing_unimp.training.initialisation import unimp_for_processor
from processing_unimp.training.packing import pack_histories
from processing_unimp.training.trainer import unimp_loss

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]
TARGETS_PER_COLOUR, WITHHELD = 8, 2


def picture(rng, colour: int, stripe: bool) -> Image.Image:
    """A 16x16 picture of one colour with pixel noise; target items carry a white stripe."""
    pixels = np.array(COLOURS[colour], dtype=float) + rng.integers(-30, 31, (16, 16, 3))
    if stripe:
        pixels[6:10] = 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def planted(users: int = 1200):
    """Sources `s*` of every colour; after a source of colour c comes a striped target of colour c + 1. Targets
    `t{c}_{j}` with j >= TARGETS_PER_COLOUR - WITHHELD are withheld: no training history holds them."""
    rng = np.random.default_rng(0)
    targets = [{"item_id": f"t{c}_{j}", "title": "item", "image": picture(rng, c, True)}
               for c in range(len(COLOURS)) for j in range(TARGETS_PER_COLOUR)]
    sources = [{"item_id": f"s{k:04d}", "title": "item", "image": picture(rng, k % len(COLOURS), False)}
               for k in range(users)]
    train, test = [], []
    for k in range(users):
        colour = (k % len(COLOURS) + 1) % len(COLOURS)
        held_out = k >= users - 100
        j = rng.integers(TARGETS_PER_COLOUR - WITHHELD, TARGETS_PER_COLOUR) if held_out else rng.integers(
            TARGETS_PER_COLOUR - WITHHELD)
        pair = (f"s{k:04d}", f"t{colour}_{j}")
        (test if held_out else train).append(pair)
    withheld = [t for t in targets if int(t["item_id"].split("_")[1]) >= TARGETS_PER_COLOUR - WITHHELD]
    known = [t for t in targets if t not in withheld]
    return known, withheld, sources, train, test


def train(model, processor, pairs, steps: int = 120, batch_size: int = 12) -> None:
    interactions = [{"user_id": f"u{k}", "item_id": item, "timestamp": t}
                    for k, pair in enumerate(pairs) for t, item in enumerate(pair)]
    encodings = pack_histories(processor, interactions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    model.train()
    for step in range(steps):
        start = step * batch_size % len(encodings)
        batch = processor.pad(encodings[start : start + batch_size])
        labels = batch.pop("labels")
        batch.pop("token_kinds"), batch.pop("task_ids")
        labels[:, :3] = -100  # the first id of each pair has no context to come from
        unimp_loss(model(**batch).logits, labels).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def samples(pairs):
    return [{"task": "recommend", "user_id": f"v{k}", "history": [source], "target": {"item_id": target}}
            for k, (source, target) in enumerate(pairs)]


def content_model(items, **processor_kwargs):
    processor = UniMPProcessor.from_catalogue(items, vocab_size=80, image_size=16, history_ids="before",
                                              **processor_kwargs)
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor, item_rows="content", freeze_vision_tower=True)
    fill_item_content(model, processor)
    return model, processor


def test_withheld_items_added_after_training_are_ranked_from_content(tmp_path):
    known, withheld, sources, pairs, test = planted()
    model, processor = content_model(known + sources)
    train(model, processor, pairs)
    assert add_items(model, processor, withheld) == [t["item_id"] for t in withheld]
    hit = evaluate_ranking(model, processor, samples(test), batch_size=25)["HR@10"]
    assert hit >= 0.9
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    reloaded = type(model).from_pretrained(tmp_path / "model")
    again = type(processor).from_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = answer_logits(model, prompt_inputs(processor, samples(test[:8]), "cpu"))
        again_logits = answer_logits(reloaded.eval(), prompt_inputs(again, samples(test[:8]), "cpu"))
    torch.testing.assert_close(again_logits, expected)


def test_pictures_only_in_the_item_rows_rank_withheld_items(tmp_path):
    """`chunk_images=False`: no chunk holds an `<image>`, the pictures enter through the content rows alone, and
    they still rank the withheld items; the setting is saved with the processor."""
    known, withheld, sources, pairs, test = planted()
    model, processor = content_model(known + sources, chunk_images=False)
    encoded = processor.encode(samples(pairs[:1])[0])
    assert processor.image_token_id not in encoded["input_ids"] and not encoded["images"]
    train(model, processor, pairs)
    add_items(model, processor, withheld)
    assert evaluate_ranking(model, processor, samples(test), batch_size=25)["HR@10"] >= 0.9
    processor.save_pretrained(tmp_path)
    assert UniMPProcessor.from_pretrained(tmp_path).chunk_images is False


def test_free_rows_rank_withheld_items_near_chance():
    known, withheld, sources, pairs, test = planted()
    items = known + withheld + sources
    processor = UniMPProcessor.from_catalogue(items, vocab_size=80, image_size=16, history_ids="before")
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor)
    train(model, processor, pairs)
    assert evaluate_ranking(model, processor, samples(test), batch_size=25)["HR@10"] <= 0.3


def test_bad_items_are_refused_and_nothing_is_added():
    known, withheld, sources, _, _ = planted(users=8)
    model, processor = content_model(known + sources)
    before = (len(processor.item_ids), len(processor.tokenizer), model.config.num_content_items)
    bad_image = {"item_id": "n1", "title": "x", "image": b"not an image"}
    for items, message in [([withheld[0], {"item_id": "s0001", "title": "x"}], "already"),
                           ([withheld[0], {"item_id": "n0"}], "no content"),
                           ([withheld[0], bad_image], "n1")]:
        with pytest.raises(ValueError, match=message):
            add_items(model, processor, items)
        assert (len(processor.item_ids), len(processor.tokenizer), model.config.num_content_items) == before


def test_a_model_trained_without_images_reads_new_items_as_their_text():
    known, withheld, sources, _, _ = planted(users=8)
    model, processor = content_model([{k: v for k, v in item.items() if k != "image"} for item in known + sources])
    add_items(model, processor, withheld[:2])
    assert not model.item_content.image_features[-2:].any()  # the image projection never learned: no image input
    with pytest.raises(ValueError, match="no content"):  # an image alone is then no content
        add_items(model, processor, [{"item_id": "n2", "image": withheld[2]["image"]}])
