"""Shared fixtures."""

import copy
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from processing_unimp import UniMPProcessor
from processing_unimp.training.initialisation import unimp_for_processor

ISOLATION_PRELUDE = """
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
assert importlib.util.find_spec("processing_unimp") is None and importlib.util.find_spec("modeling_unimp") is None
"""
"""Makes the editable-installed UniMP packages unimportable, so that only remote code from a folder can run."""


def _png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 12), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def catalogue_items(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Five items covering every image form (PIL, path, bytes dict, none) and missing fields."""
    path = tmp_path_factory.mktemp("images") / "hat.png"
    Image.new("RGB", (16, 16), "green").save(path)
    return [
        {"item_id": "A1", "title": "Red running shoes", "brand": "Acme", "categories": ["Shoes", "Sport"],
         "price": 59.99, "image": Image.new("RGB", (8, 8), "red"), "image_codes": [1, 2, 3, 0]},
        {"item_id": "B2", "title": "Blue cotton shirt", "description": "A soft shirt", "image_codes": [3, 3, 1, 0]},
        {"item_id": "C3", "title": "Green hat", "image": str(path)},
        {"item_id": "D4", "title": "Yellow socks", "image": {"bytes": _png_bytes("yellow"), "path": None}},
        {"item_id": "E5"},
    ]


@pytest.fixture(scope="session")
def processor(catalogue_items: list[dict]) -> UniMPProcessor:
    """A processor with a small trained tokenizer, 16-pixel images, and a 4-code image codebook."""
    return UniMPProcessor.from_catalogue(catalogue_items, vocab_size=300, image_size=16, codebook_size=4)


@pytest.fixture
def make_processor(processor: UniMPProcessor) -> Callable[..., UniMPProcessor]:
    """A processor with the fixture's catalogue and a copy of its tokenizer, with some settings changed."""

    def make(**overrides) -> UniMPProcessor:
        settings = {"item_ids": processor.item_ids, "codebook_size": 4, "catalogue": processor.catalogue, **overrides}
        return UniMPProcessor(processor.image_processor, copy.deepcopy(processor.tokenizer), **settings)

    return make


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Run torch on one thread here and in subprocesses: tiny models on a shared 2-core machine are up to ~100x
    faster than on two contending threads."""
    os.environ["OMP_NUM_THREADS"] = "1"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_isolated(tmp_path: Path) -> Callable[..., Any]:
    """Run a script in a fresh `python -I` where `modeling_unimp`/`processing_unimp` cannot be imported (only a
    saved folder's remote code can), offline, on as many torch threads as this process (so that results can be
    compared bit for bit); returns the JSON its last stdout line prints."""

    def run(script: str, *args: str, timeout: float = 240) -> Any:
        env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [sys.executable, "-I", "-c", ISOLATION_PRELUDE + textwrap.dedent(script), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


TRAINING_SAMPLES = [
    {"task": "recommend", "history": ["A1", "B2"], "target": {"item_id": "C3"}},
    {"task": "search", "history": ["C3", "D4"], "query": "blue shirt", "target": {"item_id": "B2"}},
    {"task": "rate_explain", "history": [{"item_id": "A1", "rating": 5, "explanation": "Great fit"}],
     "target": {"item_id": "D4", "rating": 4, "explanation": "Warm and soft"}},
    {"task": "select", "history": ["B2"], "candidates": ["A1", "E5", "C3"], "answer": ["E5"]},
    {"task": "generate_image", "history": ["B2"], "query": "red shoes", "target": {"item_id": "A1"}},
]


@pytest.fixture(scope="session")
def trained_model_dir(processor: UniMPProcessor, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny UniMP trained a few steps on every task, saved with its processor (as `examples/train.py` saves it),
    plus an untrained 4-code VQ image tokenizer in `image_tokenizer/`."""
    from diffusers import VQModel

    torch.manual_seed(0)
    model = unimp_for_processor("tiny", processor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = processor(TRAINING_SAMPLES, padding_side="right")
    inputs = {key: value for key, value in batch.items() if key not in ("token_kinds", "task_ids")}
    for _ in range(8):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    directory = tmp_path_factory.mktemp("trained-unimp")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    VQModel(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
        num_vq_embeddings=processor.codebook_size, vq_embed_dim=4, sample_size=8, norm_num_groups=4,
    ).save_pretrained(directory / "image_tokenizer")
    return directory


class _LoopbackServer:
    """An HTTP server on 127.0.0.1 that records every request it gets: `/image.png` is a PNG, `/big` is 64 KiB,
    `/redirect?to=URL` redirects. A test that must not reach it asserts `requests == []`."""

    def __init__(self):
        import http.server
        import threading

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                server.requests.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                body = _png_bytes("purple") if self.path == "/image.png" else b"x" * 65536
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.requests: list[str] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def loopback_server() -> Iterator[_LoopbackServer]:
    """A recording HTTP server on 127.0.0.1 (see `_LoopbackServer`)."""
    server = _LoopbackServer()
    yield server
    server.close()


def _bomb_png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def bomb_png() -> Callable[[int, int], bytes]:
    """`bomb_png(width, height)`: a 70-byte PNG whose header declares that many pixels (its data is empty, so
    only a reader that checks the header before decoding answers with the pixel count)."""
    return _bomb_png
