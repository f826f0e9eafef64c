"""UniMPTrainer's loss, gradient accumulation, resuming and LoRA, on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback

from modeling_unimp import UniMPConfig, UniMPForConditionalGeneration
from processing_unimp.training.trainer import (
    UniMPTrainer,
    UniMPTrainingArguments,
    parse_task_weights,
    supervised_positions,
    unimp_loss,
)

IMAGE, END, ANSWER = 10, 11, 12


def test_loss_matches_hand_computation():
    # Two rows of 3 tokens over a vocabulary of 2; after the shift, positions 0-1 predict labels 1-2.
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [0.0, 0.0]],
                           [[0.0, math.log(3)], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 0, 0], [-100, 1, -100]])
    kinds = torch.tensor([[0, 2, 1], [0, 1, 0]])
    tasks = torch.tensor([0, 1])
    # p(label): row 0: 0.5 (context token), 0.75 (target); row 1: 0.75 (target).
    gamma, ctx, weights = 2.0, 0.5, torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0])
    terms = [2.0 * ctx * 0.5**2 * -math.log(0.5), 2.0 * 0.25**2 * -math.log(0.75), 1.0 * 0.25**2 * -math.log(0.75)]
    loss = unimp_loss(logits, labels, kinds, tasks, gamma=gamma, context_weight=ctx, task_weights=weights)
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    plain = unimp_loss(logits, labels)
    assert plain.item() == pytest.approx((-math.log(0.5) - 2 * math.log(0.75)) / 3, rel=1e-6)
    assert unimp_loss(logits, labels, num_items_in_batch=6).item() == pytest.approx(plain.item() / 2, rel=1e-6)


def test_loss_from_logits_at_labels_only_equals_the_full_loss():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 7), generator=generator).masked_fill(torch.rand(3, 7, generator=generator) < 0.5,
                                                                          -100)
    kinds = torch.where(labels == -100, 0, torch.randint(1, 3, (3, 7), generator=generator))
    tasks = torch.tensor([0, 2, 1])
    options = {"gamma": 2.0, "context_weight": 0.3, "task_weights": torch.tensor([2.0, 1.0, 0.5, 1.0, 1.0]),
               "num_items_in_batch": 20}
    kept = logits[supervised_positions(labels)]
    assert kept.shape == (int((labels[:, 1:] != -100).sum()), 11)
    full = unimp_loss(logits, labels, kinds, tasks, **options)
    torch.testing.assert_close(unimp_loss(kept, labels, kinds, tasks, **options), full)


def test_task_weights_parse_and_reject_unknown_tasks():
    assert parse_task_weights("recommend=2, search=0.5") == {"recommend": 2.0, "search": 0.5}
    with pytest.raises(ValueError, match="recomend=2"):
        parse_task_weights("recomend=2")


def make_model(seed: int = 0) -> UniMPForConditionalGeneration:
    torch.manual_seed(seed)
    config = UniMPConfig.from_preset("tiny", image_token_id=IMAGE, end_of_chunk_token_id=END, answer_token_id=ANSWER)
    return UniMPForConditionalGeneration(config)


def make_samples(count: int) -> list[dict[str, torch.Tensor]]:
    """Fixed-length rows (two item chunks with images, then a question).

    Rows differ in content and in their number of supervised tokens, so that a per-micro-batch mean would differ
    from the mean over the accumulated batch.
    """
    generator = torch.Generator().manual_seed(1)
    samples = []
    for i in range(count):
        items = torch.randint(100, 200, (3,), generator=generator).tolist()
        ids = [1, IMAGE, 40, ANSWER, items[0], END, IMAGE, 41, ANSWER, items[1], END, 30, ANSWER, items[2]]
        labels = [-100] * len(ids)
        kinds = [0] * len(ids)
        for pos, kind in ((4, 2), (9, 2), (13, 1))[i % 3 == 0:]:
            labels[pos], kinds[pos] = ids[pos], kind
        samples.append({
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "pixel_values": torch.randn(2, 3, 16, 16, generator=generator),
            "labels": torch.tensor(labels),
            "token_kinds": torch.tensor(kinds),
            "task_ids": torch.tensor(i % 2),
        })
    return samples


def trainer_args(tmp_path, **overrides) -> UniMPTrainingArguments:
    defaults = {"output_dir": str(tmp_path), "per_device_train_batch_size": 8, "learning_rate": 1e-2, "max_steps": 1,
                "lr_scheduler_type": "constant", "optim": "sgd", "report_to": [], "save_strategy": "no",
                "logging_strategy": "no", "disable_tqdm": True, "seed": 0, "use_cpu": True, "context_weight": 0.5}
    return UniMPTrainingArguments(**{**defaults, **overrides})


def test_head_at_labels_only_gives_the_same_training_step(tmp_path):
    samples = make_samples(4)
    models = {}
    for at_labels in (False, True):
        models[at_labels] = make_model()
        args = trainer_args(tmp_path / str(at_labels), per_device_train_batch_size=4, logits_at_labels=at_labels)
        UniMPTrainer(model=models[at_labels], args=args, train_dataset=samples).train()
    for (name, a), b in zip(models[False].state_dict().items(), models[True].state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_gradient_accumulation_equals_the_bigger_batch(tmp_path):
    samples = make_samples(8)
    big = make_model()
    UniMPTrainer(model=big, args=trainer_args(tmp_path / "big"), train_dataset=samples).train()
    small = make_model()
    args = trainer_args(tmp_path / "small", per_device_train_batch_size=2, gradient_accumulation_steps=4)
    UniMPTrainer(model=small, args=args, train_dataset=samples).train()
    moved = 0
    for (name, a), b, start in zip(big.state_dict().items(), small.state_dict().values(),
                                   make_model().state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
        moved += int(not torch.equal(a, start))
    assert moved > 0


class StopAt(TrainerCallback):
    """Simulates a crash: raises once training passes `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_kill_and_resume_reaches_the_uninterrupted_weights(tmp_path):
    samples = make_samples(8)
    common = {"per_device_train_batch_size": 2, "max_steps": 6, "save_strategy": "steps", "save_steps": 2,
              "optim": "adamw_torch"}
    reference = make_model()
    UniMPTrainer(model=reference, args=trainer_args(tmp_path / "ref", **common), train_dataset=samples).train()

    crashed = UniMPTrainer(model=make_model(), args=trainer_args(tmp_path / "run", **common),
                           train_dataset=samples, callbacks=[StopAt(3)])
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert (tmp_path / "run" / "checkpoint-2" / "model.safetensors").exists()
    resumed = make_model(seed=123)  # different init: the checkpoint must restore everything
    UniMPTrainer(model=resumed, args=trainer_args(tmp_path / "run", **common), train_dataset=samples).train(
        resume_from_checkpoint=True
    )
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_lora_run_trains_only_adapters(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "media_query"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = trainer_args(tmp_path, max_steps=3, per_device_train_batch_size=4, optim="adamw_torch", learning_rate=1e-2)
    UniMPTrainer(model=model, args=args, train_dataset=make_samples(8)).train()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())
    assert any(not torch.equal(params[n], p) for n, p in before.items())


def test_weight_decay_only_on_cross_attention(tmp_path):
    args = trainer_args(tmp_path, decay_cross_attention_only=True, weight_decay=0.1)
    trainer = UniMPTrainer(model=make_model(), args=args, train_dataset=make_samples(2))
    names = trainer.get_decay_parameter_names(trainer.model)
    assert names and all("gated_cross_attention" in n for n in names)
    assert not any(n.endswith("_gate") or "norm" in n for n in names)


def test_frozen_vision_tower_encodes_each_image_once_with_the_same_loss(tmp_path):
    samples = make_samples(4)
    samples = [{**s, "pixel_values": samples[0]["pixel_values"]} for s in samples]  # every row: the same 2 images
    losses = {}
    for cache in (False, True):
        model = make_model()
        model.config.freeze_vision_tower = True
        model.apply_trainable_policy()
        calls = []
        model.vision_tower.register_forward_hook(
            lambda module, args, out, calls=calls: calls.append(len(out.last_hidden_state))
        )
        args = trainer_args(tmp_path / str(cache), max_steps=2, per_device_train_batch_size=2, logging_strategy="steps",
                            logging_steps=1, cache_image_features=cache)
        trainer = UniMPTrainer(model=model, args=args, train_dataset=samples)
        trainer.train()
        losses[cache] = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        if cache:
            assert calls == [2]  # two distinct images, encoded once over both steps
        else:
            assert sum(calls) == 8
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
