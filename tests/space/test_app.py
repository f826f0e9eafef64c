"""examples/space/app.py: every callback a person (or an attacker) reaches, on a tiny exported model."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import gradio as gr  # in the dev extra: these tests always run
import pytest
from PIL import Image

from processing_unimp.generation_unimp import retrieve_items


def png(colour: str = "purple", size: tuple[int, int] = (9, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_app_finds_the_exported_model_and_its_test_users(app_module, space_export, monkeypatch, demo):
    assert app_module.resolve_model() == str(space_export["space"] / "../hub")
    assert [user for user in demo.users] == ["u1", "u2"]
    monkeypatch.setenv("UNIMP_MODEL", "org/other-model")
    monkeypatch.setenv("UNIMP_USERS", "elsewhere.json")
    assert app_module.resolve_model() == "org/other-model" and str(app_module.resolve_users()) == "elsewhere.json"
    assert app_module.resolve_model("cli/model") == "cli/model"
    assert "24 catalogue items · 2 test users · ready" in demo.status()
    assert Image.MAX_IMAGE_PIXELS == 2048 * 2048  # PIL's decompression-bomb guard, on at the app's limit


def test_a_person_builds_a_history_and_gets_ten_recommendations(demo):
    text, info, user = demo.load_user("u1")
    assert (text, user) == ("i00, i05", "u1") and "held-out next item is **Black shoes · i09**" in info
    text = demo.add_items(text, ["i12", "i00"])  # a repeated item moves to the end
    assert text == "i05, i12, i00"
    assert [card[1] for card in demo.show_history(text, "u1")] == [
        "Yellow shirt · i05 · rated 4", "Red hat · i12", "Red shirt · i00 · rated 5"]
    page = demo.catalogue_page("red")
    assert [label for _, label in page] == ["Red shirt · i00", "Red shoes · i06", "Red hat · i12", "Red bag · i18"]
    text = demo.add_from_catalogue("red", text, gr.SelectData(None, {"index": 1, "value": None}))
    assert text.endswith("i00, i06")
    cards, table = demo.recommend(text, "u1", None, False)
    assert len(cards) == 10 and all(isinstance(image, Image.Image) and image.size == (112, 112) for image, _ in cards)
    ranked = re.findall(r"^\| (\d+) \| `(i\d\d)` \| ([^|]+) \| ([\d.]+) \|$", table, re.MULTILINE)
    assert [int(rank) for rank, *_ in ranked] == list(range(1, 11))
    captions = [re.fullmatch(r"(\d+)\. (.+) \(([\d.]+)\)( ★)?", caption).groups() for _, caption in cards]
    assert [(r, title, mark is not None) for r, title, _, mark in captions] == [
        (r, t.replace(" ★ held-out next item", ""), "★" in t) for r, _, t, _ in ranked]
    # The caption rounds the score to 3 decimals, the table to 4: they agree to the caption's precision.
    assert all(abs(float(c[2]) - float(p)) <= 0.00051 for c, (*_, p) in zip(captions, ranked))
    scores = [float(score) for *_, score in ranked]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    _, table = demo.recommend(text, "u1", None, True)
    assert not {"i05", "i12", "i00", "i06"} & set(re.findall(r"`(i\d\d)`", table))
    _, table = demo.recommend("i00, i05", "u1", None, False)  # the user's own history: the held-out item is marked
    assert table.count("★ held-out next item") == ("`i09`" in table)


def test_search_rating_selection_and_generation(demo):
    found, table = demo.search("i00, i05", None, None, "red hat")
    assert len(found) == 10 and table.count("\n") == 11
    picture, headline, distribution, explanation = demo.rate("i00, i05", "u1", None, "i03")
    assert "Black shirt · i03" in headline and "Predicted rating" in headline and isinstance(picture, Image.Image)
    assert list(distribution) == ["1 ★", "2 ★", "3 ★", "4 ★", "5 ★"]
    assert sum(distribution.values()) == pytest.approx(1)
    assert isinstance(explanation, str) and explanation
    chosen, table = demo.select("i00", None, None, ["i01", "i02", "i03"])
    assert 1 <= len(chosen) <= 3 and "p among the candidates" in table
    assert set(re.findall(r"`(i\d\d)`", table)) <= {"i01", "i02", "i03"}
    generated, retrieved, table = demo.generate("i00, i05", None, None, "red hat", 2, 0)
    assert len(generated) == 2 and all(isinstance(image, Image.Image) for image, _ in generated)
    pipe = demo.pipe()  # the retrieved items shown are the ones retrieve-then-generate puts in its prompt
    context = retrieve_items(pipe.model, pipe.processor, [["i00", "i05"]], ["red hat"], 5)[0]
    assert re.findall(r"`(i\d\d)`", table) == context and len(retrieved) == 5
    assert demo.generate("i00, i05", None, None, "red hat", 2, 0)[0][0][0].tobytes() == generated[0][0].tobytes()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: d.recommend("", None, None, False), "The history is empty"),
        (lambda d: d.recommend("  ", None, None, False), "The history is empty"),
        (lambda d: d.recommend("i00, ZZ9", None, None, False), "Unknown item id 'ZZ9' in the history"),
        (lambda d: d.recommend('["i00", 7]', None, None, False), "must be an item id or an item object"),
        (lambda d: d.recommend('["i00",', None, None, False), "not valid JSON"),
        (lambda d: d.recommend("[]", None, None, False), "non-empty list"),
        (lambda d: d.show_history('[{"item_id": "nope"}]'), "Unknown item id 'nope'"),
        (lambda d: d.recommend('[{"item_id": "i00", "rating": NaN}]', None, None, False),
         "Item 'i00': field `rating` is nan, not a finite number"),
        (lambda d: d.search("i00", None, None, " "), "Type what you are looking for"),
        (lambda d: d.rate("i00", None, None, None), "Choose the item to rate"),
        (lambda d: d.rate("i00", None, None, "ZZ9"), "Unknown item id 'ZZ9' in the item to rate"),
        (lambda d: d.select("i00", None, None, []), "Choose the candidates"),
        (lambda d: d.select("i00", None, None, ["i01", "i01"]), "more than once"),
        (lambda d: d.generate("i00", None, None, "", 1, 0), "Describe the item"),
        (lambda d: d.load_user(None), "Pick a test user"),
        (lambda d: d.load_user("u404"), "Unknown test user 'u404'"),
        (lambda d: d.add_items("i00", []), "Choose one or more catalogue items"),
        (lambda d: d.add_items('[{"item_id": "i00"}]', ["i01"]), "edit it in the box"),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(demo, call, message):
    with pytest.raises(gr.Error, match=message):
        call(demo)


def test_an_uploaded_photo_is_read_inline_within_limits(demo, bomb_png):
    cards = demo.show_history("i00, i05", None, png())
    assert cards[-1][0].getpixel((50, 50)) == (128, 0, 128)  # the photo replaced the latest item's picture
    with_photo = demo.request_history("i00, i05", "u1", png())
    assert with_photo[-1] == {"item_id": "i05", "rating": 4.0, "image": png()}  # the user's rating is kept too
    scores = [[r["score"] for r in demo.pipe()(history=h, top_k=3)] for h in (with_photo, ["i00", "i05"])]
    assert scores[0] != scores[1]  # the photo reached the model
    inline = json.dumps([{"item_id": "i00", "image": "data:image/png;base64," + base64.b64encode(png()).decode()}])
    assert demo.show_history(inline)[0][0].getpixel((50, 50)) == (128, 0, 128)
    bad_photos = (
        (b"not an image", "not an image PIL can decode"),
        (b"\0" * (4 * 1024 * 1024 + 1), "over the limit"),
        (bomb_png(3000, 3000), "over the pixel limit"),
    )
    for photo, message in bad_photos:
        for callback in (
            lambda p=photo: demo.show_history("i00", None, p),
            lambda p=photo: demo.recommend("i00", None, p, False),
        ):
            with pytest.raises(gr.Error, match=message):
                callback()


def test_a_path_or_url_in_the_history_is_refused_without_being_opened_or_fetched(demo, tmp_path, loopback_server):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png())
    paths = (str(secret), str(tmp_path / "missing.png"), "/etc/passwd", {"path": str(secret)})
    urls = (f"{loopback_server.url}/image.png", f"http://localhost:{loopback_server.port}/image.png")
    for images in (paths, urls):
        messages = set()
        for image in images:
            history = json.dumps([{"item_id": "i00", "image": image}, "i05"])
            for callback in (
                lambda h=history: demo.show_history(h),
                lambda h=history: demo.recommend(h, None, None, False),
                lambda h=history: demo.generate(h, None, None, "red hat", 1, 0),
            ):
                with pytest.raises(gr.Error, match="send the image inline") as error:
                    callback()
                assert str(tmp_path) not in str(error.value) and "127.0.0.1" not in str(error.value)
                messages.add(str(error.value))
        assert len(messages) == 1  # a path that exists reads exactly like one that does not; every URL alike
    assert loopback_server.requests == []


def test_a_model_that_fails_to_load_gives_a_message_without_server_details(app_module, space_export, tmp_path):
    broken = tmp_path / "broken-export"
    shutil.copytree(space_export["hub"], broken)
    (broken / "model.safetensors").unlink()
    demo = app_module.UniMPDemo(str(broken))  # the catalogue loads; the model cannot
    with pytest.raises(gr.Error, match="The model could not be loaded; the server log says why."):
        demo.recommend("i00", None, None, False)
    assert demo.users == {} and len(demo.catalogue_page("red")) == 4  # browsing the catalogue still works
