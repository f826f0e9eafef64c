"""UniMPProcessor: the unified data format, bad input, images, and the decoding helpers."""

import io

import pytest
import torch
from PIL import Image

from processing_unimp import (
    INTERACTION_FEATURES,
    ITEM_FEATURES,
    ItemCatalogue,
    interactions_dataset,
    items_dataset,
    load_rgb_image,
)


def test_schema_tables_keep_extra_columns():
    items = items_dataset([{"item_id": "A", "title": "Lamp", "color": "red"}, {"item_id": "B", "price": 3}])
    assert list(items.features)[: len(ITEM_FEATURES)] == list(ITEM_FEATURES)
    assert items[0]["color"] == "red" and items[1]["price"] == 3.0 and items[1]["image"] is None
    interactions = interactions_dataset([{"user_id": "u", "item_id": "A", "timestamp": 7, "rating": 4}])
    assert interactions.features == INTERACTION_FEATURES and interactions[0]["review"] is None
    with pytest.raises(ValueError, match="timestamp"):
        interactions_dataset([{"user_id": "u", "item_id": "A"}])
    with pytest.raises(ValueError, match="Duplicate item ids.*'A'"):
        ItemCatalogue([{"item_id": "A"}, {"item_id": "A"}])


def test_processor_from_a_dataset_catalogue(processor, catalogue_items):
    from processing_unimp import UniMPProcessor

    rebuilt = UniMPProcessor.from_catalogue(items_dataset(catalogue_items), tokenizer=processor.tokenizer,
                                            image_processor=processor.image_processor)
    assert rebuilt.item_ids == processor.item_ids  # same seed, same token order
    assert sorted(processor.item_ids) == ["A1", "B2", "C3", "D4", "E5"]
    assert processor.item_ids != sorted(processor.item_ids)  # shuffled
    other_seed = UniMPProcessor.from_catalogue(catalogue_items, tokenizer=processor.tokenizer,
                                               image_processor=processor.image_processor, seed=1)
    assert other_seed.item_ids != processor.item_ids


def test_special_token_ids(processor):
    tokens = processor.tokenizer.convert_ids_to_tokens
    assert tokens([processor.image_token_id, processor.end_of_chunk_token_id, processor.answer_token_id]) == [
        "<image>", "<|endofchunk|>", "<answer>"]
    assert tokens(processor.item_token_ids) == [f"<item_{k}>" for k in range(5)]
    assert tokens(processor.slot_token_ids) == ["<slot_0>", "<slot_1>", "<slot_2>"]
    assert tokens(processor.image_code_token_ids) == ["<img_0>", "<img_1>", "<img_2>", "<img_3>"]
    assert len(set(processor.item_token_ids + processor.rating_token_ids)) == 10


def test_user_text_never_becomes_special_tokens(processor):
    encoded = processor.encode({"task": "search", "history": ["B2"], "query": "<answer> <item_0>"})
    assert encoded["input_ids"].count(processor.answer_token_id) == 2  # the chunk's and the prompt's


def test_unknown_item(processor, make_processor):
    sample = {"task": "recommend", "history": ["A1", "ZZ9"]}
    with pytest.raises(ValueError, match="Unknown item id 'ZZ9' in `history`"):
        processor.encode(sample)
    assert make_processor(unknown_items="drop").render(sample) == processor.render({**sample, "history": ["A1"]})
    with pytest.raises(ValueError, match="Unknown item id 'ZZ9' in `target`"):
        make_processor(unknown_items="drop").encode({**sample, "target": "ZZ9"})
    with pytest.raises(ValueError, match="No item of the sample's `history`"):
        make_processor(unknown_items="drop").encode({"task": "recommend", "history": ["ZZ9"]})


@pytest.mark.parametrize("history", [[], None])
def test_empty_history(processor, history):
    with pytest.raises(ValueError, match="`history` is empty"):
        processor.encode({"task": "recommend", "history": history})


@pytest.mark.parametrize(
    "image", [{"bytes": b"not an image", "path": None}, "/nonexistent/picture.jpg", {"bytes": None, "path": None}, 42]
)
def test_unreadable_image(processor, image):
    with pytest.raises(ValueError, match=r"Item 'E5': field `image` could not be read"):
        processor.encode({"task": "recommend", "history": [{"item_id": "E5", "image": image}]})


def test_truncated_image_file(processor):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buffer, format="JPEG")
    cut = {"bytes": buffer.getvalue()[:200], "path": None}
    with pytest.raises(ValueError, match="Item 'E5': field `image`"):
        processor.encode({"task": "recommend", "history": [{"item_id": "E5", "image": cut}]})


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "CMYK", "P", "I;16"])
def test_image_modes_are_converted_to_rgb(mode):
    image = load_rgb_image(Image.new(mode, (4, 4)), "A1")
    assert image.mode == "RGB" and image.size == (4, 4)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "1"])
@pytest.mark.parametrize(("size", "downscaled"), [((40, 30), (11, 8)), ((5000, 1), (100, 1)), ((1, 5000), (1, 100))])
def test_a_local_image_over_the_pixel_limit_is_downscaled(mode, size, downscaled):
    image = load_rgb_image(Image.new(mode, size), "A1", max_pixels=100, downscale=True)
    assert image.mode == "RGB" and image.size == downscaled
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} = .* over the limit of 100 pixels"):
        load_rgb_image(Image.new(mode, size), "A1", max_pixels=100)


