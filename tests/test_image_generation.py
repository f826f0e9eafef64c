"""Image generation: VQ codes round trip, constrained code generation, retrieve-then-generate, image metrics."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from processing_unimp import UniMPProcessor
from processing_unimp.evaluation.images import (
    category_consistency,
    evaluate_image_generation,
    frechet_distance,
    personalization_score,
    train_feature_classifier,
)
from processing_unimp.export.figures import image_grid
from processing_unimp.generation_unimp import (
    SAMPLING,
    ContextCodeMixer,
    ImageCodeLogitsProcessor,
    generate_image_codes,
    generate_item_images,
    retrieve_items,
    with_image_codes,
)
from processing_unimp.image_codes_unimp import (
    add_image_codes,
    code_grid_size,
    decode_image_codes,
    encode_image_codes,
    load_image_tokenizer,
)
from processing_unimp.training.image_tokenizer import build_vq, train_image_tokenizer
from processing_unimp.training.initialisation import unimp_for_processor

CODEBOOK = 16


def shape_image(kind: int, seed: int) -> Image.Image:
    """A 16x16 grayscale picture of a bar (kind 0), a square (1) or a cross (2), with noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (16, 16)).astype(np.uint8)
    if kind == 0:
        pixels[2:14, 6:10] = 220
    elif kind == 1:
        pixels[4:12, 4:12] = 220
    else:
        pixels[7:9, :] = pixels[:, 7:9] = 220
    return Image.fromarray(pixels, mode="L")


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    return build_vq(16, 1, CODEBOOK, (4, 8, 8), 4).eval()


@pytest.fixture(scope="module")
def items(vq):
    rows = [{"item_id": f"i{n}", "title": f"{('bar', 'square', 'cross')[n % 3]} number {n}",
             "categories": [("bar", "square", "cross")[n % 3]], "image": shape_image(n % 3, n)} for n in range(9)]
    rows.append({"item_id": "no-image", "title": "a gift card"})
    from processing_unimp import items_dataset

    return add_image_codes(items_dataset(rows), vq)


@pytest.fixture(scope="module")
def processor(items):
    return UniMPProcessor.from_catalogue(items, vocab_size=300, image_size=16, codebook_size=CODEBOOK,
                                         item_fields=["title"])


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    return unimp_for_processor("tiny", processor).eval()


def test_codes_round_trip_shapes(vq):
    images = [shape_image(kind, kind) for kind in range(3)]
    codes = encode_image_codes(vq, images)
    assert code_grid_size(vq) == (4, 4)
    assert codes.shape == (3, 16) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < CODEBOOK
    decoded = decode_image_codes(vq, codes)
    assert [(image.size, image.mode) for image in decoded] == [((16, 16), "L")] * 3
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        decode_image_codes(vq, torch.full((1, 16), CODEBOOK))


def test_add_image_codes_feeds_the_generate_image_template(items, processor):
    assert items["image_codes"][-1] is None and all(len(codes) == 16 for codes in items["image_codes"][:-1])
    sample = {"task": "generate_image", "history": ["i0", "i1"], "query": "bar", "target": "i3"}
    input_ids = processor.encode(sample)["input_ids"]
    code_ids = [i for i in input_ids if i in set(processor.image_code_token_ids)]
    assert len(code_ids) == 3 * 16  # two context items and the target
    assert processor.decode_image_codes(code_ids[-16:]).flatten().tolist() == items["image_codes"][3]


