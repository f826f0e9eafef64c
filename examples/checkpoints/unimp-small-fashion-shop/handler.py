"""Inference Endpoints handler for an exported UniMP model (`examples/export_hub.py` copies it as `handler.py`).

Hub widgets cannot run custom code, so an Inference Endpoint with this handler is the way to serve UniMP. A request:

    {"inputs": {"history": ["B01", "B07"], "query": "trail shoes"},   # or a list of such dicts (a batch)
     "parameters": {"task": "search", "top_k": 10}}

gets the `PersonalizationPipeline` output made JSON-ready: generated images become base64 PNG data URLs and
rating values (dictionary keys) become strings. A model with content item rows also takes new items,

    {"add_items": [{"item_id": "N1", "title": "Trail shoes", "image": "data:image/png;base64,..."}]}

answered with `{"added": ["N1"]}`: they are ranked from their content by every later request until the endpoint
restarts (to keep them, add them with `pipeline.add_items` and push the saved model).

The callers are remote, so the pipeline runs with `allow_image_paths=False` and `allow_image_urls=False`: an item's
`image` is accepted only inline (base64 or a `data:image/...;base64,` URL, at most `max_image_bytes`, at most
`max_image_pixels` once decoded), and a file path or URL is refused without opening or fetching anything and
without echoing it. Only the parameters in `PARAMETERS` are accepted, each within its limit.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image
from transformers import pipeline

PARAMETERS = ("task", "query", "target", "candidates", "top_k", "exclude_seen", "num_selected", "num_beams",
              "max_new_tokens", "num_images", "seed", "temperature", "copy_weight", "batch_size")
"""The pipeline parameters a request may set; anything else (e.g. a way to fetch URLs) is refused."""
PARAMETER_LIMITS = {"top_k": 100, "num_beams": 8, "max_new_tokens": 64, "num_images": 4, "batch_size": 16}
"""The largest value a request may give each of these parameters, so that one request cannot hold the server."""
MAX_ADDED_ITEMS = 64
"""The most items one `add_items` request may add."""
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_IMAGE_PIXELS = 2048 * 2048


def json_ready(value: Any) -> Any:
    """`value` with PIL images as PNG data URLs and every dictionary key as a string."""
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def check_parameters(parameters: Any) -> dict[str, Any]:
    """The request's parameters, if every one is known and within its limit; else a clear error."""
    if not isinstance(parameters, dict):
        raise TypeError(f'"parameters" must be an object, got {type(parameters).__name__}.')
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f'Unknown parameter(s) {unknown}; "parameters" may have {", ".join(PARAMETERS)}.')
    for name, limit in PARAMETER_LIMITS.items():
        value = parameters.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ValueError(f"`{name}` may be at most {limit} on this endpoint, got {value}.")
    return parameters


class EndpointHandler:
    """Loads the personalization pipeline from the endpoint's model folder (remote code from that folder)."""

    def __init__(
        self, path: str = "", max_image_bytes: int = MAX_IMAGE_BYTES, max_image_pixels: int = MAX_IMAGE_PIXELS
    ):
        self.pipeline = pipeline(
            "personalization", model=path or ".", trust_remote_code=True, allow_image_paths=False,
            allow_image_urls=False, max_image_bytes=max_image_bytes, max_image_pixels=max_image_pixels,
        )

    def __call__(self, data: dict[str, Any]) -> list | dict:
        """Run `data["inputs"]` with `data["parameters"]` (task, top_k, query, ...), or add `data["add_items"]` to
        the catalogue; errors name the bad field."""
        if isinstance(data, dict) and "add_items" in data:
            return {"added": self.add_items(data["add_items"])}
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError('The request needs "inputs": a dict with a "history", or a list of such dicts.')
        parameters = check_parameters(data.get("parameters") or {})
        return json_ready(self.pipeline(data["inputs"], **parameters))

    def add_items(self, items: Any) -> list[str]:
        """Add at most `MAX_ADDED_ITEMS` items (all or nothing, images inline only) to the served catalogue."""
        if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
            raise ValueError('"add_items" must be a non-empty list of item objects (item_id, title, ..., image).')
        if len(items) > MAX_ADDED_ITEMS:
            raise ValueError(f'"add_items" may add at most {MAX_ADDED_ITEMS} items per request, got {len(items)}.')
        return self.pipeline.add_items(items)
