"""transformers-style model tests of UniMP: a tester builds tiny configs and inputs, the tests check the library's
contracts (loading, tuple outputs, caches, parallel plans, resizing, gradients, the multimodal API)."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM
from transformers.distributed.parallel_utils import replace_layer_number_by_wildcard
from transformers.modeling_outputs import BaseModelOutputWithPooling

import modeling_unimp
from modeling_unimp import UniMPConfig, UniMPForConditionalGeneration
from modeling_unimp.modeling_unimp import DECODER_LAYERS_PATH, build_media_attention_mask

TEXT_FAMILIES = ["llama", "gpt_neox", "gpt2", "qwen2"]


class UniMPModelTester:
    """Tiny UniMP configs (the `tiny` preset) and a left-padded batch of two histories, one of them with a padding
    image slot."""

    image_token_id, end_of_chunk_token_id, answer_token_id = 10, 11, 12
    image_size = 16

    def __init__(self, family: str = "llama", **config_overrides: Any):
        self.family = family
        self.config_overrides = config_overrides

    def get_config(self, **overrides: Any) -> UniMPConfig:
        overrides = {**self.config_overrides, **overrides}
        text = {"model_type": self.family, **overrides.pop("text_config", {})}
        if self.family == "qwen2":
            text["layer_types"] = ["full_attention", "full_attention"]
        return UniMPConfig.from_preset(
            "tiny", text_config=text, image_token_id=self.image_token_id,
            end_of_chunk_token_id=self.end_of_chunk_token_id, answer_token_id=self.answer_token_id, **overrides,
        )

    def history(self, num_items: int) -> list[int]:
        """`<bos>` + item chunks `<image> t t <eoc>` + a task tail."""
        ids = [1]
        for i in range(num_items):
            ids += [self.image_token_id, 40 + i, 50 + i, self.end_of_chunk_token_id]
        return ids + [30, 31, self.answer_token_id, 32]

    def prepare_inputs(self) -> dict[str, torch.Tensor]:
        torch.manual_seed(1)
        rows = [self.history(2), self.history(1)]
        width = max(map(len, rows))
        input_ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": torch.randn(2, 2, 3, self.image_size, self.image_size),
            "image_mask": torch.tensor([[True, True], [True, False]]),
        }

    def labels(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)

    def create_model(self, open_gates: bool = True, **overrides: Any) -> UniMPForConditionalGeneration:
        """A model in eval mode; `open_gates` sets every gate to 1 so that images change the output."""
        torch.manual_seed(0)
        model = UniMPForConditionalGeneration(self.get_config(**overrides)).eval()
        if open_gates:
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if name.endswith("_gate"):
                        param.fill_(1.0)
        return model


def flat_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) model output, in order; caches contribute their key and value tensors."""
    if isinstance(output, torch.Tensor):
        return [output]
    if hasattr(output, "layers"):  # a Cache
        return [t for layer in output.layers for t in (layer.keys, layer.values)]
    if isinstance(output, dict):
        output = output.to_tuple() if hasattr(output, "to_tuple") else tuple(output.values())
    return [t for item in output for t in flat_tensors(item)]


# ----- 1. loading -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_from_pretrained_with_loading_info_reports_no_missing_or_unexpected_keys(family, tmp_path):
    tester = UniMPModelTester(family)
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    model.save_pretrained(tmp_path)
    loaded, info = UniMPForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(loaded, UniMPForConditionalGeneration)
    assert {key: list(value) for key, value in info.items()} == {
        "missing_keys": [], "unexpected_keys": [], "mismatched_keys": [], "error_msgs": []
    }
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(**inputs).logits, model(**inputs).logits)


def test_from_pretrained_with_loading_info_applies_the_trainable_policy(tmp_path):
    tester = UniMPModelTester(freeze_language_model=True, freeze_vision_tower=True)
    model = tester.create_model()
    model.resize_token_embeddings(300)
    model.save_pretrained(tmp_path)
    loaded, _ = UniMPForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert {n: p.requires_grad for n, p in loaded.named_parameters()} == {
        n: p.requires_grad for n, p in model.named_parameters()
    }
    ids = torch.tensor([[1, tester.image_token_id, 280, tester.end_of_chunk_token_id, 30, 290]])
    loaded(input_ids=ids, pixel_values=torch.randn(1, 1, 3, 16, 16), labels=ids).loss.backward()
    grad = loaded.get_input_embeddings().weight.grad
    assert grad[:256].abs().sum() == 0 and grad[290].abs().sum() > 0  # the row hooks came back too


