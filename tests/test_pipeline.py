"""PersonalizationPipeline: outputs of every task, exact ranking, batches, bad inputs, trie-constrained decoding."""

from __future__ import annotations

import base64
import random

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessorList, pipeline

from processing_unimp import PersonalizationPipeline
from processing_unimp.evaluation.tasks import answer_logits
from processing_unimp.generation_unimp import SAMPLING, generate_item_images
from processing_unimp.image_inputs_unimp import ImagePolicy
from processing_unimp.ranking_unimp import TokenTrie, TrieLogitsProcessor, answer_sequences, rank_tokens
from processing_unimp.training.initialisation import unimp_for_processor

ITEM_IDS = ["A1", "B2", "C3", "D4", "E5"]


@pytest.fixture(scope="module")
def pipe(trained_model_dir) -> PersonalizationPipeline:
    return pipeline("personalization", model=str(trained_model_dir))


def test_recommend_is_the_exact_full_ranking(pipe):
    ranked = pipe(history=["A1", "B2"], task="recommend", top_k=len(ITEM_IDS))
    assert isinstance(pipe, PersonalizationPipeline)
    assert sorted(result["item_id"] for result in ranked) == sorted(ITEM_IDS)
    assert ranked[0] == {"item_id": ranked[0]["item_id"], "score": ranked[0]["score"], "title": ranked[0]["title"]}
    titles = {item_id: pipe.processor.catalogue[item_id]["title"] for item_id in ITEM_IDS}
    assert all(result["title"] == titles[result["item_id"]] for result in ranked)
    # The same prompt through the evaluation code: one forward pass, every item token scored at `<answer>`.
    prompt = pipe.processor([{"task": "recommend", "history": ["A1", "B2"]}], padding_side="left")
    logits = answer_logits(pipe.model,
                           {k: prompt[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_mask")})
    assert [result["item_id"] for result in ranked] == pipe.processor.rank_items(logits, top_k=None)[0]
    probabilities = logits[0, pipe.processor.item_token_ids].softmax(-1)
    expected = {item_id: probabilities[k].item() for k, item_id in enumerate(pipe.processor.item_ids)}
    assert [result["score"] for result in ranked] == pytest.approx([expected[r["item_id"]] for r in ranked])
    assert sum(result["score"] for result in ranked) == pytest.approx(1.0)


def test_top_k_and_exclude_seen(pipe):
    full = pipe(history=["A1", "B2"], top_k=5)  # recommend is the default task
    assert pipe(history=["A1", "B2"], top_k=2) == full[:2]
    unseen = pipe(history=["A1", "B2"], top_k=10, exclude_seen=True)
    assert unseen == [result for result in full if result["item_id"] not in ("A1", "B2")]


def test_every_task(pipe):
    search = pipe({"history": ["C3", "D4"], "query": "blue shirt"}, task="search", top_k=3)
    assert len(search) == 3 and all(set(result) == {"item_id", "score", "title"} for result in search)
    assert search[0]["item_id"] == "B2"  # the one item holding both words comes first
    # Items holding more of the query's words first, each tier in the model's order (the scores stay the model's).
    ranked = pipe({"history": ["C3"], "query": "shoes hat"}, task="search", top_k=None)
    assert {r["item_id"] for r in ranked[:2]} == {"A1", "C3"} and len(ranked) == len(ITEM_IDS)
    for tier in (ranked[:2], ranked[2:]):
        assert [r["score"] for r in tier] == sorted((r["score"] for r in tier), reverse=True)

    rated = pipe(history=[{"item_id": "A1", "rating": 5, "explanation": "Great fit"}], task="rate_explain",
                 target={"item_id": "D4", "rating": 2})  # a given rating is ignored, not leaked
    assert set(rated) == {"item_id", "title", "rating", "rating_distribution", "explanation"}
    assert rated["item_id"] == "D4" and rated["title"] == "Yellow socks"
    distribution = rated["rating_distribution"]
    assert list(distribution) == [1.0, 2.0, 3.0, 4.0, 5.0] and sum(distribution.values()) == pytest.approx(1.0)
    assert rated["rating"] == pytest.approx(sum(value * p for value, p in distribution.items()))
    assert isinstance(rated["explanation"], str) and "<" not in rated["explanation"]

    candidates = ["A1", "E5", "C3"]
    selected = pipe(history=["B2"], task="select", candidates=candidates)
    assert 1 <= len(selected) <= 3 and {result["item_id"] for result in selected} <= set(candidates)
    top_two = pipe(history=["B2"], task="select", candidates=candidates, num_selected=2)
    assert len(top_two) == 2 and top_two[0]["score"] >= top_two[1]["score"]

    images = pipe(history=["A1", "B2"], task="generate_image", query="red shoes", num_images=2, seed=0)
    assert len(images) == 2 and all(isinstance(image, Image.Image) for image in images)
    tuned = pipe(history=["A1", "B2"], task="generate_image", query="red shoes", num_images=2, seed=0,
                 temperature=1.0, copy_weight=0.0)  # the sampling settings reach the generator
    assert [np.asarray(image).tolist() for image in tuned] != [np.asarray(image).tolist() for image in images]


def test_inline_item_dicts_override_the_catalogue(pipe, tmp_path):
    path = tmp_path / "shoe.png"
    Image.new("RGBA", (9, 9), (0, 0, 255, 128)).save(path)
    history = [{"item_id": "D4", "image": str(path), "title": "Blue socks"},
               {"item_id": "E5", "image": Image.new("L", (5, 5))}]
    inline = pipe(history=history, top_k=5)
    assert inline != pipe(history=["D4", "E5"], top_k=5)  # the images and title changed the prompt
    assert {result["item_id"] for result in inline} == set(ITEM_IDS)
    # A data URL is read inline (fetching http(s) URLs needs `allow_image_urls=True`: tests/test_image_inputs.py).
    url = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    from_url = pipe(history=[{"item_id": "D4", "image": url, "title": "Blue socks"}, history[1]], top_k=5)
    assert_same_items(from_url, inline)
    with pytest.raises(ValueError, match="Item 'D4': field `image` could not be read"):
        pipe(history=[{"item_id": "D4", "image": "data:image/png;base64,bm90IGFuIGltYWdl"}])


def test_batches_match_single_calls_and_isolate_bad_requests(pipe):
    requests = [
        {"history": ["A1"]},
        {"history": ["ZZ"]},
        {"history": ["B2", "C3"], "task": "search", "query": "hat"},
        {"history": ["B2"], "task": "select", "candidates": ["A1", "E5"]},
        {"history": ["C3", "A1"]},
    ]
    batched = pipe(requests, top_k=3, batch_size=2)
    assert batched[1]["error_type"] == "ValueError" and "'ZZ'" in batched[1]["error"]
    for index in (0, 2, 3, 4):  # left padding changes the float rounding of a batch, not its results
        assert_same_items(batched[index], pipe(requests[index], top_k=3))
    histories = pipe(history=[["A1"], ["C3", "A1"]], top_k=3, batch_size=2)
    assert histories == [batched[0], batched[4]]


def assert_same_items(first: list[dict], second: list[dict]) -> None:
    assert [(r["item_id"], r["title"]) for r in first] == [(r["item_id"], r["title"]) for r in second]
    assert [r["score"] for r in first] == pytest.approx([r["score"] for r in second], abs=1e-5)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ({"history": ["A1"], "task": "recommendation"}, ValueError, "Unknown task 'recommendation'"),
        ({"history": ["A1", "ZZ"]}, ValueError, "Unknown item id 'ZZ' in `history`"),
        ({"history": []}, ValueError, "`history` is empty"),
        ({"history": "A1"}, TypeError, "`history` must be a list"),
        ({"history": ["A1", 7]}, TypeError, "item id \\(str\\) or an item dict"),
        ({"history": [{"title": "no id"}]}, TypeError, "string `item_id`"),
        ({"history": ["A1"], "task": "search"}, ValueError, "needs a `query`"),
        ({"history": ["A1"], "task": "search", "query": "  "}, ValueError, "non-empty `query`"),
        ({"history": ["A1"], "task": "rate_explain"}, ValueError, "needs a `target`"),
        ({"history": ["A1"], "task": "rate_explain", "target": "ZZ"}, ValueError, "Unknown item id 'ZZ' in `target`"),
        ({"history": ["A1"], "task": "select"}, ValueError, "needs `candidates`"),
        ({"history": ["A1"], "task": "select", "candidates": ["B2", "B2"]}, ValueError, "more than once"),
        ({"history": ["A1"], "task": "select", "candidates": ITEM_IDS}, ValueError, "at most 3"),
        ({"history": ["A1"], "top_k": 0}, ValueError, "`top_k` must be a positive integer"),
        ({"history": ["A1"], "top_k": "5"}, TypeError, "`top_k` must be a positive integer"),
        ({"history": ["A1"], "exclude_seen": "yes"}, TypeError, "`exclude_seen`"),
        ({"history": ["A1"], "task": "generate_image", "query": "red", "temperature": 0}, ValueError, "`temperature`"),
        ({"history": ["A1"], "task": "generate_image", "query": "red", "copy_weight": 2}, ValueError, "`copy_weight`"),
        ({"history": ["A1"], "task": "generate_image", "query": "red", "copy_weight": "all"}, TypeError,
         "`copy_weight` must be a number"),
        ({"history": ["A1"], "task": "generate_image", "query": "red", "temperature": "hot"}, TypeError,
         "`temperature` must be a number"),
        ({"history": ["B2", {"item_id": "A1", "rating": float("nan")}]}, ValueError,
         "Item 'A1': field `rating` is nan, not a finite number"),
        ({"history": [{"item_id": "C3", "rating": float("inf")}], "task": "search", "query": "hat"}, ValueError,
         "Item 'C3': field `rating` is inf, not a finite number"),
        ({"history": ["A1"], "batch_size": 0}, ValueError, "`batch_size` must be a positive integer"),
        ({"history": [{"item_id": "A1", "image": "/no/such/image.png"}]}, ValueError, "Item 'A1': field `image`"),
        ({"history": [{"item_id": "C3", "image": {"bytes": b"not a png"}}]}, ValueError, "Item 'C3': field `image`"),
        ({"history": [{"item_id": "C3", "image": 42}]}, ValueError, "Item 'C3': field `image`"),
    ],
)
def test_bad_input_raises_a_clear_error(pipe, call, error, message):
    with pytest.raises(error, match=message):
        pipe(**call)


def test_the_processor_item_index_is_the_pipelines(make_processor):
    """The pipeline checks no id itself: a processor that drops unknown history items makes a pipeline that does."""
    processor = make_processor(unknown_items="drop")
    torch.manual_seed(0)
    dropping = PersonalizationPipeline(model=unimp_for_processor("tiny", processor).eval(), processor=processor)
    assert dropping(history=["A1", "ZZ", "C3"], top_k=3) == dropping(history=["A1", "C3"], top_k=3)
    with pytest.raises(ValueError, match=r"Unknown item id 'ZZ' in `target`: .* item vocabulary of 5 items\."):
        dropping(history=["A1"], task="rate_explain", target="ZZ")


def test_generate_image_encodes_the_request_once_with_the_library_defaults(pipe, monkeypatch):
    """One search prompt (its forward pass retrieves), then one generation prompt for all `num_images`; the
    pipeline's images are `generate_item_images`' with the same defaults (`SAMPLING`)."""
    encoded = []
    encode = pipe.processor.encode

    def counting_encode(sample, *args, **kwargs):
        encoded.append(sample["task"])
        return encode(sample, *args, **kwargs)

    monkeypatch.setattr(pipe.processor, "encode", counting_encode)
    images = pipe(history=["A1", "B2"], task="generate_image", query="red shoes", num_images=3, seed=0)
    assert encoded == ["search", "generate_image"] and len(images) == 3
    monkeypatch.undo()
    tokenizer = pipe._load_image_tokenizer()
    expected = generate_item_images(pipe.model, pipe.processor, tokenizer, ["A1", "B2"], "red shoes", num_images=3,
                                    seed=0)
    explicit = pipe(history=["A1", "B2"], task="generate_image", query="red shoes", num_images=3, seed=0, **SAMPLING)
    pixels = [[np.asarray(image).tolist() for image in run] for run in (images, expected, explicit)]
    assert pixels[0] == pixels[1] == pixels[2]


def test_a_local_users_large_photo_is_downscaled_and_used(pipe, tmp_path):
    """A 6000x6000 photo (36 MP, over the 16.8 MP limit) from a file: the pipeline's own user gets it read at a
    reduced scale; a remote caller's policy refuses it from its header."""
    path = tmp_path / "photo.png"
    Image.new("RGB", (6000, 6000), (200, 40, 40)).save(path, compress_level=1)
    small = tmp_path / "small.png"
    Image.new("RGB", (300, 300), (200, 40, 40)).save(small)
    large = pipe(history=[{"item_id": "A1", "image": str(path)}, "B2"], top_k=5)
    assert_same_items(large, pipe(history=[{"item_id": "A1", "image": str(small)}, "B2"], top_k=5))
    assert large != pipe(history=["A1", "B2"], top_k=5)  # the photo reached the model
    with pytest.raises(ValueError, match="6000x6000 = 36,000,000 pixels, over the limit of 16,777,216"):
        ImagePolicy(allow_paths=False).read(path.read_bytes(), "A1")


def test_bad_request_shapes(pipe):
    with pytest.raises(ValueError, match="Unknown request field\\(s\\) \\['histroy'\\]"):
        pipe({"histroy": ["A1"]})
    with pytest.raises(TypeError, match="Call the pipeline with"):
        pipe(42)
    with pytest.raises(ValueError, match="not both"):
        pipe({"history": ["A1"]}, history=["A1"])


def test_generate_image_without_an_image_tokenizer(processor):
    bare = PersonalizationPipeline(model=unimp_for_processor("tiny", processor), processor=processor)
    with pytest.raises(ValueError, match="(?i)this model has no image tokenizer"):
        bare(history=["A1"], task="generate_image", query="red shoes")


def test_rank_tokens():
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0, -1.0]])
    ranked = rank_tokens(logits, [1, 2, 3], top_k=2, exclude=[[1]])
    probabilities = torch.tensor([1.0, 3.0, 2.0]).softmax(-1)
    assert ranked == [[(2, pytest.approx(probabilities[2].item())), (0, pytest.approx(probabilities[0].item()))]]


