"""examples/export_hub.py: a self-contained Hub folder that loads and runs without the UniMP packages importable."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import pipeline
from transformers.dynamic_module_utils import get_relative_import_files

from processing_unimp import handler
from processing_unimp.export import hub as export_hub

RESULTS = {"datasets": {"fashion-shop": {"protocol": "leave-one-out, full ranking", "models": {
    "unimp": {"HR@10": 0.1234, "NDCG@10": 0.0567, "train_seconds": 12.5, "rating": {"expected_RMSE": 1.1}},
    "sasrec": {"HR@10": 0.1, "NDCG@10": 0.05}, "popularity": {"HR@10": 0.02}}}}}
CALLS = [  # keyword arguments of the pipeline; `inputs` is its first argument
    {"history": ["A1", "B2"], "task": "recommend", "top_k": 5},
    {"history": ["A1", "B2"], "task": "recommend", "top_k": 3, "exclude_seen": True},
    {"history": ["C3", "D4"], "task": "search", "query": "blue shirt"},
    {"history": [{"item_id": "A1", "rating": 5, "explanation": "Great fit"}], "task": "rate_explain", "target": "D4"},
    {"history": ["B2"], "task": "select", "candidates": ["A1", "E5", "C3"]},
    {"history": ["B2", "C3"], "task": "generate_image", "query": "red shoes", "num_images": 2, "seed": 0},
    {"inputs": [{"history": ["A1"]}, {"history": ["ZZ"]}, {"history": ["D4"], "task": "search", "query": "socks"}]},
]
ENDPOINT_REQUEST = {"inputs": {"history": ["A1", "B2"], "query": "hat"}, "parameters": {"task": "search", "top_k": 3}}

REMOTE_SCRIPT = """
import importlib.util, json, sys
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor,
                          pipeline)
folder, calls, request = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("handler", folder + "/handler.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
loaded = {"AutoConfig": type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__module__}
for auto in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor):
    loaded[auto.__name__] = type(auto.from_pretrained(folder, trust_remote_code=True)).__module__
