"""Packed next-item training sequences: every train interaction is a target exactly once per epoch, nothing else is."""

from collections import Counter

import numpy as np
import pytest
from datasets import Dataset

from processing_unimp import TASKS, UniMPProcessor
from processing_unimp.templates_unimp import RECONSTRUCTION
from processing_unimp.training.initialisation import unimp_for_processor
from processing_unimp.training.packing import pack_histories, user_histories

WORDS = ["red", "blue", "green", "wool", "linen", "coat", "shirt", "boots", "hat", "scarf"]


def packed_targets(encodings, processor) -> Counter:
    """How often each (user_id, item_id) is a supervised item target in `encodings` (to check an epoch's cover)."""
    item_of = dict(zip(processor.item_token_ids, processor.item_ids))
    counts: Counter = Counter()
    for encoding in encodings:
        for label, kind in zip(encoding["labels"], encoding["token_kinds"]):
            if label != -100 and kind == RECONSTRUCTION and label in item_of:
                counts[(encoding["user_id"], item_of[label])] += 1
    return counts


@pytest.fixture(scope="module")
def shop():
    """30 items, 7 users with 3..16 interactions each, split leave-one-out by time (last = test, 2nd last = val)."""
    rng = np.random.default_rng(0)
    items = [{"item_id": f"i{k:02d}", "title": " ".join(rng.choice(WORDS, size=1 + k % 4))} for k in range(30)]
    splits = {"train": [], "validation": [], "test": []}
    for user in range(7):
        length = 3 + 2 * user
        chosen = rng.choice(30, size=length, replace=False)
        times = np.sort(rng.choice(10_000, size=length, replace=False))
        rows = [{"user_id": f"u{user}", "item_id": f"i{k:02d}", "timestamp": int(t)} for k, t in zip(chosen, times)]
        rows = [rows[j] for j in rng.permutation(length)]  # the table is not in time order
        ordered = sorted(rows, key=lambda r: r["timestamp"])
        splits["train"] += [r for r in rows if r["timestamp"] < ordered[-2]["timestamp"]]
        splits["validation"].append(ordered[-2])
        splits["test"].append(ordered[-1])
    processor = UniMPProcessor.from_catalogue(items, vocab_size=200, image_size=16, history_ids="before")
    return processor, splits


@pytest.mark.parametrize("room", [1, 2, 4, 100])
def test_every_train_interaction_is_a_target_exactly_once(shop, room):
    processor, splits = shop
    longest = max(len(c["input_ids"]) for c in processor.encode_history_chunks([r["item_id"] for r in splits["train"]]))
    max_length = 1 + longest * room  # from one chunk per sequence up to whole histories
    encodings = pack_histories(processor, splits["train"], max_length)
    targets = packed_targets(encodings, processor)
    assert targets == Counter((r["user_id"], r["item_id"]) for r in splits["train"])
    held_out = {(r["user_id"], r["item_id"]) for r in splits["validation"] + splits["test"]}
    assert not held_out & set(targets)
    answer, end = processor.answer_token_id, processor.end_of_chunk_token_id
    bos = processor.tokenizer.bos_token_id
    histories = user_histories(splits["train"])
    by_user: dict[str, list[int]] = {}
    for encoding in encodings:
        ids = encoding["input_ids"]
        assert len(ids) <= max_length and ids[0] == bos and ids[1] == answer and ids[-1] == end  # chunk boundaries
        by_user.setdefault(encoding["user_id"], []).extend(ids[1:])
    for user, history in histories.items():
        # The sequences of a user, in order and without overlap, are their whole time-ordered train history.
        whole = processor.encode_history_chunks([r["item_id"] for r in history])
        assert by_user[user] == [i for chunk in whole for i in chunk["input_ids"]]


def test_packed_positions_match_the_recommend_prompt(shop):
    """The recommend prompt (history, then `<answer>`) is the prefix of the packed sequence up to the next id."""
    processor, splits = shop
    history = user_histories(splits["train"])["u3"]
    ids = [r["item_id"] for r in history]
    packed = pack_histories(processor, history, 512)[0]["input_ids"]
    prompt = processor.encode({"task": "recommend", "history": ids[:-1]})["input_ids"]
    assert len(ids) - 1 <= processor.max_history_items
    assert packed[: len(prompt)] == prompt
    assert packed[len(prompt)] == processor.item_token_ids[processor.item_ids.index(ids[-1])]


def test_identification_adds_the_content_first_layout(shop, tmp_path):
    processor, splits = shop
    plain = pack_histories(processor, splits["train"], 100)
    both = pack_histories(processor, splits["train"], 100, identification=True)
    assert both[: len(plain)] == plain
    targets = packed_targets(both[len(plain):], processor)
    assert targets == Counter((r["user_id"], r["item_id"]) for r in splits["train"])
    after = both[len(plain)]["input_ids"]
    assert after[1] != processor.answer_token_id  # content first, id after it
    with pytest.raises(ValueError, match="exceeds max_length"):
        pack_histories(processor, splits["train"], 3)
    processor.save_pretrained(tmp_path)
    assert UniMPProcessor.from_pretrained(tmp_path).history_ids == "before"


