"""A catalogue that grows after training through `pipeline("personalization").add_items` (and the endpoint
handler): the added items are ranked from their content, survive `save_pretrained` and the Hub export, and reload as
remote code."""

import base64
import io

import pytest
import torch
from PIL import Image
from transformers import pipeline

from processing_unimp.content_unimp import fill_item_content
from processing_unimp.export import hub as export_hub
from processing_unimp.handler import MAX_ADDED_ITEMS, EndpointHandler
from processing_unimp.training.initialisation import unimp_for_processor

NEW = [{"item_id": "N1", "title": "Blue denim shirt", "categories": ["Shirts"]},
       {"item_id": "N2", "title": "Red running shoes", "categories": ["Shoes"]}]
HISTORY = ["A1", "B2"]


def test_added_items_are_ranked_and_reload_as_remote_code(make_processor, tmp_path, run_isolated):
    processor = make_processor(history_ids="before")
    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor, item_rows="content", freeze_vision_tower=True).eval()
    fill_item_content(model, processor)
    pipe = pipeline("personalization", model=model, processor=processor)
    assert pipe.add_items(NEW) == ["N1", "N2"]
    ranked = pipe(history=HISTORY, task="recommend", top_k=len(processor.item_ids))
    scores = {row["item_id"]: row["score"] for row in ranked}
    assert {"N1", "N2"} <= set(scores) and all(0 < scores[i] < 1 for i in ("N1", "N2"))
    folder = tmp_path / "grown"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    exported = export_hub.export(folder, tmp_path / "export")
    remote = run_isolated(
        """
        import json, sys
        from transformers import pipeline
        pipe = pipeline("personalization", model=sys.argv[1], trust_remote_code=True)
        ranked = pipe(history=["A1", "B2"], task="recommend", top_k=int(sys.argv[2]))
        print(json.dumps({row["item_id"]: row["score"] for row in ranked}))
        """,
        str(exported), str(len(processor.item_ids)),
    )
    assert remote.keys() == scores.keys()
    for item_id, score in scores.items():
        assert abs(remote[item_id] - score) < 1e-5


def test_a_bad_item_adds_nothing(make_processor):
    processor = make_processor(history_ids="before")
    model = unimp_for_processor("tiny", processor, item_rows="content", freeze_vision_tower=True)
    fill_item_content(model, processor)
    pipe = pipeline("personalization", model=model, processor=processor)
    before = (list(processor.item_ids), len(processor.tokenizer), model.get_input_embeddings().weight.shape)
    try:
        pipe.add_items([NEW[0], {"item_id": "A1", "title": "duplicate"}])
    except ValueError as error:
        assert "A1" in str(error) and "item_id" in str(error)
    else:
        raise AssertionError("a duplicate id was accepted")
    assert (list(processor.item_ids), len(processor.tokenizer), model.get_input_embeddings().weight.shape) == before


def test_the_endpoint_handler_adds_items_sent_inline_and_refuses_a_server_path(make_processor, tmp_path):
    processor = make_processor(history_ids="before")
    model = unimp_for_processor("tiny", processor, item_rows="content", freeze_vision_tower=True).eval()
    fill_item_content(model, processor)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    previous = Image.MAX_IMAGE_PIXELS  # the handler turns PIL's decompression-bomb guard on: restore it after
    try:
        handler = EndpointHandler(str(export_hub.export(tmp_path / "model", tmp_path / "export")))
        Image.new("RGB", (4, 4), "red").save(tmp_path / "secret.png")
        for bad, field in [([{**NEW[0], "image": str(tmp_path / "secret.png")}], "N1"),
                           ([NEW[0]] * (MAX_ADDED_ITEMS + 1), "at most"), ({"item_id": "N1"}, "non-empty list")]:
            with pytest.raises(ValueError, match=field):
                handler({"add_items": bad})
        assert "N1" not in handler.pipeline.processor.item_ids  # nothing half-added
        buffer = io.BytesIO()
        Image.new("RGB", (9, 9), "blue").save(buffer, format="PNG")
        photo = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        assert handler({"add_items": [{**NEW[0], "image": photo}, NEW[1]]}) == {"added": ["N1", "N2"]}
        ranked = handler({"inputs": {"history": HISTORY}, "parameters": {"task": "recommend", "top_k": 100}})
        assert {"N1", "N2"} <= {row["item_id"] for row in ranked}
    finally:
        Image.MAX_IMAGE_PIXELS = previous
