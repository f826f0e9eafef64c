"""Behaviour of the UniMP model core on tiny configs, across the supported text families."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    CLIPVisionModel,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from modeling_unimp import UniMPConfig, UniMPForConditionalGeneration
from modeling_unimp.modeling_unimp import build_media_attention_mask

IMAGE, END, ANSWER = 10, 11, 12
TEXT_FAMILIES = ["llama", "gpt_neox", "gpt2", "qwen2"]


def tiny_config(family: str = "llama", **overrides) -> UniMPConfig:
    text = {"model_type": family}
    if family == "qwen2":
        text["layer_types"] = ["full_attention", "full_attention"]
    return UniMPConfig.from_preset(
        "tiny", text_config=text, image_token_id=IMAGE, end_of_chunk_token_id=END, answer_token_id=ANSWER, **overrides
    )


def tiny_model(family: str = "llama", open_gates: bool = True, **overrides) -> UniMPForConditionalGeneration:
    """A tiny UniMP in eval mode; `open_gates` sets every gate to 1 so that images change the output."""
    torch.manual_seed(0)
    model = UniMPForConditionalGeneration(tiny_config(family, **overrides)).eval()
    if open_gates:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("_gate"):
                    param.fill_(1.0)
    return model


def history(num_items: int = 3, tail=(30, 31, ANSWER)) -> list[int]:
    """`<bos>` + item chunks `<image> t t <answer> t <eoc>` + a task tail, as token ids."""
    ids = [1]
    for i in range(num_items):
        ids += [IMAGE, 40 + i, 50 + i, ANSWER, 60 + i, END]
    return ids + list(tail)


def chunk_spans(ids: list[int]) -> list[range]:
    """Token positions of each item chunk (from its `<image>` to its `<eoc>`)."""
    spans, start = [], None
    for pos, tok in enumerate(ids):
        if tok == IMAGE:
            start = pos
        if tok == END:
            spans.append(range(start, pos + 1))
    return spans


def bare_language_model(model: UniMPForConditionalGeneration):
    """The LM alone, with UniMP's LM weights copied in (cross-attention blocks dropped)."""
    bare = AutoModelForCausalLM.from_config(copy.deepcopy(model.config.text_config)).eval()
    state = {
        k.replace(".decoder_layer.", "."): v
        for k, v in model.language_model.state_dict().items()
        if "gated_cross_attention" not in k
    }
    bare.load_state_dict(state)
    return bare


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_closed_gates_give_the_bare_language_model(family):
    model = tiny_model(family, open_gates=False)
    ids = torch.tensor([history()])
    pixels = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=pixels).logits
        bare = bare_language_model(model)(input_ids=ids).logits
    torch.testing.assert_close(ours, bare)


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_save_load_round_trip_in_safetensors(family, tmp_path):
    model = tiny_model(family)
    ids = torch.tensor([history()])
    pixels = torch.randn(1, 3, 3, 16, 16)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = UniMPForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, pixel_values=pixels).logits, loaded(input_ids=ids, pixel_values=pixels).logits
        )