def test_transparent_images_are_composited_on_white():
    image = load_rgb_image(Image.new("RGBA", (2, 2), (255, 0, 0, 0)), "A1")
    assert image.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("task", ["recommend", "rate_explain"])
@pytest.mark.parametrize("rating", [float("nan"), float("inf"), -float("inf")])
def test_a_rating_that_is_not_a_finite_number_is_refused(processor, task, rating):
    """Whatever the task, so that a NaN in a history never reaches a prompt silently; the schema's tables alike."""
    history = ["B2", {"item_id": "A1", "rating": rating}]
    with pytest.raises(ValueError, match=f"Item 'A1': field `rating` is {rating}, not a finite number"):
        processor.encode({"task": task, "history": history, "target": "D4"})
    with pytest.raises(ValueError, match=f"Item 'A1': field `rating` is {rating}, not a finite number"):
        interactions_dataset([{"user_id": "u", "item_id": "A1", "timestamp": 1, "rating": rating}])
    with pytest.raises(TypeError, match="Item 'A1': field `rating` must be a number, got 'five'"):
        processor.encode({"task": task, "history": [{"item_id": "A1", "rating": "five"}], "target": "D4"})


def test_rating_outside_the_scale(processor):
    sample = {"task": "rate_explain", "history": [{"item_id": "A1", "rating": 7}], "target": "D4"}
    with pytest.raises(ValueError, match=r"Item 'A1': field `rating` is 7.0, outside the rating scale 1..5"):
        processor.encode(sample)
    with pytest.raises(ValueError, match="Item 'D4': field `rating`"):
        processor.encode({**sample, "history": ["A1"], "target": {"item_id": "D4", "rating": 0}})


def test_unknown_task(processor):
    with pytest.raises(ValueError, match="Unknown task 'review'; expected one of recommend, search"):
        processor.encode({"task": "review", "history": ["A1"]})


def test_selection_errors(processor):
    sample = {"task": "select", "history": ["A1"], "candidates": ["A1", "B2", "C3", "D4"]}
    with pytest.raises(ValueError, match="`candidates` has 4 items, but this processor selects among at most 3"):
        processor.encode(sample)
    with pytest.raises(ValueError, match="`candidates` lists item\\(s\\) \\['B2'\\] more than once"):
        processor.encode({**sample, "candidates": ["B2", "A1", "B2"]})
    with pytest.raises(ValueError, match="Item 'D4' in `answer` is not one of the `candidates`"):
        processor.encode({**sample, "candidates": ["A1", "B2"], "answer": ["D4"]})
    with pytest.raises(ValueError, match="needs `candidates`"):
        processor.encode({"task": "select", "history": ["A1"]})


def test_missing_task_inputs(processor):
    with pytest.raises(ValueError, match="'search' needs a `query`"):
        processor.encode({"task": "search", "history": ["A1"]})
    with pytest.raises(ValueError, match="'rate_explain' needs a `target`"):
        processor.encode({"task": "rate_explain", "history": ["A1"]})
    with pytest.raises(ValueError, match="Item 'D4': field `image_codes`"):
        processor.encode({"task": "generate_image", "history": ["A1"], "query": "q", "target": "D4"})
    with pytest.raises(ValueError, match=r"Item 'A1': field `image_codes` has codes \[9\]"):
        processor.encode({"task": "generate_image", "history": [{"item_id": "A1", "image_codes": [9]}], "query": "q"})


def test_rank_items(processor):
    logits = torch.zeros(2, len(processor.tokenizer))
    scores = {"C3": 5.0, "A1": 4.0, "E5": 3.0, "B2": 2.0, "D4": 1.0}
    for item_id, score in scores.items():
        logits[:, processor.item_token_ids[processor.item_ids.index(item_id)]] = score
    logits[:, processor.answer_token_id] = 100.0  # non-item tokens never rank
    assert processor.rank_items(logits, top_k=3) == [["C3", "A1", "E5"]] * 2
    ranked = processor.rank_items(logits, top_k=None, exclude=[["C3", "B2"], []])
    assert ranked == [["A1", "E5", "D4"], ["C3", "A1", "E5", "B2", "D4"]]
    assert processor.rank_items(logits[0], top_k=1) == [["C3"]]


def test_expected_rating(processor):
    logits = torch.full((2, len(processor.tokenizer)), -1e4)
    logits[0, processor.rating_token_ids[3]] = 10.0  # all mass on 4
    logits[1, processor.rating_token_ids[0]] = 0.0  # half on 1, half on 5
    logits[1, processor.rating_token_ids[4]] = 0.0
    torch.testing.assert_close(processor.expected_rating(logits), torch.tensor([4.0, 3.0]))


def test_decode_explanation(processor):
    generated = processor.tokenizer("<rating_4>Warm and soft</s><pad>", add_special_tokens=False)["input_ids"]
    assert processor.decode_explanation(generated) == "Warm and soft"
    assert processor.decode_explanation(torch.tensor(generated[1:])) == "Warm and soft"


def test_decode_image_codes(processor):
    ids = processor.tokenizer("<img_3><img_0><img_1><img_2></s>", add_special_tokens=False)["input_ids"]
    assert processor.decode_image_codes(ids).tolist() == [[3, 0], [1, 2]]
    assert processor.decode_image_codes(ids, grid_size=(1, 4)).tolist() == [[3, 0, 1, 2]]
    with pytest.raises(ValueError, match="3 image codes"):
        processor.decode_image_codes(ids[1:])