def test_tokenizer_training_saves_and_reports_psnr(tmp_path):
    items = datasets.Dataset.from_dict(
        {"item_id": [f"i{n}" for n in range(12)], "image": [shape_image(n % 3, n) for n in range(12)]},
        features=datasets.Features({"item_id": datasets.Value("string"), "image": datasets.Image()}),
    )
    vq, results = train_image_tokenizer(items, tmp_path / "vq", codebook_size=8, image_size=16,
                                        block_out_channels=(4, 8, 8), latent_channels=4, epochs=2, batch_size=4)
    saved = json.loads((tmp_path / "vq" / "image_tokenizer_results.json").read_text())
    assert saved == results and results["grid"] == [4, 4] and results["held_out"]["psnr"] > 0
    assert vq.config.in_channels == 1  # grayscale catalogue
    reloaded = load_image_tokenizer(tmp_path / "vq")
    assert torch.equal(encode_image_codes(reloaded, items["image"]), encode_image_codes(vq, items["image"]))
    assert not any(path.name.startswith(".vq") for path in tmp_path.iterdir())  # no staging left behind


def test_constrained_generation_yields_exactly_one_grid_of_codes(model, processor):
    sample = {"task": "generate_image", "history": ["i0", "i4"], "query": "square"}
    inputs = processor([sample], padding_side="left")
    inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_mask")}
    from transformers import LogitsProcessorList

    generated = model.generate(**inputs, max_new_tokens=16, do_sample=True, pad_token_id=0,
                               logits_processor=LogitsProcessorList([ImageCodeLogitsProcessor(processor.image_code_token_ids)]))
    new = generated[0, inputs["input_ids"].shape[1]:].tolist()
    assert len(new) == 16 and set(new) <= set(processor.image_code_token_ids)
    codes = generate_image_codes(model, processor, [["i0"], ["i1", "i2"]], ["bar", "square"], 16, batch_size=1)
    assert codes.shape == (2, 16) and int(codes.max()) < CODEBOOK
    with pytest.raises(ValueError, match="codebook_size=0"):
        ImageCodeLogitsProcessor([])


def test_copy_weight_copies_the_context_items_codes_keeping_to_one_item(model, processor, items):
    codes = {item_id: torch.tensor(c) for item_id, c in zip(items["item_id"], items["image_codes"]) if c}
    assert not torch.equal(codes["i0"], codes["i3"])
    torch.manual_seed(0)
    contexts = [["i1"], ["no-image"]] + [["i0", "i3"]] * 8
    copied = generate_image_codes(model, processor, contexts, ["a"] * len(contexts), 16, copy_weight=1.0)
    assert torch.equal(copied[0], codes["i1"])  # one context item: its codes exactly
    # two items: each grid is one item's whole grid, not a patchwork of the two
    assert all(torch.equal(row, codes["i0"]) or torch.equal(row, codes["i3"]) for row in copied[2:])
    torch.manual_seed(0)
    alone = generate_image_codes(model, processor, [["no-image"]], ["c"], 16, copy_weight=0.0)
    torch.manual_seed(0)
    mixed = generate_image_codes(model, processor, [["no-image"]], ["c"], 16, copy_weight=0.5)
    assert torch.equal(alone, mixed)  # no codes in the context: the model alone
    with pytest.raises(ValueError, match=r"`copy_weight` must be in \[0, 1\], got 1\.5"):
        ContextCodeMixer([codes["i0"][None]], processor.image_code_token_ids, 1.5, 0)


def test_sampling_has_one_default_and_one_validation(model, processor):
    """`SAMPLING` is what every entry point samples with unless told; a prompt is encoded once for many images."""
    contexts, queries = [["i0", "i3"], ["i1"]], ["bar", "square"]
    torch.manual_seed(0)
    default = generate_image_codes(model, processor, contexts, queries, 16, num_images=2)
    torch.manual_seed(0)
    explicit = generate_image_codes(model, processor, [c for c in contexts for _ in range(2)],
                                    [q for q in queries for _ in range(2)], 16, **SAMPLING)
    assert default.shape == (4, 16) and torch.equal(default, explicit)
    for sampling, error, message in (({"temperature": 0}, ValueError, "`temperature` must be above 0, got 0"),
                                     ({"temperature": "hot"}, TypeError, "`temperature` must be a number"),
                                     ({"copy_weight": -0.5}, ValueError, "`copy_weight` must be in \\[0, 1\\]"),
                                     ({"copy_weight": True}, TypeError, "`copy_weight` must be a number")):
        with pytest.raises(error, match=message):
            generate_image_codes(model, processor, contexts, queries, 16, **sampling)


