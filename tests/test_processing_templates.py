"""UniMPProcessor templates: exact token sequences, label and kind masks, truncation and collation."""

import pytest
import torch

from processing_unimp import TASKS, UniMPProcessor

HISTORY = [{"item_id": "A1", "rating": 5, "explanation": "Great shoes"}, {"item_id": "B2", "rating": 2}, "C3"]


def expected_ids(processor: UniMPProcessor, *parts: str) -> list[int]:
    """Ids of `parts`: added tokens by name, anything else tokenized as plain text."""
    added = processor.tokenizer.get_added_vocab()
    ids = [processor.tokenizer.bos_token_id]
    for part in parts:
        if part in added:
            ids.append(added[part])
        else:
            ids += processor.tokenizer(part, add_special_tokens=False)["input_ids"]
    return ids


def item(processor: UniMPProcessor, item_id: str) -> str:
    return f"<item_{processor.item_ids.index(item_id)}>"


SHOES = "Title: Red running shoes; Brand: Acme; Categories: Shoes, Sport; Price: 59.99"
SHIRT = "Title: Blue cotton shirt; Description: A soft shirt"
HAT = "Title: Green hat"
SOCKS = "Title: Yellow socks"


def recommend_history(p: UniMPProcessor) -> list[str]:
    return [
        "<image>", SHOES, "<answer>", item(p, "A1"), "<|endofchunk|>",
        SHIRT, "<answer>", item(p, "B2"), "<|endofchunk|>",
        "<image>", HAT, "<answer>", item(p, "C3"), "<|endofchunk|>",
    ]


def test_recommend_training_and_inference(processor):
    sample = {"task": "recommend", "history": HISTORY, "target": {"item_id": "D4"}}
    encoded = processor.encode(sample)
    prompt = [*recommend_history(processor), "What is the next item recommended to the user?", "<answer>"]
    assert encoded["input_ids"] == expected_ids(processor, *prompt, item(processor, "D4"), "</s>")
    assert encoded["task_id"] == TASKS.index("recommend")
    assert [image.size for image in encoded["images"]] == [(8, 8), (16, 16)]

    inference = processor.encode({"task": "recommend", "history": HISTORY})
    assert inference["input_ids"] == expected_ids(processor, *prompt)
    assert 1 not in inference["token_kinds"]
    # Training and inference share the prefix, BOS included.
    assert encoded["input_ids"][: len(inference["input_ids"])] == inference["input_ids"]


def test_search(processor):
    sample = {"task": "search", "history": HISTORY, "query": "warm socks", "target": "D4"}
    query = "Query: warm socks What is the related item to the query based on the history?"
    expected = expected_ids(processor, *recommend_history(processor), query, "<answer>", item(processor, "D4"), "</s>")
    assert processor.encode(sample)["input_ids"] == expected


def test_rate_explain(processor):
    sample = {"task": "rate_explain", "history": HISTORY,
              "target": {"item_id": "D4", "rating": 4, "explanation": "Warm and soft"}}
    encoded = processor.encode(sample)
    prompt = [
        "<image>", item(processor, "A1"), SHOES, "<answer>", "<rating_5>", "Great shoes", "<|endofchunk|>",
        item(processor, "B2"), SHIRT, "<answer>", "<rating_2>", "<|endofchunk|>",
        "<image>", item(processor, "C3"), HAT, "<|endofchunk|>",
        "<image>", item(processor, "D4"), SOCKS, "<|endofchunk|>",
        "What is the rating and explanation for the item?", "<answer>",
    ]
    assert encoded["input_ids"] == expected_ids(processor, *prompt, "<rating_4>", "Warm and soft", "</s>")
    assert len(encoded["images"]) == 3
    inference = processor.encode({**sample, "target": {"item_id": "D4"}})
    assert inference["input_ids"] == expected_ids(processor, *prompt)


def test_rating_scale_with_half_steps(make_processor):
    half = make_processor(rating_step=0.5)
    assert half.rating_values == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    assert half.tokenizer.convert_ids_to_tokens(half.rating_token_ids)[:2] == ["<rating_1>", "<rating_1.5>"]
    sample = {"task": "rate_explain", "history": ["A1"], "target": {"item_id": "D4", "rating": 4.4}}
    assert "<rating_4.5>" in half.render(sample)  # ratings between steps snap to the nearest one


def test_select(processor):
    sample = {"task": "select", "history": ["A1"], "candidates": ["B2", "D4", "E5"], "answer": ["E5", "B2"]}
    candidates = [
        "Select from:",
        "<slot_0>", item(processor, "B2"), SHIRT, "<|endofchunk|>",
        "<image>", "<slot_1>", item(processor, "D4"), SOCKS, "<|endofchunk|>",
        "<slot_2>", item(processor, "E5"), "<|endofchunk|>",  # no text: the id token alone names the item
        "Which of these items will the user choose?", "<answer>",
    ]
    history = ["<image>", SHOES, "<answer>", item(processor, "A1"), "<|endofchunk|>"]
    expected = expected_ids(processor, *history, *candidates, "<slot_0>", "<slot_2>", "</s>")
    assert processor.encode(sample)["input_ids"] == expected


