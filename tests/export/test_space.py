"""export/space.py and `examples/export_hub.py --space`: a ready-to-push Space folder next to the model export, and a
model card that names the model, reports its results and links the Space."""

from __future__ import annotations

import configparser
import importlib.util
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, SpaceCard

from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.export import hub as export_hub
from processing_unimp.export import space as export_space

ROOT = Path(__file__).resolve().parents[2]
RESULTS = {"datasets": {
    "fashion-shop": {"protocol": "leave-one-out", "models": {"unimp": {"HR@10": 0.25, "NDCG@10": 0.125},
                                                             "popularity": {"HR@10": 0.008}}},
    "movielens-small": {"protocol": "leave-one-out", "models": {"unimp": {"HR@10": 0.0179}}}}}


def _script():
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "examples/export_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_export_with_a_space_folder_next_to_it(trained_model_dir, tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    _script().main(["--model", str(trained_model_dir), "--output", str(tmp_path / "hub"),
                    "--space", str(tmp_path / "space"), "--results", str(tmp_path / "results.json"),
                    "--dataset", "fashion-shop", "--name", "unimp-tiny-fashion-shop"])
    space = tmp_path / "space"
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "demo_config.json", "requirements.txt"]
    for name in export_space.SPACE_FILES:  # as they are in examples/space/
        assert (space / name).read_bytes() == (ROOT / "examples/space" / name).read_bytes()
    config = json.loads((space / "demo_config.json").read_text())
    assert config == {
        "model": "../hub",
        "name": "unimp-tiny-fashion-shop",
        "test_users": None,
    }  # no user of its 5 items
    assert ((space / config["model"]) / "config.json").is_file()
    readme = SpaceCard.load(space / "README.md")
    assert (
        readme.data.sdk == "gradio"
        and readme.data.app_file == "app.py"
        and readme.data.title == "unimp-tiny-fashion-shop demo"
    )
    assert "hf upload org/space-name . . --repo-type space" in readme.text and "push the model" in readme.text

    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert card.data.model_name == "unimp-tiny-fashion-shop" and "# unimp-tiny-fashion-shop" in card.text
    metrics = [(r.dataset_name, r.metric_name, r.metric_value) for r in card.data.eval_results]
    assert metrics == [("fashion-shop", "HR@10", 0.25), ("fashion-shop", "NDCG@10", 0.125)]  # not movielens' model
    assert "movielens" not in card.text and "No benchmark results" not in card.text
    assert (
        "## Demo" in card.text
        and "[`../space`](../space/README.md)" in card.text
        and "python ../space/app.py" in card.text
    )


def test_a_pushed_model_and_space_link_each_other(trained_model_dir, tmp_path):
    export_hub.export(trained_model_dir, tmp_path / "hub", repo_id="org/unimp-tiny", space_dir=tmp_path / "space",
                      space_repo="org/unimp-tiny-demo")
    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert "[org/unimp-tiny-demo](https://huggingface.co/spaces/org/unimp-tiny-demo)" in card.text
    assert json.loads((tmp_path / "space" / "demo_config.json").read_text())["model"] == "org/unimp-tiny"
    readme = SpaceCard.load(tmp_path / "space" / "README.md")
    assert readme.data.models == ["org/unimp-tiny"]  # the model page lists the Space
    assert "https://huggingface.co/spaces/org/unimp-tiny-demo" in readme.text and "push the model" not in readme.text
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_hub.export(trained_model_dir, tmp_path / "other", space_dir=tmp_path / "space")
    assert not (tmp_path / "other").exists()


def test_without_a_space_the_card_has_no_demo_section_and_results_are_checked(trained_model_dir, tmp_path):
    card = ModelCard.load(export_hub.export(trained_model_dir, tmp_path / "hub") / "README.md")
    assert "## Demo" not in card.text and "No benchmark results were given" in card.text
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    with pytest.raises(ValueError, match="no results for dataset 'amazon'"):
        export_hub.load_results(tmp_path / "results.json", "amazon")


def test_test_users_come_from_the_test_split():
    data = load_unimp_dataset("fashion-shop")
    item_ids = list(data["items"]["item_id"])
    assert export_space.matching_bundled_dataset(item_ids) == "fashion-shop"
    assert export_space.matching_bundled_dataset(item_ids[:-1]) is None
    users = export_space.test_users("fashion-shop", item_ids)
    recommend = [s for s in data["tasks_test"] if s["task"] == "recommend"]
    assert len(users) == len(recommend) == data["test"].num_rows  # one per test user
    first = users[0]
    assert first["user_id"] == recommend[0]["user_id"] and first["target"] == recommend[0]["target"]["item_id"]
    assert [h["item_id"] for h in first["history"]] == [h["item_id"] for h in recommend[0]["history"]]
    assert set(first["history"][0]) == {"item_id", "rating", "explanation"}
    assert len(export_space.test_users("fashion-shop", item_ids, limit=7)) == 7
    assert export_space.test_users("fashion-shop", item_ids[:100]) == []  # no user whose items all survive


def test_push_space(tmp_path, monkeypatch, fake_hf_api):
    fake, calls = fake_hf_api
    monkeypatch.setattr(export_space, "HfApi", fake)
    assert export_space.push_space(tmp_path, "org/demo").endswith("/commit/0")
    assert calls[1] == ("create_repo", "org/demo", {"repo_type": "space", "space_sdk": "gradio", "private": False,
                                                    "exist_ok": True})
    assert calls[2][1]["repo_type"] == "space" and calls[2][1]["folder_path"] == str(tmp_path)
    with pytest.raises(SystemExit):
        _script().parse_args(["--model", "m", "--output", "o", "--push-space", "org/demo"])


def test_the_gradio_pin_is_one_version_everywhere():
    extras = configparser.ConfigParser()
    extras.read(ROOT / "setup.cfg")
    demo = extras["options.extras_require"]["demo"].split()
    pin = next(line for line in demo if line.startswith("gradio=="))
    requirements = (ROOT / "examples/space/requirements.txt").read_text().split()
    assert pin in requirements
    assert SpaceCard.load(ROOT / "examples/space/README.md").data.sdk_version == pin.split("==")[1]