def test_packed_batch_trains(shop):
    processor, splits = shop
    model = unimp_for_processor("tiny", processor)
    batch = processor.pad(pack_histories(processor, splits["train"], 100)[:4])
    loss = model(**{k: v for k, v in batch.items() if k not in ("token_kinds", "task_ids")}).loss
    loss.backward()
    assert loss.isfinite()


def test_other_tasks_join_the_packed_data_with_their_latest_history_items(shop):
    """`--packed` with more tasks: the packed recommend sequences, then each other sample with only its
    `task_history_items` latest history items."""
    from processing_unimp.training.recipe import DataArguments, training_sequences

    processor, splits = shop
    history = [r["item_id"] for r in user_histories(splits["train"])["u5"]]
    search = [{"task": "search", "user_id": "u5", "history": history[:-1], "query": "red coat",
               "target": {"item_id": history[-1]}}]
    data = {"train": splits["train"], "tasks_train": Dataset.from_list(search)}
    args = DataArguments(packed=True, tasks="recommend,search", task_history_items=2)
    encodings = training_sequences(processor, data, ["recommend", "search"], args)
    packed = pack_histories(processor, splits["train"], args.max_length)
    assert encodings[: len(packed)] == packed and len(encodings) == len(packed) + 1
    expected = processor.encode({**search[0], "history": history[-3:-1]})
    assert encodings[-1]["input_ids"] == expected["input_ids"]


def test_packed_ratings_make_every_train_rating_a_target_at_the_rate_prompts_position(shop):
    """Rating sequences: each user's train history as rate_explain chunks; every rating a target once, and the
    rate_explain prompt ("before" layout) is the prefix of the packed sequence up to the next rating."""
    from processing_unimp.templates_unimp import RECONSTRUCTION

    processor, splits = shop
    rated = [{**r, "rating": 1 + (i % 5), "explanation": "warm" if i % 2 else None}
             for i, r in enumerate(splits["train"])]
    encodings = pack_histories(processor, rated, 60, task="rate_explain")
    ratings_only = pack_histories(processor, rated, 60, task="rate_explain", explanations=False)
    rating_of = dict(zip(processor.rating_token_ids, processor.rating_values))
    expected = Counter((r["user_id"], float(r["rating"])) for r in rated)
    for packed in (encodings, ratings_only):
        counted = Counter()
        for encoding in packed:
            assert len(encoding["input_ids"]) <= 60 and encoding["task_id"] == TASKS.index("rate_explain")
            counted.update((encoding["user_id"], rating_of[label])
                           for label, kind in zip(encoding["labels"], encoding["token_kinds"])
                           if label in rating_of and kind == RECONSTRUCTION)
        assert counted == expected

    def explanation_tokens(packed):  # supervised tokens that are no rating
        return sum(label != -100 and label not in rating_of for e in packed for label in e["labels"])

    assert explanation_tokens(encodings) > 0 and explanation_tokens(ratings_only) == 0

    history = user_histories(rated)["u3"]
    packed = pack_histories(processor, history, 512, task="rate_explain")[0]["input_ids"]
    prompt = processor.encode({"task": "rate_explain", "history": history[:-1],
                               "target": {"item_id": history[-1]["item_id"]}})["input_ids"]
    assert processor.tokenizer.convert_ids_to_tokens(prompt[-1]) == "<answer>"
    assert packed[: len(prompt)] == prompt
    assert packed[len(prompt)] == processor.rating_token_ids[processor.rating_values.index(history[-1]["rating"])]
    with pytest.raises(ValueError, match="identification"):
        pack_histories(processor, rated, 60, task="rate_explain", identification=True)


def test_query_matched_contexts_share_most_query_words_and_never_hold_the_target():
    """The 'mixed' generate_image contexts: as many catalogue items as the sample's history, each sharing the most
    words (as the catalogue's search matches them) with its query, the target excluded."""
    from processing_unimp.training.recipe import query_matched_contexts

    items = Dataset.from_list([
        {"item_id": "a", "title": "dark bag", "categories": ["bags"]},
        {"item_id": "b", "title": "light bag", "categories": ["bags"]},
        {"item_id": "c", "title": "dark bag", "categories": ["bags"]},
        {"item_id": "d", "title": "red coat", "categories": ["outerwear"]},
    ])
    samples = [{"task": "generate_image", "query": "bags dark bag", "history": ["d", "b"], "target": {"item_id": "a"}},
               {"task": "generate_image", "query": "outerwear coat", "history": ["a"], "target": {"item_id": "b"}}]
    matched = query_matched_contexts(samples, items, seed=0)
    assert sorted(matched[0]["history"]) == ["c"]  # the only other item with all three words
    assert matched[1]["history"] == ["d"] and matched[1]["target"] == samples[1]["target"]
    punctuated = [{**samples[1], "query": "outerwear: coat."}]  # words, not whitespace-separated strings
    assert query_matched_contexts(punctuated, items, seed=0)[0]["history"] == ["d"]