def test_token_trie():
    trie = TokenTrie([[5, 6], [5, 7, 8], [9]])
    assert trie.next_tokens([]) == ([5, 9], False)
    assert trie.next_tokens([5]) == ([6, 7], False)
    assert trie.next_tokens([5, 6]) == ([], True)
    assert trie.next_tokens([6]) is None
    assert [5, 7, 8] in trie and [5, 7] not in trie and len(trie) == 3 and trie.max_length == 3
    with pytest.raises(ValueError, match="at least one token"):
        TokenTrie([[]])


@pytest.mark.parametrize("do_sample", [False, True])
def test_constrained_decoding_never_yields_an_invalid_sequence(pipe, do_sample):
    """Multi-token answers (here: random token strings, prefixes of one another included) under the trie."""
    rng = random.Random(0)
    vocabulary = pipe.model.config.text_config.vocab_size
    eos = pipe.processor.tokenizer.eos_token_id
    sequences = [[rng.randrange(3, vocabulary) for _ in range(rng.randint(1, 4))] for _ in range(6)]
    sequences.append(sequences[0] + [rng.randrange(3, vocabulary)])
    trie = TokenTrie(sequences)
    prompts = pipe.processor([{"task": "recommend", "history": h} for h in (["A1"], ["B2", "C3"])], padding_side="left")
    prompt = {k: prompts[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_mask")}
    length = prompt["input_ids"].shape[1]
    torch.manual_seed(0)
    generated = pipe.model.generate(
        **prompt, num_beams=4, num_return_sequences=4, do_sample=do_sample, max_new_tokens=trie.max_length + 1,
        logits_processor=LogitsProcessorList([TrieLogitsProcessor([trie, trie], length, eos)]), pad_token_id=eos,
    )
    answers = answer_sequences(generated, length, eos)
    assert len(answers) == 8 and all(answer in trie for answer in answers)


def test_selection_is_always_a_subset_of_the_candidates(pipe):
    rng = random.Random(1)
    requests = [{"history": rng.sample(ITEM_IDS, 2), "candidates": rng.sample(ITEM_IDS, rng.randint(1, 3))}
                for _ in range(6)]
    for request, selected in zip(requests, pipe(requests, task="select", batch_size=3)):
        ids = [result["item_id"] for result in selected]
        assert ids and len(set(ids)) == len(ids) and set(ids) <= set(request["candidates"])


def test_recommend_with_next_item_template(make_processor):
    """A processor with ids before content (packed next-item training): the pipeline ranks at the same `<answer>`
    that opens every chunk, exactly as the evaluation does."""
    processor = make_processor(history_ids="before")
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor, answer_media="own_chunk").eval()
    bare = PersonalizationPipeline(model=model, processor=processor)
    ranked = bare(history=["A1", "C3"], task="recommend", top_k=None)
    prompt = processor([{"task": "recommend", "history": ["A1", "C3"]}], padding_side="left")
    ids = prompt["input_ids"][0].tolist()
    assert ids[-2:] == [processor.end_of_chunk_token_id, processor.answer_token_id]
    logits = answer_logits(model, {k: prompt[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_mask")})
    assert [result["item_id"] for result in ranked] == processor.rank_items(logits, top_k=None)[0]
