"""Item image download: retries with back-off, timeouts, validation and a resumable on-disk cache.

Each URL maps to one file named by the hash of the URL; a finished download is written atomically, so
an interrupted run resumes where it stopped. Dead links and corrupt images are recorded as failures
(and not retried on resume unless asked), so a builder can drop or flag them and count them.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .files import atomic_write

_NO_RETRY_STATUS = frozenset({400, 401, 403, 404, 410, 451})  # a retry cannot fix these


def validate_image_bytes(data: bytes) -> bool:
    """True if `data` decodes fully as a non-empty image (header check and full pixel decode)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.width > 0 and image.height > 0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


class ImageCache:
    """A directory of downloaded images keyed by URL hash, with a record of failed URLs."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "failed").mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(url: str) -> str:
        """Stable file name for a URL."""
        return hashlib.sha256(url.encode("utf-8")).hexdigest()

    def path(self, url: str) -> Path:
        """Where the image of `url` is (or would be) stored."""
        return self.root / "images" / self.key(url)

    def get(self, url: str) -> Path | None:
        """The cached file of `url`, if it was downloaded and validated before."""
        path = self.path(url)
        return path if path.is_file() else None

    def put(self, url: str, data: bytes) -> Path:
        """Store validated image bytes for `url` and clear any earlier failure."""
        path = self.path(url)
        atomic_write(path, data)
        (self.root / "failed" / f"{self.key(url)}.json").unlink(missing_ok=True)
        return path

    def mark_failed(self, url: str, reason: str) -> None:
        """Record that `url` is dead or corrupt, with why."""
        atomic_write(self.root / "failed" / f"{self.key(url)}.json",
                      json.dumps({"url": url, "reason": reason}).encode())

    def failure(self, url: str) -> str | None:
        """Why `url` failed before, or None if it did not."""
        record = self.root / "failed" / f"{self.key(url)}.json"
        return json.loads(record.read_text())["reason"] if record.is_file() else None


def fetch_image(url: str, cache: ImageCache, *, timeout: float = 10.0, retries: int = 3, backoff: float = 0.5,
                max_bytes: int = 20_000_000, retry_failed: bool = False) -> Path | None:
    """Download one image into `cache` (or reuse it); None if it is dead, too large or not a valid image.

    Network errors, timeouts and 5xx/429 answers are retried with exponential back-off; 4xx answers and
    corrupt content are final.
    """
    cached = cache.get(url)
    if cached is not None:
        return cached
    if not retry_failed and cache.failure(url) is not None:
        return None
    reason = "unknown"
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "unimp-dataset-builder/0.1"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                reason = "too_large"
                break
            if not validate_image_bytes(data):
                reason = "corrupt"
                break
            return cache.put(url, data)
        except urllib.error.HTTPError as error:
            reason = f"http_{error.code}"
            if error.code in _NO_RETRY_STATUS:
                break
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError) as error:
            reason = type(error).__name__
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    cache.mark_failed(url, reason)
    return None


def download_images(urls: Iterable[str], cache: ImageCache, *, workers: int = 8, progress: bool = True,
                    **fetch_kwargs: float | int | bool) -> dict[str, Path | None]:
    """Fetch many URLs in parallel threads into `cache`; maps each URL to its cached file or None (failed)."""
    unique = sorted(set(urls))
    results: dict[str, Path | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fetch_image, url, cache, **fetch_kwargs): url for url in unique}
        for future in tqdm(as_completed(futures), total=len(futures), desc="images",
                           disable=not progress or not unique):
            results[futures[future]] = future.result()
    return {url: results[url] for url in unique}