def test_generate_image(processor):
    sample = {"task": "generate_image", "history": ["A1", {"item_id": "C3", "image_codes": [0, 0, 1, 1]}, "D4"],
              "query": "a shirt", "target": "B2"}
    history = [
        "<image>", item(processor, "A1"), SHOES, "<answer>", "<img_1>", "<img_2>", "<img_3>", "<img_0>",
        "<|endofchunk|>",
        "<image>", item(processor, "C3"), HAT, "<answer>", "<img_0>", "<img_0>", "<img_1>", "<img_1>",
        "<|endofchunk|>",
        "<image>", item(processor, "D4"), SOCKS, "<|endofchunk|>",  # no codes: no answer part
    ]
    prompt = ["Query: a shirt What does the item the user wants look like?", "<answer>"]
    target = ["<img_3>", "<img_3>", "<img_1>", "<img_0>", "</s>"]
    assert processor.encode(sample)["input_ids"] == expected_ids(processor, *history, *prompt, *target)


def test_label_and_kind_masks(processor):
    sample = {"task": "rate_explain", "history": HISTORY,
              "target": {"item_id": "D4", "rating": 4, "explanation": "Warm and soft"}}
    encoded = processor.encode(sample)
    ids, kinds, labels = encoded["input_ids"], encoded["token_kinds"], encoded["labels"]
    assert labels == [i if kind else -100 for i, kind in zip(ids, kinds)]
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    reconstruction = processor.tokenizer.decode([i for i, kind in zip(ids, kinds) if kind == 2])
    assert reconstruction == "<rating_5>Great shoes<rating_2>"
    target = [i for i, kind in zip(ids, kinds) if kind == 1]
    assert processor.tokenizer.decode(target) == "<rating_4>Warm and soft</s>"
    # Everything up to the final <answer> is context or reconstruction, never target.
    last_answer = len(tokens) - 1 - tokens[::-1].index("<answer>")
    assert set(kinds[: last_answer + 1]) <= {0, 2} and set(kinds[last_answer + 1 :]) == {1}


def test_missing_images_and_fields_are_left_out(processor):
    text = processor.render({"task": "recommend", "history": ["B2", "E5"]})
    assert text == f"<s>{SHIRT}<answer>{item(processor, 'B2')}<|endofchunk|><answer>{item(processor, 'E5')}" \
        "<|endofchunk|>What is the next item recommended to the user?<answer>"
    assert "unknown" not in text.lower() and "none" not in text.lower()
    assert processor.encode({"task": "recommend", "history": ["B2", "E5"]})["images"] == []


def test_inline_attributes_override_the_catalogue(processor):
    text = processor.render({"task": "recommend", "history": [{"item_id": "E5", "title": "Purple scarf"}]})
    assert "Title: Purple scarf<answer>" in text


def test_fields_are_capped_in_words(make_processor):
    capped = make_processor(max_field_words=2)
    text = capped.render({"task": "search", "history": ["A1"], "query": "one two three"})
    assert "Title: Red running; Brand: Acme; Categories: Shoes, Sport; Price: 59.99<answer>" in text
    assert "Query: one two What" in text


def test_truncation_keeps_the_most_recent_whole_chunks(processor, make_processor):
    history = ["A1", "B2", "C3", "D4", "E5"]
    sample = {"task": "recommend", "history": history, "target": "A1"}
    by_count = make_processor(max_history_items=2).render(sample)
    assert by_count.startswith(f"<s><image>{SOCKS}<answer>{item(processor, 'D4')}<|endofchunk|><answer>")

    full = processor.encode(sample)
    last_two = processor.encode({**sample, "history": history[-2:]})
    last_three = processor.encode({**sample, "history": history[-3:]})
    for max_length in (len(last_two["input_ids"]), len(last_three["input_ids"]) - 1):
        truncated = make_processor(max_length=max_length).encode(sample)
        assert truncated["input_ids"] == last_two["input_ids"]  # never half a chunk
        assert len(truncated["images"]) == truncated["input_ids"].count(processor.image_token_id) == 1
    assert make_processor(max_length=len(full["input_ids"])).encode(sample)["input_ids"] == full["input_ids"]

    with pytest.raises(ValueError, match="max_length"):
        make_processor(max_length=10).encode(sample)


