"""Inference Endpoints handler for an exported UniMP model (`examples/export_hub.py` copies it as `handler.py`).

Hub widgets cannot run custom code, so an Inference Endpoint with this handler is the way to serve UniMP. A request:

    {"inputs": {"history": ["B01", "B07"], "query": "trail shoes"},   # or a list of such dicts (a batch)
     "parameters": {"task": "search", "top_k": 10}}

gets the `PersonalizationPipeline` output made JSON-ready: generated images become base64 PNG data URLs and
rating values (dictionary keys) become strings.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image
from transformers import pipeline


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


class EndpointHandler:
    """Loads the personalization pipeline from the endpoint's model folder (remote code from that folder)."""

    def __init__(self, path: str = ""):
        self.pipeline = pipeline("personalization", model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> list | dict:
        """Run `data["inputs"]` with `data["parameters"]` (task, top_k, query, ...); errors name the bad field."""
        if "inputs" not in data:
            raise ValueError('The request needs "inputs": a dict with a "history", or a list of such dicts.')
        parameters = data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise TypeError(f'"parameters" must be an object, got {type(parameters).__name__}.')
        return json_ready(self.pipeline(data["inputs"], **parameters))
