"""handler.py, tried as an attacker would: no server file is opened or probed, no URL fetched, limits hold."""

from __future__ import annotations

import base64
import io
import json
import warnings

import pytest
from PIL import Image

from processing_unimp.export import hub as export_hub
from processing_unimp.handler import EndpointHandler

INLINE = "send the image inline"


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def exported(trained_model_dir, tmp_path_factory):
    return export_hub.export(trained_model_dir, tmp_path_factory.mktemp("handler") / "unimp-tiny")


@pytest.fixture(scope="module")
def handler(exported):
    with warnings.catch_warnings():  # the handler makes PIL's decompression-bomb warning an error: undo it after
        previous = Image.MAX_IMAGE_PIXELS
        yield EndpointHandler(path=str(exported))
        Image.MAX_IMAGE_PIXELS = previous


def request(image, where: str = "history") -> dict:
    item = {"item_id": "A1", "image": image}
    inputs = {"history": [item, "B2"]}
    parameters = {"task": "recommend", "top_k": 3}
    if where == "target":
        inputs, parameters = {"history": ["B2"], "target": item}, {"task": "rate_explain", "max_new_tokens": 2}
    if where == "candidates":
        inputs, parameters = {"history": ["B2"], "candidates": [item, "C3"]}, {"task": "select"}
    return {"inputs": inputs, "parameters": parameters}


def test_inline_images_are_served(handler):
    result = handler(request(data_url(Image.new("RGB", (7, 7), "blue"))))
    assert [set(item) for item in result] == [{"item_id", "score", "title"}] * 3
    raw = data_url(Image.new("RGB", (7, 7), "blue")).split(",", 1)[1]
    assert handler(request(raw)) == result  # plain base64 reads the same as the data URL
    assert Image.MAX_IMAGE_PIXELS <= 2048 * 2048  # PIL's decompression-bomb guard is on, at the handler's limit


@pytest.mark.parametrize("where", ["history", "target", "candidates"])
def test_a_server_path_is_never_opened_nor_probed(handler, exported, tmp_path, where):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), "red").save(secret)
    messages = set()
    for path in (str(secret), str(tmp_path / "missing.png"), str(exported / "config.json"), "/etc/passwd",
                 {"path": str(secret)}, {"bytes": None, "path": "/etc/passwd"}):
        with pytest.raises(ValueError, match=INLINE) as error:
            handler(request(path, where))
        assert str(tmp_path) not in str(error.value) and "etc" not in str(error.value)
        messages.add(str(error.value))
    assert len(messages) == 1  # the same answer whether the path exists or not


def test_no_url_is_fetched(handler, loopback_server):
    for url in (f"{loopback_server.url}/image.png", f"http://localhost:{loopback_server.port}/image.png",
                "http://169.254.169.254/latest/meta-data", "https://example.com/image.png"):
        with pytest.raises(ValueError, match=f"is a URL; {INLINE}") as error:
            handler(request(url))
        assert "127.0.0.1" not in str(error.value) and "169.254" not in str(error.value)
    batch = {"inputs": [request(f"{loopback_server.url}/image.png")["inputs"], {"history": ["A1"]}]}
    results = handler(batch)
    assert results[0]["error_type"] == "ValueError" and "is a URL" in results[0]["error"] and len(results[1]) == 5
    assert loopback_server.requests == []


def test_images_and_parameters_are_bounded(handler, bomb_png, loopback_server):
    with pytest.raises(ValueError, match="2100x2000 = 4,200,000 pixels, over the limit of 4,194,304"):
        handler(request("data:image/png;base64," + base64.b64encode(bomb_png(2100, 2000)).decode()))
    with pytest.raises(ValueError, match="is over the pixel limit \\(.*decompression bomb"):  # PIL's guard, first
        handler(request("data:image/png;base64," + base64.b64encode(bomb_png(3000, 3000)).decode()))
    with pytest.raises(ValueError, match="over the limit of 4,194,304 bytes"):
        handler(request(base64.b64encode(b"\0" * (4 * 1024 * 1024 + 10)).decode()))
    with pytest.raises(ValueError, match="Unknown parameter\\(s\\) \\['allow_image_urls'\\]"):
        handler(
            {"inputs": request(f"{loopback_server.url}/image.png")["inputs"], "parameters": {"allow_image_urls": True}}
        )
    with pytest.raises(ValueError, match="`num_images` may be at most 4"):
        handler(
            {"inputs": {"history": ["A1"], "query": "hat"}, "parameters": {"task": "generate_image", "num_images": 500}}
        )
    with pytest.raises(ValueError, match="`copy_weight` must be in \\[0, 1\\]"):  # sampling settings reach the pipeline
        handler({"inputs": {"history": ["A1"], "query": "hat"},
                 "parameters": {"task": "generate_image", "temperature": 0.7, "copy_weight": 3}})
    with pytest.raises(TypeError, match='"parameters" must be an object'):
        handler({"inputs": {"history": ["A1"]}, "parameters": ["top_k"]})
    with pytest.raises(ValueError, match='needs "inputs"'):
        handler({"history": ["A1"]})
    assert loopback_server.requests == []


def test_a_rating_that_is_not_a_finite_number_is_refused(handler):
    nan = {"item_id": "A1", "rating": float("nan")}  # what `json.loads('{"rating": NaN}')` gives
    with pytest.raises(ValueError, match="Item 'A1': field `rating` is nan, not a finite number"):
        handler({"inputs": {"history": [nan, "B2"]}})
    results = handler({"inputs": [{"history": ["B2", nan]}, {"history": ["B2"]}]})
    assert results[0]["error_type"] == "ValueError" and "field `rating` is nan" in results[0]["error"]
    assert len(results[1]) == 5


HANDLER_SCRIPT = """
import importlib.util, json, sys
folder, requests = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("handler", folder + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(path=folder)
answers = []
for request in requests:
    try:
        answers.append({"result": handler(request)})
    except (ValueError, TypeError) as error:
        answers.append({"error": str(error)})
assert not {"modeling_unimp", "processing_unimp"} & set(sys.modules)
print(json.dumps(answers))
"""


def test_the_exported_handler_refuses_them_as_remote_code(exported, run_isolated, loopback_server, tmp_path):
    """The handler as an endpoint runs it: from the export folder, where the UniMP packages are not importable."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), "red").save(secret)
    inline = data_url(Image.new("RGB", (7, 7), "blue"))
    paths_and_urls = (str(secret), str(tmp_path / "missing.png"), f"{loopback_server.url}/image.png", inline)
    requests = [request(image) for image in paths_and_urls]
    answers = run_isolated(HANDLER_SCRIPT, str(exported), json.dumps(requests))
    assert answers[0] == answers[1] and INLINE in answers[0]["error"] and str(tmp_path) not in answers[0]["error"]
    assert "is a URL" in answers[2]["error"] and "127.0.0.1" not in answers[2]["error"]
    assert len(answers[3]["result"]) == 3
    assert loopback_server.requests == []