@pytest.mark.parametrize("tied", [True, False])
def test_safetensors_round_trip_keeps_tied_weights_tied(tied, tmp_path):
    tester = UniMPModelTester(text_config={"tie_word_embeddings": tied})
    model = tester.create_model()
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        saved = set(f.keys())
    assert "language_model.model.embed_tokens.weight" in saved
    assert ("language_model.lm_head.weight" in saved) is not tied  # a tied matrix is stored once
    loaded = UniMPForConditionalGeneration.from_pretrained(tmp_path).eval()
    head, embeddings = loaded.get_output_embeddings().weight, loaded.get_input_embeddings().weight
    assert (head is embeddings) is tied
    torch.testing.assert_close(head, model.get_output_embeddings().weight)
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_a_bare_language_model_checkpoint_raises_instead_of_loading_half(tmp_path):
    config = UniMPModelTester().get_config()
    AutoModelForCausalLM.from_config(copy.deepcopy(config.text_config)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="from_vision_text_pretrained"):
        UniMPForConditionalGeneration.from_pretrained(tmp_path, config=config)


# ----- 2. tuple outputs -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_return_dict_false_gives_the_dict_output_as_a_tuple(family):
    tester = UniMPModelTester(family)
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    inputs.update(labels=tester.labels(inputs), use_cache=True, output_hidden_states=True)
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
        model.config.return_dict = False
        from_config = model(**inputs)
    for output in (as_tuple, from_config):
        assert isinstance(output, tuple)
        torch.testing.assert_close(output[0], as_dict.loss)
        torch.testing.assert_close(output[1], as_dict.logits)
        torch.testing.assert_close(flat_tensors(output), flat_tensors(as_dict))


# ----- 3. caches ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cache_argument", ["cache", "past_key_values"])
@pytest.mark.parametrize("with_images", [True, False])
@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_continuing_from_a_cache_equals_the_full_forward(family, with_images, cache_argument):
    tester = UniMPModelTester(family)
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    if not with_images:
        inputs = {"input_ids": inputs["input_ids"].masked_fill(inputs["input_ids"] == tester.image_token_id, 41),
                  "attention_mask": inputs["attention_mask"]}
    ids, new = inputs["input_ids"], 2  # the last tokens of the task tail: no <eoc> among them
    with torch.no_grad():
        full = model(**inputs).logits
        images = {k: inputs[k] for k in ("pixel_values", "image_mask") if k in inputs}
        prefix = model(input_ids=ids[:, :-new], attention_mask=inputs["attention_mask"][:, :-new], use_cache=True,
                       **images)
        media = {}
        if with_images:
            mask = build_media_attention_mask(ids, model.config, inputs["image_mask"], inputs["attention_mask"])
            media = {"media_latents": prefix.media_latents, "image_mask": inputs["image_mask"],
                     "media_attention_mask": mask[:, -new:]}
        continued = model(input_ids=ids[:, -new:], attention_mask=inputs["attention_mask"],
                          **{cache_argument: prefix.cache}, **media).logits
    torch.testing.assert_close(continued, full[:, -new:])
    if with_images:  # the new tokens' logits depend on the images: the continuation read them
        with torch.no_grad():
            other_images = model(**{**inputs, "pixel_values": torch.randn_like(inputs["pixel_values"])}).logits
        assert not torch.allclose(other_images[:, -new:], full[:, -new:])


def test_continuing_from_a_cache_never_drops_images_silently():
    tester = UniMPModelTester()
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    ids = inputs["input_ids"]
    with torch.no_grad():
        prefix = model(**inputs, use_cache=True)
        image = torch.full((2, 1), tester.image_token_id)
        with pytest.raises(ValueError, match="1 <image> tokens but 0 images"):
            model(input_ids=image, cache=prefix.cache)
        with pytest.raises(ValueError, match="needs the new tokens' media_attention_mask"):
            model(input_ids=ids[:, -1:], cache=prefix.cache, media_latents=prefix.media_latents)
        seen = torch.ones(2, 1, 2, dtype=torch.bool)
        with pytest.raises(ValueError, match="no pixel_values, image_features or media_latents"):
            model(input_ids=ids[:, -1:], cache=prefix.cache, media_attention_mask=seen)
        with pytest.raises(ValueError, match=r"shape \(batch, tokens fed now, num_images\)"):
            model(input_ids=ids[:, -1:], cache=prefix.cache, media_latents=prefix.media_latents,
                  media_attention_mask=torch.ones(2, ids.shape[1], 2, dtype=torch.bool))


