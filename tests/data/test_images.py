"""Image download against a local HTTP server on 127.0.0.1 serving good, broken, missing, flaky and slow images."""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from processing_unimp.data.images import ImageCache, download_images, fetch_image, validate_image_bytes


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 5), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = _png()


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        _Handler.hits[self.path] += 1
        if self.path.startswith("/good"):
            self._send(200, GOOD)
        elif self.path == "/broken.png":
            self._send(200, GOOD[:20] + b"\x00" * 30)  # valid header, truncated data
        elif self.path == "/flaky.png":  # fails twice, then works
            self._send(500, b"") if _Handler.hits[self.path] <= 2 else self._send(200, GOOD)
        elif self.path == "/slow.png":
            time.sleep(1.0)
            self._send(200, GOOD)
        else:
            self._send(404, b"")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_validate_image_bytes():
    assert validate_image_bytes(GOOD)
    assert not validate_image_bytes(b"not an image") and not validate_image_bytes(GOOD[:40])


def test_download_good_broken_missing_flaky_and_slow(server, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    urls = ([f"{server}/good{k}.png" for k in range(5)]
            + [f"{server}/{n}.png" for n in ("broken", "missing", "flaky", "slow")])
    result = download_images(urls, cache, workers=4, timeout=0.3, retries=2, backoff=0.01, progress=False)
    ok = {url for url, path in result.items() if path is not None}
    assert ok == set(urls[:5]) | {f"{server}/flaky.png"}
    assert all(result[url].read_bytes() == GOOD for url in ok)
    assert cache.failure(f"{server}/broken.png") == "corrupt" and cache.failure(f"{server}/missing.png") == "http_404"
    assert cache.failure(f"{server}/slow.png") in ("TimeoutError", "URLError")
    assert _Handler.hits["/missing.png"] == 1 and _Handler.hits["/broken.png"] == 1  # final answers are not retried
    assert _Handler.hits["/flaky.png"] == 3


def test_cache_resumes_without_refetching(server, tmp_path):
    cache = ImageCache(tmp_path / "cache")
    urls = [f"{server}/good.png", f"{server}/missing.png"]
    download_images(urls, cache, workers=2, retries=0, progress=False)
    hits = dict(_Handler.hits)
    again = download_images(urls, ImageCache(tmp_path / "cache"), workers=2, retries=0, progress=False)
    assert dict(_Handler.hits) == hits  # the good one is cached, the dead one remembered
    assert again[urls[0]] is not None and again[urls[1]] is None
    assert fetch_image(urls[1], cache, retries=0, retry_failed=True) is None
    assert _Handler.hits["/missing.png"] == hits["/missing.png"] + 1
    assert not list((tmp_path / "cache" / "images").glob(".part-*"))


def test_builder_drops_and_counts_dead_images(server, tmp_path):
    import pandas as pd

    from processing_unimp.data.builders import run_builder
    from processing_unimp.data.config import BuildConfig, BuildReport

    items = pd.DataFrame({"item_id": [f"i{k}" for k in range(4)], "title": ["a", "b", "c", "d"],
                          "image_url": [f"{server}/good0.png", f"{server}/broken.png", f"{server}/missing.png", None]})
    rows = [(f"u{u}", f"i{(u + k) % 4}", 10 * k + u) for u in range(4) for k in range(3)]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    report = BuildReport("images")
    dataset = run_builder("images", items, interactions, report,
                          BuildConfig(min_user_interactions=3, min_item_interactions=2), raw_records=len(rows),
                          image_cache=ImageCache(tmp_path / "cache"), download_kwargs={"retries": 0, "progress": False})
    assert [row["image"] is not None for row in dataset["items"]] == [True, False, False, False]
    assert (report.skipped["image_dead_or_corrupt"] == 2
            and report.examples["image_dead_or_corrupt"] == ["item_id=i1", "item_id=i2"])