def first_block_visual_input(model, ids, pixels) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and what each token reads from the images in the first cross-attention block.

    Later tokens also reach an item's image indirectly, through self-attention over that item's own tokens; the first
    block's cross-attention output is each token's direct visual input, which the media mask alone decides.
    """
    captured = []
    block = next(m for m in model.modules() if type(m).__name__ == "UniMPMediaCrossAttention")
    handle = block.register_forward_hook(lambda module, args, out: captured.append(out[0]))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    handle.remove()
    return logits, captured[0]


@pytest.mark.parametrize("answer_media", ["own_chunk", "all_images"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_media_mask_keeps_each_image_inside_its_item(family, answer_media):
    model = tiny_model(family, answer_media=answer_media)
    ids = history(3)
    spans = chunk_spans(ids)
    tail = list(range(spans[-1].stop, len(ids)))
    pixels = torch.randn(1, 3, 3, 16, 16)
    changed = pixels.clone()
    changed[0, 1] = torch.randn(3, 16, 16)  # item j = 1
    logits, visual = first_block_visual_input(model, ids, pixels)
    logits_changed, visual_changed = first_block_visual_input(model, ids, changed)
    logits_differ = (logits - logits_changed).abs().amax(-1) > 1e-6
    visual_differs = (visual - visual_changed).abs().amax(-1) > 1e-6
    assert not logits_differ[: spans[1].start].any(), "tokens before item j saw its image"
    assert logits_differ[list(spans[1])].all(), "item j's own tokens ignore its image"
    assert visual_differs[list(spans[1])].all()
    assert not visual_differs[list(spans[0]) + list(spans[2])].any(), "another item's tokens read item j's image"
    assert visual_differs[tail].all() == (answer_media == "all_images")
    assert not visual_differs[tail].any() or answer_media == "all_images"


def test_item_without_image_sees_no_image():
    model = tiny_model()
    ids = [1, IMAGE, 40, END, 41, 42, END, 30, ANSWER]  # the second item has no image
    _, visual = first_block_visual_input(model, ids, torch.randn(1, 1, 3, 16, 16))
    _, visual_changed = first_block_visual_input(model, ids, torch.randn(1, 1, 3, 16, 16))
    differs = (visual - visual_changed).abs().amax(-1) > 1e-6
    assert differs[1:4].all() and not differs[4:].any()
    assert visual[4:].abs().amax() == 0


@pytest.mark.parametrize("answer_media", ["own_chunk", "all_images"])
def test_an_image_token_beyond_the_given_images_sees_none(answer_media):
    """A generated (or an assistant's candidate) `<image>` has no image: it reads none, and nothing raises."""
    config = tiny_config(answer_media=answer_media)
    ids = torch.tensor([history(2, tail=(30, ANSWER, IMAGE, IMAGE))])
    mask = build_media_attention_mask(ids, config, torch.ones(1, 2, dtype=torch.bool))
    without = build_media_attention_mask(ids[:, :-2], config, torch.ones(1, 2, dtype=torch.bool))
    assert torch.equal(mask[:, :-2], without)
    assert mask[0, -1].tolist() == mask[0, -2].tolist() == mask[0, -3].tolist()  # what the tail saw, no own image


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_cached_generate_equals_uncached_greedy_decoding(family):
    model = tiny_model(family)
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    # The media mask of a token depends on whether a later <eoc> follows; targets never contain one.
    kwargs = dict(max_new_tokens=6, do_sample=False, suppress_tokens=[END], pad_token_id=0)
    cached = model.generate(input_ids=ids, pixel_values=pixels, use_cache=True, **kwargs)
    uncached = model.generate(input_ids=ids, pixel_values=pixels, use_cache=False, **kwargs)
    manual = ids
    with torch.no_grad():
        for _ in range(6):
            logits = model(input_ids=manual, pixel_values=pixels).logits[:, -1]
            logits[:, END] = -float("inf")
            manual = torch.cat([manual, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, manual) and torch.equal(uncached, manual)


def test_generate_encodes_images_once():
    model = tiny_model()
    calls = []
    model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(input_ids=torch.tensor([history(2)]), pixel_values=torch.randn(1, 2, 3, 16, 16),
                   max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert len(calls) == 1


@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_left_padded_batch_equals_one_by_one(family):
    model = tiny_model(family)
    rows = [history(1), history(3)]
    images = [torch.randn(1, 3, 16, 16), torch.randn(3, 3, 16, 16)]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pixels = torch.zeros(2, 3, 3, 16, 16)
    image_mask = torch.zeros(2, 3, dtype=torch.bool)
    for b, img in enumerate(images):
        pixels[b, : len(img)] = img
        image_mask[b, : len(img)] = True
    kwargs = dict(max_new_tokens=4, do_sample=False, suppress_tokens=[END], pad_token_id=0)
    batched = model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, image_mask=image_mask, **kwargs)
    for b, (row, img) in enumerate(zip(rows, images)):
        single = model.generate(input_ids=torch.tensor([row]), pixel_values=img[None], **kwargs)
        assert batched[b, width - len(row):].tolist() == single[0].tolist()


def test_precomputed_image_features_and_latents_match_pixels():
    model = tiny_model()
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values=pixels)
        features = model.get_image_features(pixels).last_hidden_state  # a catalogue cache would store these
        from_features = model(input_ids=ids, image_features=features).logits
        from_latents = model(input_ids=ids, media_latents=reference.media_latents).logits
    torch.testing.assert_close(from_features, reference.logits)
    torch.testing.assert_close(from_latents, reference.logits)


IMAGE_INPUT_PAIRS = list(itertools.combinations(["pixel_values", "image_features", "media_latents"], 2))


@pytest.mark.parametrize("given", IMAGE_INPUT_PAIRS)
def test_more_than_one_image_input_is_refused(given):
    model = tiny_model()
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    with torch.no_grad():
        reference = model(input_ids=ids, pixel_values=pixels)
    images = {
        "pixel_values": pixels,
        "image_features": reference.image_outputs.last_hidden_state,
        "media_latents": reference.media_latents,
    }
    message = f"Give one of pixel_values, image_features and media_latents, not {given[0]} and {given[1]}"
    with pytest.raises(ValueError, match=message):
        model(input_ids=ids, **{name: images[name] for name in given})


def test_activation_checkpointing_gives_same_loss_and_gradients():
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)

    def loss_and_grads(checkpointing: bool):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
        loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
        loss.backward()
        return loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads(False)
    loss_ckpt, grads_ckpt = loss_and_grads(True)
    torch.testing.assert_close(loss, loss_ckpt)
    assert grads.keys() == grads_ckpt.keys()
    assert any("resampler" in n for n in grads) and any("gated_cross_attention" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ckpt[name], msg=name)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_sdpa_and_eager_attention_agree(family):
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    model = tiny_model(family)
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(input_ids=ids, pixel_values=pixels).logits
        model.set_attn_implementation("eager")
        assert model.config.text_config._attn_implementation == "eager"
        eager = model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-4)