def test_generate_passes_latents_and_the_new_tokens_media_mask_after_the_first_step():
    tester = UniMPModelTester()
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(dict(kwargs)), with_kwargs=True)
    model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=0,
                   suppress_tokens=[tester.end_of_chunk_token_id])
    prompt = inputs["input_ids"].shape[1]
    assert calls[0]["pixel_values"] is not None and calls[0]["media_attention_mask"].shape == (2, prompt, 2)
    for later in calls[1:]:
        assert later.get("pixel_values") is None and later["media_latents"].shape == (2, 2, 4, 32)
        assert later["media_attention_mask"].shape == (2, 1, 2) and later["cache"].get_seq_length() > 0


# ----- 4. tensor-parallel plan ----------------------------------------------------------------------------------------
def _plan_style(name: str, plan: dict[str, str]) -> str | None:
    """The style `plan` gives a module or its weight, matched as transformers matches it (layer numbers as `*`)."""
    generic = replace_layer_number_by_wildcard(name)
    return plan.get(generic, plan.get(generic.rsplit(".", 1)[0]) if "." in generic else None)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt_neox"])
def test_every_tp_plan_key_names_a_parameter_or_module(family):
    model = UniMPModelTester(family).create_model()
    names = {replace_layer_number_by_wildcard(n) for n, _ in [*model.named_modules(), *model.named_parameters()]}
    assert model.tp_plan
    assert sorted(set(model.tp_plan) - names) == []
    assert sorted(set(model.language_model.tp_plan) - {n.removeprefix("language_model.") for n in names}) == []


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt_neox"])
def test_tp_plan_covers_every_linear_that_the_language_models_own_plan_covers(family):
    model = UniMPModelTester(family).create_model()
    bare = AutoModelForCausalLM.from_config(copy.deepcopy(model.config.text_config))
    layers = re.escape(DECODER_LAYERS_PATH[family])
    covered = {name: style for name, module in bare.named_modules()
               if isinstance(module, torch.nn.Linear) and (style := _plan_style(name, bare.tp_plan))}
    assert any(re.match(rf"{layers}\.\d+\.", name) for name in covered)
    for name, style in covered.items():
        wrapped = "language_model." + re.sub(rf"^({layers}\.\d+)\.", r"\1.decoder_layer.", name)
        assert isinstance(model.get_submodule(wrapped), torch.nn.Linear)
        assert _plan_style(wrapped, model.tp_plan) == style, wrapped


TENSOR_PARALLEL_WORKER = """
import json, sys
import torch
from transformers.distributed import DistributedConfig
from modeling_unimp import UniMPForConditionalGeneration

torch.set_num_threads(1)
folder = sys.argv[1]
sharded = UniMPForConditionalGeneration.from_pretrained(folder, distributed_config=DistributedConfig(tp_size=2))
full = UniMPForConditionalGeneration.from_pretrained(folder)
inputs = torch.load(f"{folder}/inputs.pt")
with torch.no_grad():
    difference = (sharded.eval()(**inputs).logits - full.eval()(**inputs).logits).abs().max().item()
names = [name for name, param in sharded.named_parameters() if type(param).__name__ == "DTensor"]
with open(f"{folder}/rank{torch.distributed.get_rank()}.json", "w") as handle:
    json.dump({"difference": difference, "sharded": names}, handle)
"""