pipe = pipeline("personalization", model=folder, trust_remote_code=True)
loaded["pipeline"] = type(pipe).__module__
results = [handler.json_ready(pipe(call.pop("inputs", None), **call)) for call in calls]
endpoint = handler.EndpointHandler(path=folder)(request)  # as Inference Endpoints call it
assert not {"modeling_unimp", "processing_unimp"} & set(sys.modules)
print(json.dumps({"loaded": loaded, "results": results, "endpoint": endpoint}))
"""


@pytest.fixture(scope="module")
def exported(trained_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    (root / "results.json").write_text(json.dumps(RESULTS))
    return export_hub.export(trained_model_dir, root / "unimp-tiny", results=root / "results.json")


def test_export_is_a_flat_self_contained_folder(exported):
    files = set(os.listdir(exported))
    assert {"config.json", "model.safetensors", "generation_config.json", "processor_config.json", "tokenizer.json",
            "item_catalogue.parquet", "README.md", "handler.py", "image_tokenizer"} <= files
    assert {"configuration_unimp.py", "modeling_unimp.py", "processing_unimp.py", "pipeline_unimp.py",
            "ranking_unimp.py", "generation_unimp.py"} <= files
    # exactly the shipped layer: no dataset builder, trainer, metric or other offline tooling file
    assert {p.name for p in exported.glob("*.py")} == {p.name for p in export_hub.code_files()}
    assert not {"builders.py", "trainer.py", "metrics.py", "baselines.py", "__init__.py"} & files
    config = json.loads((exported / "config.json").read_text())
    assert config["auto_map"] == export_hub.AUTO_MAP
    assert config["custom_pipelines"] == export_hub.CUSTOM_PIPELINES
    for code in exported.glob("*.py"):
        text = code.read_text()
        assert not re.search(r"^\s*(from|import) (modeling|processing)_unimp\b", text, re.MULTILINE), code.name
        assert all(Path(path).is_file() for path in get_relative_import_files(code)), code.name
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_model_card(exported):
    card = ModelCard.load(exported / "README.md")
    assert card.data.pipeline_tag == "image-text-to-text" and card.data.library_name == "transformers"
    assert {"personalization", "recommendation", "custom_code"} <= set(card.data.tags)
    metrics = [(r.dataset_name, r.metric_name, r.metric_value) for r in card.data.eval_results]
    assert metrics == [("fashion-shop", "HR@10", 0.1234), ("fashion-shop", "NDCG@10", 0.0567)]
    assert "# unimp-tiny" in card.text and "| sasrec | 0.1000 | 0.0500 |" in card.text
    assert "| popularity | 0.0200 | – |" in card.text and "train_seconds" not in card.text
    assert 'pipeline("personalization", model="path/to/unimp-tiny", trust_remote_code=True)' in card.text


def test_remote_code_gives_the_in_process_results(trained_model_dir, exported, run_isolated):
    remote = run_isolated(REMOTE_SCRIPT, str(exported), json.dumps(CALLS), json.dumps(ENDPOINT_REQUEST))
    assert all(module.startswith("transformers_modules.") for module in remote["loaded"].values()), remote["loaded"]
    local = pipeline("personalization", model=str(trained_model_dir))
    calls = [dict(call) for call in CALLS]
    expected = [handler.json_ready(local(call.pop("inputs", None), **call)) for call in calls]
    assert remote["results"] == json.loads(json.dumps(expected))
    assert remote["results"][-1][1]["error_type"] == "ValueError"
    endpoint = handler.json_ready(local(ENDPOINT_REQUEST["inputs"], **ENDPOINT_REQUEST["parameters"]))
    assert remote["endpoint"] == json.loads(json.dumps(endpoint))


def test_export_is_atomic(trained_model_dir, exported, tmp_path):
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_hub.export(trained_model_dir, exported)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export_hub.export(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        export_hub.export(trained_model_dir, tmp_path / "out", card=tmp_path / "no-such-template.md")
    assert [p.name for p in tmp_path.iterdir()] == []  # neither the output nor a staging folder


def test_results_file_needs_datasets(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"unimp": {"HR@10": 0.1}}))
    with pytest.raises(ValueError, match="`datasets`"):
        export_hub.load_results(path)


def test_overwrite_and_push_to_hub(trained_model_dir, tmp_path, monkeypatch, capsys, fake_hf_api):
    fake, calls = fake_hf_api
    monkeypatch.setattr(export_hub, "HfApi", fake)
    output = tmp_path / "export"
    output.mkdir()
    (output / "stale.txt").write_text("from an older export")
    spec = importlib.util.spec_from_file_location("export_script", Path(__file__).parents[2] / "examples/export_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--model", str(trained_model_dir), "--output", str(output), "--card", "unimp-3b",
                 "--push-to-hub", "org/unimp-3b-test", "--private", "--overwrite"])
    assert not (output / "stale.txt").exists() and (output / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert calls == [
        ("token", None),
        ("create_repo", "org/unimp-3b-test", {"repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"repo_id": "org/unimp-3b-test", "folder_path": str(output), "repo_type": "model",
                           "commit_message": "Upload UniMP export (examples/export_hub.py)"}),
    ]
    card = ModelCard.load(output / "README.md")
    assert "## Status" in card.text and 'model="org/unimp-3b-test"' in card.text and card.data.eval_results is None
    assert "Pushed: https://huggingface.co/org/unimp-3b-test/commit/0" in capsys.readouterr().out


def test_export_names_no_local_path(trained_model_dir, tmp_path):
    model_dir = shutil.copytree(trained_model_dir, tmp_path / "trained")
    tokenizer_config = model_dir / "image_tokenizer" / "config.json"
    # as a training run saves it: diffusers keeps the folder it loaded the tokenizer from
    config = {**json.loads(tokenizer_config.read_text()), "_name_or_path": str(tmp_path)}
    tokenizer_config.write_text(json.dumps(config))
    exported = export_hub.export(model_dir, tmp_path / "export")
    assert str(tmp_path) not in "".join(path.read_text() for path in exported.rglob("*.json"))