def test_generate_item_images_end_to_end(model, processor, vq):
    history = ["i0", "i3", "i6"]
    images = generate_item_images(model, processor, vq, history, "bar", num_retrieved=2, num_images=2, seed=0)
    assert len(images) == 2 and all(isinstance(image, Image.Image) and image.size == (16, 16) for image in images)
    again = generate_item_images(model, processor, vq, history, "bar", num_retrieved=2, num_images=2, seed=0)
    assert [np.asarray(a).tolist() for a in images] == [np.asarray(b).tolist() for b in again]
    plain = generate_item_images(model, processor, vq, history, "bar", retrieve=False, do_sample=False)
    assert len(plain) == 1 and plain[0].size == (16, 16)
    retrieved = retrieve_items(model, processor, [history], ["bar"], num_retrieved=3, exclude=[history])
    assert len(retrieved[0]) == 3 and not set(retrieved[0]) & set(history)
    grid = image_grid([[images[0], plain[0]], [images[1]]], scale=2, padding=1)
    assert grid.size == (2 * 33 + 1, 2 * 33 + 1)


def test_missing_codes_are_encoded_inline_and_codebook_must_match(processor, vq):
    inline = with_image_codes(processor, vq, ["i0", {"item_id": "i1", "image_codes": None, "image": shape_image(1, 5)}])
    assert inline[0] == "i0"  # codes already in the catalogue
    assert inline[1]["image_codes"] == encode_image_codes(vq, [shape_image(1, 5)])[0].tolist()
    other = build_vq(16, 1, 2 * CODEBOOK, (4, 8, 8), 4)
    with pytest.raises(ValueError, match="codebook_size=16.*num_vq_embeddings=32"):
        generate_item_images(None, processor, other, ["i0"], "bar")


def test_frechet_distance():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 4, generator=generator) @ torch.randn(4, 4, generator=generator)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    near, far = frechet_distance(features, features + 0.5), frechet_distance(features, features + 2.0)
    assert near == pytest.approx(4 * 0.25, rel=1e-6) and far == pytest.approx(4 * 4.0, rel=1e-6)
    scaled = frechet_distance(features, 2 * features)
    assert scaled > 0
    linalg = pytest.importorskip("scipy.linalg")
    a, b = features[:200].double().numpy(), (features[200:] * 1.5 + 0.3).double().numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(features[:1], features)


def test_personalization_and_consistency():
    generator = torch.Generator().manual_seed(0)
    tastes = torch.randn(30, 8, generator=generator)
    histories = [taste + 0.1 * torch.randn(5, 8, generator=generator) for taste in tastes]
    assert personalization_score(tastes, histories) == 1.0
    unrelated = personalization_score(torch.randn(30, 8, generator=generator), histories)
    assert 0.3 < unrelated < 0.7
    assert personalization_score(-tastes, histories) < 0.1
    assert category_consistency([1, 2, 3, 3], [1, 2, 0, 3]) == 0.75
    with pytest.raises(ValueError, match="one history per generated image"):
        personalization_score(tastes[:3], histories)