def test_tensor_parallel_forward_on_two_cpu_processes_matches_the_full_model(tmp_path):
    tester = UniMPModelTester()
    model = tester.create_model()
    model.save_pretrained(tmp_path)
    torch.save(tester.prepare_inputs(), tmp_path / "inputs.pt")
    (tmp_path / "worker.py").write_text(TENSOR_PARALLEL_WORKER)
    package_root = str(Path(modeling_unimp.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(tmp_path / "worker.py"), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in range(2):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["difference"] < 1e-5
        assert "language_model.model.layers.1.decoder_layer.mlp.down_proj.weight" in report["sharded"]
        assert "language_model.model.layers.0.decoder_layer.self_attn.q_proj.weight" in report["sharded"]


# ----- 5. resizing ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize(
    ("new_size", "pad_to_multiple_of", "expected"), [(300, None, 300), (300, 64, 320), (200, None, 200)]
)
def test_resize_token_embeddings_updates_every_vocab_size(tied, new_size, pad_to_multiple_of, expected, tmp_path):
    tester = UniMPModelTester(text_config={"tie_word_embeddings": tied})
    model = tester.create_model()
    model.resize_token_embeddings(new_size, pad_to_multiple_of=pad_to_multiple_of)
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        logits = model(**inputs).logits
    sizes = {
        "model.vocab_size": model.vocab_size,
        "text_config": model.config.text_config.vocab_size,
        "get_text_config": model.config.get_text_config().vocab_size,
        "language_model.vocab_size": model.language_model.vocab_size,
        "input rows": model.get_input_embeddings().weight.shape[0],
        "output rows": model.get_output_embeddings().weight.shape[0],
        "logits": logits.shape[-1],
    }
    assert sizes == dict.fromkeys(sizes, expected)
    assert "vocab_size" not in model.config.to_diff_dict()  # no stale top-level copy
    model.save_pretrained(tmp_path)
    loaded = UniMPForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.vocab_size == loaded.config.text_config.vocab_size == expected
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, logits)


# ----- 6. gradients ---------------------------------------------------------------------------------------------------
POLICIES = {
    "all unfrozen": {},
    "default policy": {"freeze_vision_tower": True, "freeze_language_model": True},
    "frozen LM, new token rows": {"freeze_vision_tower": True, "freeze_language_model": True, "resize": 300},
    "SigLIP": {"vision_config": {"model_type": "siglip_vision_model"}},
}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_every_trainable_parameter_gets_a_gradient(family, policy):
    overrides = dict(POLICIES[policy])
    resize = overrides.pop("resize", None)
    tester = UniMPModelTester(family)
    model = tester.create_model(**overrides).train()
    if resize:
        model.resize_token_embeddings(resize)
    inputs = tester.prepare_inputs()
    model(**inputs, labels=tester.labels(inputs)).loss.backward()
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.parametrize(
    ("vision", "unused"), [("clip_vision_model", "post_layernorm."), ("siglip_vision_model", "head.")]
)
def test_only_the_vision_towers_pooling_modules_are_frozen_when_it_trains(vision, unused):
    model = UniMPModelTester(vision_config={"model_type": vision}).create_model()
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    assert frozen and all(name.startswith(f"vision_tower.{unused}") for name in frozen)


