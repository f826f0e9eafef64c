"""UniMPProcessor saving and loading: round trip, AutoProcessor, and remote code without the packages."""

import json
import os

import pytest
from transformers import AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from modeling_unimp import UniMPConfig
from processing_unimp import UniMPProcessor, train_tokenizer

SAMPLES = [
    {"task": "rate_explain", "history": [{"item_id": "A1", "rating": 5, "explanation": "Great"}, "C3"],
     "target": {"item_id": "D4", "rating": 4, "explanation": "Warm"}},
    {"task": "select", "history": ["B2"], "candidates": ["A1", "E5"], "answer": ["E5"]},
]


@pytest.fixture(scope="module")
def saved(processor, tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("unimp-processor"))
    processor.save_pretrained(directory)
    return directory


def assert_same_batches(first, second):
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].equal(second[key]), key


def test_saved_folder(processor, saved):
    files = set(os.listdir(saved))
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "item_catalogue.parquet"} <= files
    assert {"processing_unimp.py", "templates_unimp.py", "catalogue_unimp.py", "vocabulary_unimp.py"} <= files
    config = json.load(open(os.path.join(saved, "processor_config.json")))
    assert config["auto_map"] == {"AutoProcessor": "processing_unimp.UniMPProcessor"}
    assert config["item_ids"] == processor.item_ids and config["codebook_size"] == 4
    for name in files - {"__init__.py"}:
        if name.endswith(".py"):
            assert "modeling_unimp" not in open(os.path.join(saved, name)).read(), name


def test_round_trip(processor, saved):
    loaded = UniMPProcessor.from_pretrained(saved)
    assert loaded.item_ids == processor.item_ids
    assert loaded.item_token_ids == processor.item_token_ids
    assert loaded.image_code_token_ids == processor.image_code_token_ids
    assert loaded.catalogue.item_ids == processor.catalogue.item_ids
    assert_same_batches(loaded(SAMPLES), processor(SAMPLES))


def test_auto_processor(processor, saved, tmp_path):
    assert PROCESSOR_MAPPING[UniMPConfig] is UniMPProcessor
    assert type(AutoProcessor.from_pretrained(saved)) is UniMPProcessor
    processor.save_pretrained(tmp_path)
    UniMPConfig.from_preset("tiny").save_pretrained(tmp_path)  # a model folder: found through the config
    assert type(AutoProcessor.from_pretrained(tmp_path)) is UniMPProcessor


REMOTE_SCRIPT = """
import json, sys
from transformers import AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
assert "processing_unimp" not in sys.modules
batch = processor(json.loads(sys.argv[2]))
print(json.dumps({"class": type(processor).__module__, "input_ids": batch["input_ids"].tolist(),
                  "pixels": batch["pixel_values"].sum().item()}))
"""


def test_remote_code_without_the_packages(processor, saved, run_isolated):
    output = run_isolated(REMOTE_SCRIPT, saved, json.dumps(SAMPLES))
    assert output["class"].startswith("transformers_modules.")
    batch = processor(SAMPLES)
    assert output["input_ids"] == batch["input_ids"].tolist()
    assert output["pixels"] == pytest.approx(batch["pixel_values"].sum().item(), rel=1e-5)


def test_train_tokenizer():
    tokenizer = train_tokenizer(["red running shoes", "blue shirt"] * 5, vocab_size=280)
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    ids = tokenizer("Unseen words: ü 😀", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "Unseen words: ü 😀"  # byte-level: nothing is unknown
