"""`accelerate launch examples/train.py` end to end on the bundled data, as the README documents it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def launch(*args: str) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "examples/accelerate/cpu.yaml"), str(ROOT / "examples/train.py"), *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_multi_task_run_then_single_task_lora_fine_tuning(tmp_path):
    launch("--model-preset", "tiny", "--dataset", "fashion-shop", "--tasks", "recommend,search,rate_explain,select",
           "--max-steps", "3", "--max-eval-users", "20", "--max-test-users", "40",
           "--output-dir", str(tmp_path / "multi"))
    multi = tmp_path / "multi"
    assert (multi / "model.safetensors").exists() and (multi / "processor_config.json").exists()
    assert (multi / "loss_curve.png").exists()
    test = json.loads((multi / "test_results.json").read_text())
    assert test["num_users"] == 40 and 0 <= test["NDCG@10"] <= 1

    launch("--model-name-or-path", str(multi), "--dataset", "fashion-shop", "--tasks", "recommend", "--lora",
           "--max-steps", "2", "--max-eval-users", "20", "--max-test-users", "20",
           "--output-dir", str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()


def test_train_script_defaults_are_the_benchmark_recipe(tmp_path, monkeypatch):
    """train.py with no flags and the benchmark's base run read one recipe: every argument agrees but the run's own
    (output folder, budget, progress bars)."""
    import dataclasses
    import importlib.util

    from processing_unimp.benchmark.runs import unimp_arguments

    spec = importlib.util.spec_from_file_location("train_script", ROOT / "examples/train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    parsed = script.parse_args()
    benchmark = unimp_arguments("fashion-shop", "unimp", tmp_path, "small", 1, None)
    for ours, theirs in zip(parsed[:2], benchmark[:2]):
        assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
    run_settings = {"output_dir", "logging_dir", "num_train_epochs", "disable_tqdm"}
    ours, theirs = ({k: v for k, v in args.to_dict().items() if k not in run_settings}
                    for args in (parsed[2], benchmark[2]))
    assert ours == theirs


def save_backbones(folder: Path):
    """A tiny CLIP vision tower with its image processor and a tiny causal LM with its tokenizer, as saved pretrained
    backbones; returns the LM's config."""
    from transformers import AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from modeling_unimp import UniMPConfig
    from processing_unimp.tokenization_unimp import train_tokenizer

    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=16, patch_size=8))
    vision.save_pretrained(folder / "vision")
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16).save_pretrained(folder / "vision")
    text_config = UniMPConfig.from_preset("tiny").text_config
    AutoModelForCausalLM.from_config(text_config).save_pretrained(folder / "text")
    train_tokenizer(["red shoes blue shirt green hat"] * 10, vocab_size=200).save_pretrained(folder / "text")
    return text_config


def recommend_loss(model, processor):
    batch = processor([{"task": "recommend", "history": ["A1", "C3"], "target": {"item_id": "B2"}}])
    return model(**{k: v for k, v in batch.items() if k not in ("token_kinds", "task_ids")}).loss


def test_train_script_composes_pretrained_backbones(tmp_path, catalogue_items):
    """`--vision-model/--text-model`: the backbones' tokenizer and image processor, UniMP tokens added and trainable."""
    from processing_unimp import items_dataset
    from processing_unimp.training.recipe import DataArguments, ModelArguments, build_model, build_processor

    text_config = save_backbones(tmp_path)
    args = ModelArguments(vision_model=str(tmp_path / "vision"), text_model=str(tmp_path / "text"))
    data = {"items": items_dataset(catalogue_items), "interactions": {"rating": [1.0, 5.0]}}
    built = build_processor(args, DataArguments(use_images=True), data)
    assert len(built.tokenizer) > text_config.vocab_size and built.image_processor.crop_size["height"] == 16
    model = build_model(args, built)
    assert model.get_input_embeddings().weight.shape[0] == len(built.tokenizer)
    assert model.config.base_vocab_size == text_config.vocab_size and model.config.freeze_language_model
    assert model.item_content is None
    recommend_loss(model, built).backward()
    assert model.get_input_embeddings().weight.grad[: text_config.vocab_size].abs().sum() == 0


def test_pretrained_backbones_with_content_item_rows(tmp_path, catalogue_items):
    """`--text-model ... --item-rows content`: item rows read the frozen pretrained LM's rows of the item's words,
    the content projections train, and an item added afterwards survives a save and reload."""
    import torch

    from modeling_unimp import UniMPForConditionalGeneration
    from processing_unimp import UniMPProcessor, items_dataset
    from processing_unimp.content_unimp import add_items
    from processing_unimp.training.recipe import DataArguments, ModelArguments, build_model, build_processor

    text_config = save_backbones(tmp_path)
    args = ModelArguments(vision_model=str(tmp_path / "vision"), text_model=str(tmp_path / "text"),
                          item_rows="content")
    data = {"items": items_dataset(catalogue_items), "interactions": {"rating": [1.0, 5.0]}}
    built = build_processor(args, DataArguments(use_images=True), data)
    model = build_model(args, built)
    content = model.item_content
    assert model.config.item_rows == "content" and model.config.freeze_vision_tower
    assert content.token_ids.tolist() == built.item_token_ids
    words = content.text_ids[content.text_ids >= 0]
    assert len(words) and int(words.max()) < text_config.vocab_size  # the pretrained vocabulary's own words
    recommend_loss(model, built).backward()
    assert content.text_projection.weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad[: text_config.vocab_size].abs().sum() == 0

    add_items(model.eval(), built, [{"item_id": "F6", "title": "Green running shirt"}])
    model.save_pretrained(tmp_path / "grown")
    built.save_pretrained(tmp_path / "grown")
    reloaded = UniMPForConditionalGeneration.from_pretrained(tmp_path / "grown").eval()
    processor = UniMPProcessor.from_pretrained(tmp_path / "grown")
    sample = {"task": "recommend", "history": ["A1", "F6"]}
    with torch.no_grad():
        before = model(**{k: v for k, v in built([sample]).items() if k not in ("token_kinds", "task_ids")}).logits
        after = reloaded(**{k: v for k, v in processor([sample]).items()
                            if k not in ("token_kinds", "task_ids")}).logits
    torch.testing.assert_close(after, before)