# ----- 7. multimodal API ----------------------------------------------------------------------------------------------
def test_get_image_features_takes_the_models_image_inputs_and_returns_features_and_latents():
    tester = UniMPModelTester()
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    encoded = []
    model.vision_tower.register_forward_pre_hook(
        lambda module, args, kwargs: encoded.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    with torch.no_grad():
        image_outputs = model.get_image_features(inputs["pixel_values"], inputs["image_mask"])
        output = model(**inputs)
    assert isinstance(image_outputs, BaseModelOutputWithPooling)
    assert encoded == [3, 3]  # the padding slot is not encoded
    features, latents = image_outputs.last_hidden_state, image_outputs.pooler_output
    assert features.shape == (2, 2, 4, 32) and latents.shape == (2, 2, 4, 32)  # (B, N, patches, D), (B, N, L, D)
    assert features[1, 1].abs().sum() == 0
    torch.testing.assert_close(latents, output.media_latents)
    with torch.no_grad():
        from_features = model(**{**inputs, "pixel_values": None}, image_features=features).logits
    torch.testing.assert_close(from_features, output.logits)


@pytest.mark.parametrize("vision", ["clip_vision_model", "siglip_vision_model"])
def test_get_image_features_returns_the_vision_towers_hidden_states_and_attentions_per_image_slot(vision):
    tester = UniMPModelTester(vision_config={"model_type": vision})
    model = tester.create_model()
    model.set_attn_implementation("eager")  # SDPA computes no attention weights
    inputs = tester.prepare_inputs()
    real = inputs["image_mask"].flatten()
    with torch.no_grad():
        plain = model.get_image_features(inputs["pixel_values"], inputs["image_mask"])
        asked = model.get_image_features(
            inputs["pixel_values"], inputs["image_mask"], output_hidden_states=True, output_attentions=True
        )
        tower = model.vision_tower(
            pixel_values=inputs["pixel_values"].flatten(0, 1)[real], output_hidden_states=True, output_attentions=True
        )
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(asked.pooler_output, plain.pooler_output)
    layers = model.config.vision_config.num_hidden_layers
    assert len(asked.hidden_states) == layers + 1 and len(asked.attentions) == layers
    for ours, theirs in zip(asked.hidden_states + asked.attentions, tower.hidden_states + tower.attentions):
        assert ours.shape == (2, 2, *theirs.shape[1:])
        torch.testing.assert_close(ours.flatten(0, 1)[real], theirs)
        assert ours[1, 1].abs().sum() == 0  # the padding slot


def test_outputs_carry_the_image_outputs_of_the_images_encoded_in_the_call():
    tester = UniMPModelTester()
    model = tester.create_model()
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        output = model(**inputs)
        from_latents = model(**{**inputs, "pixel_values": None}, media_latents=output.media_latents)
        text_only = model(input_ids=torch.tensor([[1, 40, 41]]))
    image_outputs = output.image_outputs
    assert isinstance(image_outputs, BaseModelOutputWithPooling)
    assert image_outputs.pooler_output is output.media_latents
    assert image_outputs.last_hidden_state.shape == (2, 2, 4, 32)
    assert from_latents.image_outputs is None and from_latents.media_latents is output.media_latents
    assert text_only.image_outputs is None and text_only.media_latents is None


def test_base_model_prefix_names_the_language_model():
    model = UniMPModelTester().create_model()
    assert model.base_model is model.language_model is getattr(model, model.base_model_prefix)


# ----- 8. initialisation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["initialize_weights", "apply _init_weights"])
@pytest.mark.parametrize("vision", ["clip_vision_model", "siglip_vision_model"])
def test_a_model_built_on_meta_re_initialises_every_weight(vision, how):
    tester = UniMPModelTester(vision_config={"model_type": vision})
    with torch.device("meta"):
        model = UniMPForConditionalGeneration(tester.get_config())
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))  # what `to_empty` leaves is arbitrary: make it visible
    if how == "initialize_weights":
        model.initialize_weights()
    else:
        model.apply(model._init_weights)
    named = [*model.named_parameters(), *model.named_buffers()]
    assert [name for name, tensor in named if tensor.is_floating_point() and not tensor.isfinite().all()] == []
    gates = [param for name, param in model.named_parameters() if name.endswith("_gate")]
    assert gates and all(gate.item() == 0 for gate in gates)  # the LM starts unchanged
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        assert model(**inputs).logits.isfinite().all()


# ----- 9. generation --------------------------------------------------------------------------------------------------
def perturbed_model(tester: UniMPModelTester, seed: int) -> UniMPForConditionalGeneration:
    """A tiny model whose greedy continuations vary (the unperturbed one repeats a token)."""
    model = tester.create_model()
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("candidates", ["prompt lookup", "UniMP assistant"])
def test_generation_feeding_candidate_tokens_with_images_equals_plain_greedy_generation(candidates):
    """Assisted decoding feeds several new tokens at once onto the cache; their media mask must follow."""
    tester = UniMPModelTester()
    model = perturbed_model(tester, seed=2)
    history = tester.history(3)
    inputs = {"input_ids": torch.tensor([history + history[1:]]), "pixel_values": torch.randn(1, 6, 3, 16, 16)}
    kwargs = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    plain = model.generate(**inputs, **kwargs)
    fed = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    if candidates == "prompt lookup":  # candidates copied from the prompt's n-grams
        assisted = model.generate(**inputs, prompt_lookup_num_tokens=3, **kwargs)
    else:  # a differently perturbed assistant, which gets the images too
        assisted = model.generate(**inputs, assistant_model=perturbed_model(tester, seed=5), **kwargs)
    assert max(fed[1:]) > 1, "no candidate tokens were fed onto the cache"
    assert assisted.tolist() == plain.tolist()
    assert len(set(plain[0, inputs["input_ids"].shape[1]:].tolist())) > 2
