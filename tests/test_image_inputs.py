"""image_inputs_unimp: inline-only images for remote callers, URLs only when asked and never to private addresses,
byte and pixel limits before decoding."""

from __future__ import annotations

import base64
import io
import warnings

import pytest
from PIL import Image

from processing_unimp import image_inputs_unimp
from processing_unimp.image_inputs_unimp import ImagePolicy, enable_decompression_bomb_guard, fetch_url
from processing_unimp.image_processing_unimp import load_rgb_image

REMOTE = ImagePolicy(allow_paths=False, allow_urls=False)
FETCHING = ImagePolicy(allow_paths=True, allow_urls=True)


def png(color: str = "red", size: tuple[int, int] = (6, 5)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_a_remote_caller_may_send_images_inline_only():
    for value in (png(), bytearray(png()), {"bytes": png(), "path": None}, base64.b64encode(png()).decode(),
                  data_url(png()), Image.new("L", (6, 5))):
        image = REMOTE.read(value, "A1")
        assert image.mode == "RGB" and image.size == (6, 5)


def test_a_remote_path_is_refused_alike_whether_or_not_it_exists(tmp_path):
    existing = tmp_path / "secret.png"
    existing.write_bytes(png())
    messages = set()
    for value in (str(existing), str(tmp_path / "missing.png"), "/etc/passwd", "../../etc/hosts", existing,
                  {"bytes": None, "path": str(existing)}, {"path": "/etc/passwd"}, "file:///etc/passwd"):
        with pytest.raises(ValueError) as error:
            REMOTE.read(value, "A1")
        message = str(error.value)
        assert "Item 'A1': field `image`" in message and "inline" in message
        assert str(tmp_path) not in message and "etc" not in message and "secret" not in message
        messages.add(message)
    assert len(messages) == 1  # one message for every form: it cannot tell what exists on the server


def test_urls_are_refused_unless_asked_for_and_never_reach_a_loopback_server(loopback_server):
    url = f"{loopback_server.url}/image.png"
    with pytest.raises(ValueError, match="is a URL; send the image inline"):
        REMOTE.read(url, "A1")
    with pytest.raises(ValueError, match="allow_image_urls=True"):
        ImagePolicy().read(url, "A1")
    port = loopback_server.port
    for address in (url, f"http://localhost:{port}/image.png", f"http://[::1]:{port}/image.png",
                    f"http://127.1:{port}/image.png", f"http://2130706433:{port}/image.png",
                    f"http://[::ffff:127.0.0.1]:{port}/image.png", f"https://127.0.0.1:{port}/image.png"):
        with pytest.raises(ValueError, match="(a loopback address|does not resolve)"):
            FETCHING.read(address, "A1")
    refused = (("http://10.1.2.3/x.png", "private"), ("http://192.168.0.1/x.png", "private"),
               ("http://169.254.169.254/latest/meta-data", "link-local"), ("http://0.0.0.0/x.png", "unspecified"),
               ("http://[fe80::1]/x.png", "link-local"), ("http://100.64.0.1/x.png", "non-global"))
    for address, kind in refused:
        with pytest.raises(ValueError, match=f", a {kind} address, which is never fetched"):
            FETCHING.read(address, "A1")
    for address in ("ftp://example.com/x.png", "http:///x.png"):
        with pytest.raises(ValueError, match="http:// or https:// URL with a host"):
            fetch_url(address)
    assert loopback_server.requests == []


def test_a_url_on_a_public_address_is_fetched_within_limits(loopback_server, monkeypatch):
    """`images.test` stands for a public host (it resolves to the loopback server here); every other name is checked
    for real, so a redirect to 127.0.0.1 is refused before it is followed."""
    real = image_inputs_unimp.public_addresses
    monkeypatch.setattr(image_inputs_unimp, "public_addresses",
                        lambda host, port: ["127.0.0.1"] if host == "images.test" else real(host, port))
    public = f"http://images.test:{loopback_server.port}"
    assert FETCHING.read(f"{public}/image.png", "A1").getpixel((0, 0)) == (128, 0, 128)
    with pytest.raises(ValueError, match="a loopback address"):
        FETCHING.read(f"{public}/redirect?to={loopback_server.url}/image.png", "A1")
    assert FETCHING.read(f"{public}/redirect?to={public}/image.png", "A1").size == (10, 12)
    with pytest.raises(ValueError, match="65,536 bytes, over the limit of 1,000"):
        ImagePolicy(allow_urls=True, max_bytes=1000).read(f"{public}/big", "A1")
    assert loopback_server.requests == ["/image.png", f"/redirect?to={loopback_server.url}/image.png",
                                        f"/redirect?to={public}/image.png", "/image.png", "/big"]


def test_inline_data_is_bounded_before_it_is_decoded(bomb_png):
    small = ImagePolicy(allow_paths=False, max_bytes=100)
    big = png(size=(60, 60)) + b"\0" * 200
    for value in (big, base64.b64encode(big).decode(), data_url(big), {"bytes": big}):
        with pytest.raises(ValueError, match="over the limit of 100"):
            small.read(value, "A1")
    with pytest.raises(ValueError, match="5000x5000 = 25,000,000 pixels, over the limit of 16,777,216"):
        REMOTE.read(bomb_png(5000, 5000), "A1")  # the header is read, no pixel decoded (a local photo is downscaled)
    for policy in (REMOTE, ImagePolicy()):  # remote and local alike
        with pytest.raises(
            ValueError, match="Item 'A1': field `image` is over the pixel limit \\(.*decompression bomb"
        ):
            policy.read(data_url(bomb_png(30000, 30000)), "A1")  # PIL's own guard, past 2 x MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="over the limit of 4"):
        load_rgb_image(Image.new("RGB", (3, 2)), "A1", max_pixels=4)


def test_bad_inline_data_gets_a_clear_message():
    for value, message in (("data:text/plain;base64,aGk=", "not `data:image/<type>;base64,<data>`"),
                           ("data:image/png,rawbytes", "not `data:image/<type>;base64,<data>`"),
                           ("data:image/png;base64,@@@", "not valid base64"),
                           (data_url(b"not a png"), "not an image PIL can decode"),
                           (b"", "is empty"), (42, "is not an image sent inline")):
        with pytest.raises(ValueError, match=message):
            REMOTE.read(value, "A1")
    with pytest.raises(ValueError, match="got int"):
        ImagePolicy().read(42, "A1")


def test_the_decompression_bomb_guard_is_turned_on_and_raises(monkeypatch, bomb_png):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with warnings.catch_warnings():
        enable_decompression_bomb_guard(1000)
        assert Image.MAX_IMAGE_PIXELS == 1000
        with pytest.raises(Image.DecompressionBombError):  # any PIL decode in the process now refuses it
            Image.open(io.BytesIO(bomb_png(2001, 1)))
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(bomb_png(1001, 1)))


def test_the_pipeline_fetches_urls_only_when_asked_and_never_from_loopback(trained_model_dir, loopback_server):
    from transformers import pipeline

    url = f"{loopback_server.url}/image.png"
    own = pipeline("personalization", model=str(trained_model_dir))
    assert own.image_policy == ImagePolicy(allow_paths=True, allow_urls=False)
    with pytest.raises(ValueError, match="Item 'A1': field `image` is a URL; pass `allow_image_urls=True`"):
        own(history=[{"item_id": "A1", "image": url}])
    fetching = pipeline("personalization", model=str(trained_model_dir), allow_image_urls=True)
    with pytest.raises(ValueError, match="Item 'A1': field `image` was not fetched: .* a loopback address"):
        fetching(history=[{"item_id": "A1", "image": url}])
    with pytest.raises(ValueError, match="Unknown item id 'ZZ'"):  # the item is checked before its image is read
        fetching(history=[{"item_id": "ZZ", "image": url}])
    assert loopback_server.requests == []