def test_content_item_rows_need_a_frozen_vision_tower():
    from modeling_unimp import UniMPConfig

    with pytest.raises(ValueError, match="freeze_vision_tower"):
        UniMPConfig.from_preset("tiny", item_rows="content", freeze_vision_tower=False)


def test_collaborative_start_arguments_reach_the_item_rows(processor):
    """--item-init-interaction-weight/-rank start the rows of interacted items from a truncated SVD of that rank."""
    import torch

    from processing_unimp.training.recipe import ModelArguments, build_model

    pairs = [("u1", "A1"), ("u1", "B2"), ("u2", "A1"), ("u3", "C3"), ("u4", "B2"), ("u4", "C3")]
    token = dict(zip(processor.item_ids, processor.item_token_ids))
    rows = {}
    for rank in (1, 2):
        model = build_model(ModelArguments(model_preset="tiny", init_item_tokens_from="", item_init_image_weight=0.0,
                                           item_init_noise=0.0, item_init_interaction_weight=1.0,
                                           item_init_interaction_rank=rank), processor, interactions=pairs)
        rows[rank] = model.get_input_embeddings().weight[[token[i] for i in ("A1", "B2", "C3")]].detach()
    assert torch.linalg.matrix_rank(rows[1]).item() == 1 and torch.linalg.matrix_rank(rows[2]).item() == 2
    with pytest.raises(ValueError, match="--item-init-interaction-rank"):
        build_model(ModelArguments(model_preset="tiny", init_item_tokens_from="", item_init_interaction_weight=1.0,
                                   item_init_interaction_rank=0), processor, interactions=pairs)


def test_grouping_by_length_needs_packed_sequences(tmp_path):
    """Length-grouped batches read the packed sequences' lengths; unpacked samples have no length before the
    collator encodes them, so that combination is refused up front, naming the flag to change."""
    from processing_unimp.training.recipe import DataArguments, ModelArguments, run_training
    from processing_unimp.training.trainer import UniMPTrainingArguments

    args = UniMPTrainingArguments(output_dir=str(tmp_path), train_sampling_strategy="group_by_length", max_steps=1)
    with pytest.raises(ValueError, match="needs --packed.*--train-sampling-strategy random"):
        run_training(ModelArguments(model_preset="tiny"), DataArguments(packed=False), args)
    assert not any(tmp_path.iterdir())  # refused before anything was built or written


@pytest.mark.parametrize(("packed", "ratings", "error"), [
    (True, "yes", "--packed-ratings must be '', 'ratings' or 'explanations'"),
    (False, "ratings", "--packed-ratings needs --packed"),
])
def test_packed_ratings_are_checked_before_anything_is_built(tmp_path, packed, ratings, error):
    from processing_unimp.training.recipe import DataArguments, ModelArguments, run_training
    from processing_unimp.training.trainer import UniMPTrainingArguments

    args = UniMPTrainingArguments(output_dir=str(tmp_path), train_sampling_strategy="random", max_steps=1)
    with pytest.raises(ValueError, match=error):
        run_training(ModelArguments(model_preset="tiny"), DataArguments(packed=packed, packed_ratings=ratings), args)
    assert not any(tmp_path.iterdir())


def test_content_item_rows_start_the_image_code_rows_too(processor):
    """A content-row model for generate_image starts its `<img_k>` rows from the VQ codebook, as free rows do."""
    from types import SimpleNamespace

    import torch

    from processing_unimp.training.initialisation import init_image_code_tokens
    from processing_unimp.training.recipe import ModelArguments, build_model

    torch.manual_seed(0)
    image_tokenizer = SimpleNamespace(quantize=SimpleNamespace(embedding=torch.nn.Embedding(4, 3)))
    args = ModelArguments(model_preset="tiny", item_rows="content")
    started = build_model(args, processor, image_tokenizer=image_tokenizer)
    expected = build_model(args, processor)
    assert started.config.freeze_vision_tower  # content rows freeze the tower unless told otherwise
    codes = processor.image_code_token_ids
    assert not torch.equal(started.get_input_embeddings().weight[codes], expected.get_input_embeddings().weight[codes])
    with torch.no_grad():
        init_image_code_tokens(expected, processor, image_tokenizer)
    rows = (started.get_input_embeddings().weight[codes], expected.get_input_embeddings().weight[codes])
    torch.testing.assert_close(*rows)