def test_evaluate_image_generation_block():
    images = [shape_image(n % 3, n) for n in range(30)]
    classes = [n % 3 for n in range(30)]
    classifier, accuracy = train_feature_classifier(images, {"class": classes}, channels=1, image_size=16, epochs=3)
    assert set(accuracy) == {"class_accuracy"}
    histories = [[shape_image(n % 3, 100 + n), shape_image(n % 3, 200 + n)] for n in range(30)]
    noise = [Image.fromarray(np.random.default_rng(n).integers(0, 255, (16, 16)).astype(np.uint8)) for n in range(30)]
    results = evaluate_image_generation(classifier, {"copy": images, "noise": noise}, images, classes, histories)
    assert set(results) == {"copy", "noise"} and set(results["copy"]) == {"fid", "consistency", "personalization"}
    assert results["copy"]["fid"] == pytest.approx(0.0, abs=1e-3) and results["noise"]["fid"] > results["copy"]["fid"]
    styled, _ = train_feature_classifier(images, {"class": classes, "style": [n % 3 for n in range(30)]},
                                         channels=1, image_size=16, epochs=3)
    paired = evaluate_image_generation(styled, {"copy": images, "noise": noise}, images, classes, histories,
                                       baseline="noise", target_styles=[n % 3 for n in range(30)])
    assert paired["copy"]["style_consistency"] > paired["noise"]["style_consistency"]
    versus = paired["copy"]["vs_noise"]
    assert versus["style_consistency_difference"] == pytest.approx(
        paired["copy"]["style_consistency"] - paired["noise"]["style_consistency"], abs=1e-3)
    assert "vs_noise" not in paired["noise"]
    assert versus["fid_difference"] == pytest.approx(paired["copy"]["fid"] - paired["noise"]["fid"], abs=1e-3)
    assert versus["fid_difference"] < -2 * versus["fid_difference_se"] < 0  # clearly better than noise
    assert versus["consistency_difference"] == pytest.approx(
        paired["copy"]["consistency"] - paired["noise"]["consistency"], abs=1e-3)
    assert versus["personalization_difference_se"] > 0
    with pytest.raises(ValueError, match="baseline 'nothing'"):
        evaluate_image_generation(classifier, {"copy": images}, images, classes, histories, baseline="nothing")
    with pytest.raises(ValueError, match="`class`"):
        train_feature_classifier(images, {"style": classes}, channels=1, image_size=16)


def test_image_generation_benchmark_trains_the_recipe_and_reports_search_beside_the_images(tmp_path):
    """The benchmark's model is the ranking recipe's (packed recommend + search + generate_image): its search
    ranking and that of the floor it must beat come with the image sets' scores; it is saved, and scored again
    from the saved folder."""
    from processing_unimp.benchmark.image_generation import METHODS, run_image_generation
    from processing_unimp.image_codes_unimp import IMAGE_TOKENIZER_FOLDER

    report, rows = run_image_generation("fashion-shop", tmp_path, tokenizer_epochs=1, preset="tiny", max_steps=3,
                                        task_samples=40, validation_users=16, test_users=16, eval_users=4,
                                        seed=0)
    assert set(report["image_generation"]) == set(METHODS)
    for scores in report["image_generation"].values():
        assert np.isfinite(scores["fid"]) and 0 <= scores["consistency"] <= 1 and 0 <= scores["personalization"] <= 1
    assert {"unimp", "popularity in the query's category"} == set(report["search"])
    assert 0 <= report["search"]["unimp"]["HR@10"] <= 1 and report["training"]["train_steps"] == 3
    assert report["image_generation"]["wanted_item"]["fid"] == 0  # the reference set itself
    assert report["num_users"] == 4 and len(rows) == 4
    assert all(len(row) == len(METHODS) for row in rows)  # the wanted item first, then every other set
    saved = tmp_path / "unimp"
    assert (saved / IMAGE_TOKENIZER_FOLDER).is_dir()
    assert len(UniMPProcessor.from_pretrained(saved).image_code_token_ids) == report["image_tokenizer"]["codebook_size"]
    # the saved model scored again on validation users (how sampling settings are chosen), without training
    again, _ = run_image_generation("fashion-shop", tmp_path / "again", model_dir=saved, eval_users=3,
                                    split="validation", temperature=0.7, copy_weight=0.5, seed=0)
    assert again["split"] == "validation" and again["num_users"] == 3 and "training" not in again
    assert set(again["image_generation"]) == set(METHODS) and "unimp" in again["search"]
    assert {"fid_difference", "personalization_difference_se"} <= set(
        again["image_generation"]["retrieve_then_generate"]["vs_no_retrieval"])
    assert "vs_no_retrieval" not in again["image_generation"]["no_retrieval"]
