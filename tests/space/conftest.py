"""The Space's fixtures: a tiny trained UniMP over a 24-item catalogue (enough for a top-10), exported with a Space
folder next to it, and the app module loaded from that folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from processing_unimp import UniMPProcessor
from processing_unimp.export import hub as export_hub
from processing_unimp.export import space as export_space
from processing_unimp.training.initialisation import unimp_for_processor

COLOURS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 170, 70), "black": (20, 20, 20),
           "white": (245, 245, 245), "yellow": (240, 210, 40)}
KINDS = ("shirt", "shoes", "hat", "bag")
TEST_USERS = [
    {"user_id": "u1", "history": [{"item_id": "i00", "rating": 5.0, "explanation": "Bright and soft"},
                                  {"item_id": "i05", "rating": 4.0}], "target": "i09"},
    {"user_id": "u2", "history": [{"item_id": "i12"}, {"item_id": "i13"}, {"item_id": "i20"}], "target": "i03"},
]


def _picture(colour: tuple[int, int, int], kind: int) -> Image.Image:
    image = Image.new("RGB", (16, 16), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    [draw.rectangle, draw.ellipse, draw.pieslice, draw.polygon][kind](
        [(2, 2), (13, 13)] if kind != 3 else [(8, 1), (15, 14), (1, 14)],
        fill=colour,
        **({"start": 0, "end": 270} if kind == 2 else {}),
    )
    return image


def catalogue() -> list[dict]:
    items = []
    for index, (colour, kind) in enumerate((c, k) for k in range(len(KINDS)) for c in COLOURS):
        items.append(
            {
                "item_id": f"i{index:02d}",
                "title": f"{colour.capitalize()} {KINDS[kind]}",
                "categories": [KINDS[kind]],
                "price": 10.0 + index,
                "image": _picture(COLOURS[colour], kind),
            }
        )
    return items


@pytest.fixture(scope="session")
def space_export(tmp_path_factory) -> dict[str, Path]:
    """`{"hub": the export, "space": its Space folder, "model": the trained folder}`; the Space has TEST_USERS."""
    from diffusers import VQModel

    torch.manual_seed(0)
    processor = UniMPProcessor.from_catalogue(catalogue(), vocab_size=300, image_size=16, codebook_size=4)
    model = unimp_for_processor("tiny", processor)
    samples = [{"task": "recommend", "history": ["i00", "i05"], "target": {"item_id": "i09"}},
               {"task": "search", "history": ["i12"], "query": "red hat", "target": {"item_id": "i12"}},
               {"task": "rate_explain", "history": [{"item_id": "i00", "rating": 5, "explanation": "Bright"}],
                "target": {"item_id": "i01", "rating": 3, "explanation": "Too plain"}}]
    batch = processor(samples, padding_side="right")
    inputs = {key: value for key, value in batch.items() if key not in ("token_kinds", "task_ids")}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    root = tmp_path_factory.mktemp("space-export")
    trained = root / "trained"
    model.save_pretrained(trained)
    processor.save_pretrained(trained)
    VQModel(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, latent_channels=4, num_vq_embeddings=4, vq_embed_dim=4, sample_size=8, norm_num_groups=4,
    ).save_pretrained(trained / "image_tokenizer")
    hub = export_hub.export(trained, root / "hub", name="unimp-space-test")
    space = export_space.write_space(root / "space", export_space.relative_path(hub, root / "space"),
                                     "unimp-space-test", TEST_USERS)
    return {"hub": hub, "space": space, "model": trained}


@pytest.fixture(scope="session")
def app_module(space_export):
    """The exported Space's app.py as a module (it reads its demo_config.json from its own folder)."""
    spec = importlib.util.spec_from_file_location("unimp_space_app", space_export["space"] / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(app_module, space_export):
    """The app's callbacks on the exported model, its pipeline loaded. Serving remote callers, the pipeline turns
    PIL's decompression-bomb guard on at the app's limit for the process; it is put back after the module."""
    previous = Image.MAX_IMAGE_PIXELS
    demo = app_module.UniMPDemo(app_module.resolve_model(), app_module.resolve_users())
    demo.pipe()
    yield demo
    Image.MAX_IMAGE_PIXELS = previous