def test_the_resampler_and_the_cross_attention_dispatch_through_the_attention_interface():
    """A registered implementation chosen with `set_attn_implementation` runs both; no module bypasses it."""
    callers = []

    def recording_attention(module, *args, **kwargs):
        callers.append(type(module).__name__)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, *args, **kwargs)

    AttentionInterface.register("unimp_test_recording", recording_attention)
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    model = tiny_model()
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model(input_ids=ids, pixel_values=pixels).logits
        model.set_attn_implementation("unimp_test_recording")
        recorded = model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(recorded, sdpa)
    assert {"UniMPPerceiverAttention", "UniMPMediaCrossAttention"} <= set(callers)


def test_lora_wraps_trains_saves_and_reloads(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = tiny_model()
    targets = ["q_proj", "v_proj", "media_query", "media_key_value"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, lora_dropout=0.0))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([history(2)])
    pixels = torch.randn(1, 2, 3, 16, 16)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.5)
    peft_model.train()
    before = peft_model(input_ids=ids, pixel_values=pixels, labels=ids).loss
    before.backward()
    optimizer.step()
    peft_model.eval()
    with torch.no_grad():
        logits = peft_model(input_ids=ids, pixel_values=pixels).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_model(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids, pixel_values=pixels).logits, logits)


def test_frozen_language_model_still_trains_new_token_rows():
    config = tiny_config(freeze_language_model=True, freeze_vision_tower=True)
    model = UniMPForConditionalGeneration(config)
    model.resize_token_embeddings(300)
    assert model.config.text_config.vocab_size == 300 and model.config.base_vocab_size == 256
    ids = torch.tensor([[1, IMAGE, 40, ANSWER, 280, END, 30, ANSWER, 290]])
    model(input_ids=ids, pixel_values=torch.randn(1, 1, 3, 16, 16), labels=ids).loss.backward()
    grad = model.get_input_embeddings().weight.grad
    assert grad[:256].abs().sum() == 0 and grad[280].abs().sum() > 0
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"resampler", "language_model"}
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    frozen_lm = [n for n, p in model.language_model.named_parameters() if not p.requires_grad]
    assert any("q_proj" in n for n in frozen_lm)


def test_trainable_policy_survives_save_and_load(tmp_path):
    model = UniMPForConditionalGeneration(tiny_config(freeze_language_model=True))
    model.resize_token_embeddings(300)
    model.save_pretrained(tmp_path)
    loaded = UniMPForConditionalGeneration.from_pretrained(tmp_path)
    flags = {n: p.requires_grad for n, p in loaded.named_parameters()}
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}