@pytest.mark.parametrize("side", ["left", "right"])
def test_collation_pads_on_either_side(processor, side):
    samples = [
        {"task": "recommend", "history": HISTORY, "target": "D4"},
        {"task": "search", "history": ["B2"], "query": "shirt"},
    ]
    encoded = [processor.encode(sample) for sample in samples]
    batch = processor.pad(encoded, padding_side=side)  # the training collation: the loss fields too
    assert processor(samples, padding_side=side).keys() == batch.keys() - {"token_kinds", "task_ids"}
    lengths = [len(e["input_ids"]) for e in encoded]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["token_kinds"].shape == (2, max(lengths))
    assert batch["attention_mask"].sum(-1).tolist() == lengths
    assert batch["task_ids"].tolist() == [0, 1]
    assert batch["pixel_values"].shape == (2, 2, 3, 16, 16) and batch["image_mask"].tolist() == [[1, 1], [0, 0]]
    short = batch["input_ids"][1]
    real = short[-lengths[1] :] if side == "left" else short[: lengths[1]]
    padding = short[: -lengths[1]] if side == "left" else short[lengths[1] :]
    assert real.tolist() == encoded[1]["input_ids"]
    assert set(padding.tolist()) == {processor.tokenizer.pad_token_id}
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["token_kinds"][batch["attention_mask"] == 0] == 0).all()
    for row in range(2):  # one image per <image> token, in order
        assert (batch["input_ids"][row] == processor.image_token_id).sum() == batch["image_mask"][row].sum()
    expected_first = processor.image_processor(encoded[0]["images"][0], return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(batch["pixel_values"][0, 0], expected_first)


def test_batch_without_images(processor):
    batch = processor({"task": "recommend", "history": ["B2"]})
    assert batch["pixel_values"].shape == (1, 0, 3, 16, 16) and batch["image_mask"].shape == (1, 0)


def test_task_argument_for_plain_dict_samples(processor):
    assert processor.encode({"history": ["A1"]}, task="recommend")["task_id"] == 0


def next_item_history(p: UniMPProcessor) -> list[str]:
    """`history_ids="before"`: each chunk opens with its id, so the id is predicted before its content is seen."""
    return [
        "<answer>", item(p, "A1"), "<image>", SHOES, "<|endofchunk|>",
        "<answer>", item(p, "B2"), SHIRT, "<|endofchunk|>",
        "<answer>", item(p, "C3"), "<image>", HAT, "<|endofchunk|>",
    ]


def test_recommend_with_ids_before_content(make_processor):
    processor = make_processor(history_ids="before")
    sample = {"task": "recommend", "history": HISTORY, "target": {"item_id": "D4"}}
    encoded = processor.encode(sample)
    # The prompt is the `<answer>` that opens the next chunk: the same position every history id is trained at.
    assert encoded["input_ids"] == expected_ids(processor, *next_item_history(processor), "<answer>",
                                                item(processor, "D4"), "</s>")
    supervised = [i for i, kind in zip(encoded["input_ids"], encoded["token_kinds"]) if kind == 2]
    assert supervised == [processor.item_token_ids[processor.item_ids.index(i)] for i in ("A1", "B2", "C3")]
    inference = processor.encode({"task": "recommend", "history": HISTORY})
    assert inference["input_ids"] == expected_ids(processor, *next_item_history(processor), "<answer>")
    assert [image.size for image in inference["images"]] == [(8, 8), (16, 16)]
    # Search keeps its instruction; rate_explain's history is unchanged (a rating is read after its item's content)
    # and its target chunk stays open at `<answer>`, where every history rating is trained, instead of a question.
    search = processor.encode({"task": "search", "history": HISTORY, "query": "warm socks", "target": "D4"})
    query = "Query: warm socks What is the related item to the query based on the history?"
    assert search["input_ids"] == expected_ids(processor, *next_item_history(processor), query, "<answer>",
                                               item(processor, "D4"), "</s>")
    rate = {"task": "rate_explain", "history": HISTORY, "target": {"item_id": "D4", "rating": 4}}
    rate_history = [
        "<image>", item(processor, "A1"), SHOES, "<answer>", "<rating_5>", "Great shoes", "<|endofchunk|>",
        item(processor, "B2"), SHIRT, "<answer>", "<rating_2>", "<|endofchunk|>",
        "<image>", item(processor, "C3"), HAT, "<|endofchunk|>",
    ]
    open_target = ["<image>", item(processor, "D4"), SOCKS, "<answer>"]
    assert processor.encode(rate)["input_ids"] == expected_ids(processor, *rate_history, *open_target, "<rating_4>",
                                                               "</s>")
    inference = processor.encode({**rate, "target": "D4"})
    assert inference["input_ids"] == expected_ids(processor, *rate_history, *open_target)
    assert len(inference["images"]) == 3
    with pytest.raises(ValueError, match="history_ids"):
        make_processor(history_ids="middle")


def test_compact_chunks(make_processor):
    processor = make_processor(item_fields=["title", "categories"], item_field_words=2, field_labels=False)
    encoded = processor.encode({"task": "recommend", "history": ["A1"]})
    prompt = ["<image>", "Red running; Shoes, Sport", "<answer>", item(processor, "A1"), "<|endofchunk|>",
              "What is the next item recommended to the user?", "<answer>"]
    assert encoded["input_ids"] == expected_ids(processor, *prompt)