def test_from_vision_text_pretrained_composes_pretrained_backbones(tmp_path):
    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, image_size=16, patch_size=8))
    text = AutoModelForCausalLM.from_config(tiny_config().text_config)
    vision.save_pretrained(tmp_path / "vision")
    text.save_pretrained(tmp_path / "text")
    model = UniMPForConditionalGeneration.from_vision_text_pretrained(
        tmp_path / "vision", tmp_path / "text", num_latents=4, resampler_depth=1, resampler_heads=2,
        resampler_head_dim=16, cross_attention_heads=2, cross_attention_head_dim=16, image_token_id=IMAGE,
        end_of_chunk_token_id=END,
    ).eval()
    torch.testing.assert_close(model.vision_tower.state_dict(), vision.state_dict())
    assert all(not p.is_meta for p in model.parameters())
    assert all(float(p.detach()) == 0 for n, p in model.named_parameters() if n.endswith("_gate"))
    ids = torch.tensor([history()])
    with torch.no_grad():
        ours = model(input_ids=ids, pixel_values=torch.randn(1, 3, 3, 16, 16)).logits
        torch.testing.assert_close(ours, text.eval()(input_ids=ids).logits)


def test_auto_classes_resolve_unimp(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), UniMPConfig)
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
        assert isinstance(auto.from_pretrained(tmp_path), UniMPForConditionalGeneration)


def test_siglip_vision_tower():
    config = tiny_config(vision_config={"model_type": "siglip_vision_model"})
    model = UniMPForConditionalGeneration(config).eval()
    out = model(input_ids=torch.tensor([history(1)]), pixel_values=torch.randn(1, 1, 3, 16, 16))
    assert out.media_latents.shape == (1, 1, 4, 32)


def test_default_config_is_the_paper_model_and_builds_on_meta():
    config = UniMPConfig()
    assert config.text_config.model_type == "gpt_neox" and config.text_config.hidden_size == 2560
    assert config.text_config.num_hidden_layers == 32 and config.vision_config.patch_size == 14
    assert (config.cross_attention_every_n_layers, config.num_latents, config.resampler_depth) == (2, 64, 6)
    with torch.device("meta"):
        model = UniMPForConditionalGeneration(config)
    blocks = [n for n, _ in model.named_modules() if n.endswith("gated_cross_attention") and _ is not None]
    assert len(blocks) == 16
    total = sum(p.numel() for p in model.parameters())
    assert 3.5e9 < total < 4.5e9, total  # OpenFlamingo-4B


def test_a_batch_without_images_equals_no_images_given():
    model = tiny_model()
    ids = torch.tensor([[1, 40, 41, END, 30, ANSWER]])
    with torch.no_grad():
        empty = model(input_ids=ids, pixel_values=torch.zeros(1, 0, 3, 16, 16)).logits
        torch.testing.assert_close(empty, model(input_ids=ids).logits)
    with pytest.raises(ValueError, match="1 <image> tokens but 0 images"):
        model(input_ids=torch.tensor([[1, IMAGE, 40, END]]))


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids = torch.tensor([history(2)])
    with pytest.raises(ValueError, match="2 <image> tokens but 3 images"):
        model(input_ids=ids, pixel_values=torch.randn(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(input_ids=ids, pixel_values=torch.randn(1, 2, 3, 20, 20))
    with pytest.raises(ValueError, match=r"\(batch, num_images, \.\.\.\)"):
        model(input_ids=ids, pixel_values=torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="image_features is batched for 2 rows but input_ids has 1"):
        model(input_ids=ids, image_features=torch.randn(2, 2, 4, 32))
    with pytest.raises(ValueError, match="forward does not take token_kinds or task_ids"):
        model(input_ids=ids, token_kinds=torch.zeros_like(ids), task_ids=torch.tensor([0]))
    with pytest.raises(ValueError, match="unsupported text family"):
        UniMPConfig.from_preset("tiny", text_config={"model_type": "bert"})
    with pytest.raises(ValueError, match="Unknown UniMP preset"):
        UniMPConfig.from_preset("huge")
    with pytest.raises(ValueError, match="answer_media='last_image' is not supported"):
        tiny_config(answer_media="last_image")
