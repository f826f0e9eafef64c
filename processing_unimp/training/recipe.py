"""The training recipe behind `examples/train.py`, the benchmark and the shipped checkpoints: its arguments,
processor and model builders, and `run_training`.

Not shipped to the Hub. The recipe is defined here once: the defaults of `ModelArguments` and `DataArguments`, and
`TRAINING_RECIPE` with `recipe_schedule` for the `TrainingArguments` (`training_arguments` builds them). `run_training`
builds the processor for a catalogue, a preset model with its new token rows started from content, trains with
`UniMPTrainer` (validation ranking each evaluation) and saves the result.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoImageProcessor, AutoTokenizer, set_seed

from modeling_unimp.configuration_unimp import UniMPConfig
from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration

from ..catalogue_unimp import words
from ..content_unimp import CONTENT_FIELDS, fill_item_content
from ..data.builders import load_unimp_dataset
from ..evaluation.protocol import recommend_samples
from ..image_codes_unimp import IMAGE_TOKENIZER_FOLDER, add_image_codes, load_image_tokenizer
from ..processing_unimp import UniMPProcessor
from ..schema_unimp import TASKS
from .initialisation import (
    init_image_code_tokens,
    init_item_residuals_from_interactions,
    init_item_tokens_from_content,
    unimp_for_processor,
)
from .packing import pack_histories
from .trainer import UniMPTrainer, UniMPTrainingArguments


@dataclass
class ModelArguments:
    """The model half of the recipe: its defaults are the recipe's (a from-scratch `small`, item rows started from
    title and categories, image features and a seeded random part)."""

    model_preset: str = field(default="small", metadata={"help": "tiny, small or unimp-3b (from scratch)."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A saved UniMP folder (model + processor) to start from, e.g. single-task fine-tuning "
                          "from a multi-task checkpoint."},
    )
    vision_model: str | None = field(
        default=None,
        metadata={"help": "Pretrained CLIP/SigLIP (e.g. openai/clip-vit-large-patch14), with --text-model."},
    )
    text_model: str | None = field(
        default=None,
        metadata={"help": "Pretrained causal LM (e.g. togethercomputer/RedPajama-INCITE-Instruct-3B-v1): UniMP is "
                          "composed from both backbones, with their tokenizer and image processor."},
    )
    answer_media: str | None = field(
        default=None,
        metadata={"help": "own_chunk or all_images: what the task and answer tokens read directly (default: the "
                          "model's, own_chunk; UniMPConfig.answer_media)."},
    )
    freeze_vision_tower: bool | None = field(
        default=None,
        metadata={"help": "Override the preset's vision-tower policy; frozen, each distinct image is encoded once per "
                          "run (--cache-image-features)."},
    )
    init_item_tokens_from: str = field(
        default="title,categories",
        metadata={"help": "Item attributes (comma-separated) whose mean token embedding starts each new item token "
                          "('' = no text part)."},
    )
    item_init_image_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of a fixed random projection of the item's vision features in its token's start."},
    )
    item_init_noise: float = field(
        default=0.5,
        metadata={"help": "Weight of a seeded random part in each item token's start: keeps items with identical "
                          "text apart (fashion-shop: 90 distinct titles for 2,305 items)."},
    )
    item_init_interaction_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the item's factor in a truncated SVD of the train (user x item) matrix in its "
                          "token's start (a collaborative start; 0 = content only). With content item rows: any "
                          "weight above 0 starts the per-item residuals there instead."},
    )
    item_init_interaction_rank: int | None = field(
        default=None,
        metadata={"help": "Rank of that SVD (default: the hidden size). A low rank keeps the co-consumption structure "
                          "and drops the noise of the smallest factors (movielens-small: rank 32 or 64 trains to a "
                          "higher validation score than 256; README, 'Training recipe')."},
    )
    item_rows: str = field(
        default="free",
        metadata={"help": "free (a free embedding row per item token, started from content) or content (rows computed "
                          "from the item's text and image features plus a residual: items added after training are "
                          "ranked from content; the vision tower is then frozen: the rows hold its features, "
                          "computed once)."},
    )
    item_residual_dropout: float = field(
        default=0.2, metadata={"help": "With content item rows: probability that an item's residual is dropped whole "
                                       "in a training step, so that content alone must rank (0.2: the best measured "
                                       "on all targets; 0.5 ranks new items higher and the others lower)."})
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (peft) instead of the full model."})
    lora_rank: int = field(default=16)


@dataclass
class DataArguments:
    """The data half of the recipe: its defaults are the recipe's (packed next-item recommend sequences of compact
    chunks, whose item text enters through the content-started item rows, 50 history items per prompt)."""

    dataset: str = field(default="fashion-shop", metadata={"help": "Bundled name or a builder's output folder."})
    image_tokenizer: str | None = field(
        default=None,
        metadata={"help": "A VQ image tokenizer (examples/train_image_tokenizer.py): adds each item's image codes "
                          "and `<img_k>` tokens for the generate_image task, and ships in `image_tokenizer/`."},
    )
    tasks: str = field(
        default="recommend",
        metadata={"help": "Comma-separated, e.g. 'recommend,search,rate_explain,select' for multi-task training."},
    )
    packed: bool = field(
        default=True,
        metadata={"help": "Recommend as packed next-item sequences: each user's whole time-ordered train history, "
                          "id before content, cut into non-overlapping max_length sequences, so every train "
                          "interaction is a target once per epoch (training/packing.py); the other --tasks are "
                          "added as single samples. Sets history_ids='before'."},
    )
    history_ids: str = field(
        default="after",
        metadata={"help": "'after' (id after the item's content: identification) or 'before' (id first: next-item "
                          "prediction at every history position); --packed implies 'before'."},
    )
    packed_recent: int | None = field(
        default=None,
        metadata={"help": "With --packed, only each user's latest N train interactions (None: all of them)."},
    )
    identification: bool = field(
        default=False,
        metadata={"help": "With --packed, also train every sequence in the 'after' layout (content -> id)."},
    )
    packed_ratings: str = field(
        default="",
        metadata={"help": "With --packed, also pack each user's train history as rate_explain chunks: 'ratings' (each "
                          "item then its rating) or 'explanations' (its rating and explanation). Every train rating "
                          "is then a target once per epoch, given the user's earlier ratings ('' = off; add "
                          "rate_explain to --tasks to score it)."},
    )
    task_history_items: int | None = field(
        default=10,
        metadata={"help": "With --packed, history items per sample of the other tasks (their chunks carry ratings and "
                          "explanations: long histories would cost more tokens than the packed recommend data)."},
    )
    generate_contexts: str = field(
        default="history",
        metadata={"help": "With --packed, generate_image training contexts: 'history' (the user's --task-history-items "
                          "latest items) or 'mixed' (every other sample gets instead that many catalogue items sharing "
                          "most words with its query: a stand-in for the retrieved items it gets at inference)."},
    )
    item_field_words: int | None = field(default=None, metadata={"help": "Words per item attribute in a chunk."})
    field_labels: bool = field(default=True, metadata={"help": "Write 'Title: ...' labels in chunks (False: values)."})
    use_images: bool = field(default=True, metadata={"help": "False drops every item image (ablation)."})
    chunk_images: bool = field(
        default=True, metadata={"help": "Give each chunk its item's picture as an <image> (False: with content item "
                                        "rows the pictures enter through the item rows only)."})
    item_fields: str = field(
        default="", metadata={"help": "Item attributes written per chunk ('': none, the item token carries them)."}
    )
    max_history_items: int = field(default=50)
    max_length: int = field(default=512)
    tokenizer_vocab_size: int = field(default=2048)
    max_train_samples: int | None = field(default=None)
    all_recommend_windows: bool = field(
        default=False,
        metadata={"help": "Keep every recommend training window of a user. By default only the latest is kept: "
                          "context reconstruction already supervises every earlier item of that window."},
    )
    max_eval_users: int | None = field(
        default=None, metadata={"help": "Validation users ranked per evaluation (default all: selection on a few "
                                        "hundred users is noise)."})
    max_test_users: int | None = field(default=None, metadata={"help": "Test users ranked at the end (all)."})
    max_eval_loss_samples: int = field(
        default=64, metadata={"help": "Validation samples whose loss is logged at each evaluation (ranking uses more)."}
    )


# The recipe's `TrainingArguments` values (the run's budget and output folder are the caller's; seed 0 is the one
# the reported rows were measured at).
TRAINING_RECIPE: dict[str, Any] = {
    "learning_rate": 1e-3, "lr_scheduler_type": "cosine", "warmup_steps": 0.02, "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 32, "save_total_limit": 1, "load_best_model_at_end": True,
    "metric_for_best_model": "NDCG@10", "greater_is_better": True, "logging_steps": 50, "report_to": "none",
    "prediction_loss_only": True, "seed": 0,
}


def recipe_schedule(tasks: str, max_steps: int = -1) -> dict[str, Any]:
    """The recipe's run-dependent `TrainingArguments`: validation ranking (and a checkpoint) after each epoch, or three
    times in `max_steps` when positive; length-grouped batches for recommend-only runs, random order otherwise.

    Length-sorted batches pad less (movielens-small: 1.01x the real tokens against 1.77x at random) but are
    single-task batches, so runs that mix in other tasks keep the random order (README, "Training recipe").
    """
    schedule: dict[str, Any] = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if max_steps > 0:
        every = max(max_steps // 3, 1)
        schedule = {"eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every}
    return {"train_sampling_strategy": "group_by_length" if tasks == "recommend" else "random", **schedule}


def training_arguments(output_dir: str | Path, tasks: str, max_steps: int = -1, **overrides) -> UniMPTrainingArguments:
    """The recipe's `UniMPTrainingArguments` for a run on `tasks`; `overrides` (budget, seed, ...) apply last."""
    return UniMPTrainingArguments(output_dir=str(output_dir), max_steps=max_steps,
                                  **{**TRAINING_RECIPE, **recipe_schedule(tasks, max_steps), **overrides})


def build_processor(model_args: ModelArguments, data_args: DataArguments, data, image_tokenizer=None) -> UniMPProcessor:
    """The saved processor when continuing from a folder, else a new one for the catalogue and its rating scale."""
    if model_args.model_name_or_path:
        return UniMPProcessor.from_pretrained(model_args.model_name_or_path)
    items = data["items"]
    codebook_size = 0
    if image_tokenizer is not None:
        items = add_image_codes(items, image_tokenizer)
        codebook_size = image_tokenizer.config.num_vq_embeddings
    if not data_args.use_images:
        items = items.remove_columns("image")
    ratings = [r for r in data["interactions"]["rating"] if r is not None] or [1.0, 5.0]
    backbones = {}
    if model_args.text_model:
        backbones = {"tokenizer": AutoTokenizer.from_pretrained(model_args.text_model),
                     "image_processor": AutoImageProcessor.from_pretrained(model_args.vision_model)}
    image_size = UniMPConfig.from_preset(model_args.model_preset).vision_config.image_size
    return UniMPProcessor.from_catalogue(
        items,
        **backbones,
        image_size=image_size,
        vocab_size=data_args.tokenizer_vocab_size,
        item_fields=[f for f in data_args.item_fields.split(",") if f],
        item_field_words=data_args.item_field_words,
        field_labels=data_args.field_labels,
        history_ids="before" if data_args.packed else data_args.history_ids,
        max_history_items=data_args.max_history_items,
        max_length=data_args.max_length,
        rating_min=min(ratings),
        rating_max=max(ratings),
        rating_step=1.0 if all(float(r).is_integer() for r in ratings) else 0.5,
        codebook_size=codebook_size,
        chunk_images=data_args.chunk_images,
        tokenizer_fields=CONTENT_FIELDS if model_args.item_rows == "content" else None,
    )


def start_new_rows(model, processor: UniMPProcessor, model_args: ModelArguments, image_tokenizer=None,
                   interactions: Iterable[tuple[str, str]] = ()) -> None:
    """Start a new model's item rows (content rows: fill the content table; free rows: from content) and its image
    code rows (from the image tokenizer's codebook)."""
    if model.config.item_rows == "content":
        fill_item_content(model, processor)
        if model_args.item_init_interaction_weight:
            init_item_residuals_from_interactions(model, processor, interactions,
                                                  model_args.item_init_interaction_rank)
    else:
        fields = [f for f in model_args.init_item_tokens_from.split(",") if f]
        if (fields or model_args.item_init_image_weight or model_args.item_init_noise
                or model_args.item_init_interaction_weight):
            init_item_tokens_from_content(model, processor, fields, model_args.item_init_image_weight,
                                          model_args.item_init_noise, interactions=interactions,
                                          interaction_weight=model_args.item_init_interaction_weight,
                                          interaction_rank=model_args.item_init_interaction_rank)
    if image_tokenizer is not None:
        init_image_code_tokens(model, processor, image_tokenizer)


def build_model(model_args: ModelArguments, processor: UniMPProcessor, image_tokenizer=None,
                interactions: Iterable[tuple[str, str]] = ()):
    """A saved model, or a new preset sized for the processor with its new token rows started from content (and,
    with `--item-init-interaction-weight`, from the train `(user_id, item_id)` pairs in `interactions`)."""
    media = {"answer_media": model_args.answer_media} if model_args.answer_media else {}
    rows = {"item_rows": model_args.item_rows, "item_residual_dropout": model_args.item_residual_dropout}
    freeze = model_args.freeze_vision_tower
    if freeze is None and model_args.item_rows == "content":
        freeze = True  # content rows hold vision features computed once
    frozen = {} if freeze is None else {"freeze_vision_tower": freeze}
    if model_args.model_name_or_path:
        model = UniMPForConditionalGeneration.from_pretrained(model_args.model_name_or_path)
    elif model_args.text_model:
        if not model_args.vision_model:
            raise ValueError("--text-model needs --vision-model: UniMP is composed from both backbones.")
        model = UniMPForConditionalGeneration.from_vision_text_pretrained(
            model_args.vision_model, model_args.text_model, image_token_id=processor.image_token_id,
            end_of_chunk_token_id=processor.end_of_chunk_token_id, answer_token_id=processor.answer_token_id,
            **rows, **media, **frozen,
        )
        model.resize_token_embeddings(len(processor.tokenizer))  # the added rows train even with the LM frozen
    else:
        model = unimp_for_processor(model_args.model_preset, processor, **rows, **media, **frozen)
    if not model_args.model_name_or_path:
        start_new_rows(model, processor, model_args, image_tokenizer, interactions)
    if model_args.lora:
        from peft import LoraConfig, get_peft_model

        # Attention projections of the LM families and of the cross-attention; the (new) token rows train in full.
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "query_key_value", "c_attn", "media_query",
                   "media_key_value", "media_output"]
        embeddings = {model.get_input_embeddings(), model.get_output_embeddings()}
        to_save = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if module in embeddings})
        model = get_peft_model(model, LoraConfig(r=model_args.lora_rank, target_modules=targets,
                                                 modules_to_save=to_save))
    return model


def select_tasks(dataset, tasks: list[str], limit: int | None = None, latest_recommend_only: bool = False):
    """The samples of `tasks`, optionally only each user's latest recommend window, then at most `limit` of them."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"--tasks has unknown task(s) {unknown}; choose from {TASKS}.")
    selected = dataset.filter(lambda task: task in tasks, input_columns="task")
    if latest_recommend_only:
        longest: dict[str, tuple[int, int]] = {}
        for row, (task, user, history) in enumerate(zip(selected["task"], selected["user_id"], selected["history"])):
            if task == "recommend" and len(history) >= longest.get(user, (-1, -1))[0]:
                longest[user] = (len(history), row)
        keep = {row for _, row in longest.values()}
        selected = selected.select([row for row, task in enumerate(selected["task"])
                                    if task != "recommend" or row in keep])
    return selected.shuffle(seed=0).select(range(min(limit, len(selected)))) if limit else selected


def recent_history(samples, items: int | None) -> list[dict]:
    """The samples with only their `items` latest history items (all of them when None)."""
    return [{**sample, "history": list(sample["history"])[-items:] if items else sample["history"]}
            for sample in samples]


def query_matched_contexts(samples: list[dict], items, seed: int = 0) -> list[dict]:
    """The samples with their history replaced by as many other catalogue items sharing most words (title and
    categories) with their query; the target itself is never among them."""
    rng = random.Random(seed)
    item_words = [words(" ".join([title or "", *(categories or [])])) for title, categories in
                  zip(items["title"], items["categories"])]
    item_ids = items["item_id"]
    matched = []
    for sample in samples:
        query = words(sample["query"])
        scores = {row: len(query & row_words) for row, row_words in enumerate(item_words)
                  if item_ids[row] != sample["target"]["item_id"]}
        best = max(scores.values())
        pool = [item_ids[row] for row, score in scores.items() if score == best]
        matched.append({**sample, "history": rng.sample(pool, min(len(sample["history"]), len(pool)))})
    return matched


def training_sequences(processor: UniMPProcessor, data, tasks: list[str], data_args: DataArguments) -> list[dict]:
    """`--packed` training data as encodings: every train interaction a next-item target (when `recommend` is in
    `tasks`), plus each other task's samples encoded one by one."""
    encodings = []
    if "recommend" in tasks:
        encodings += pack_histories(processor, data["train"], data_args.max_length,
                                    identification=data_args.identification, recent=data_args.packed_recent)
    if data_args.packed_ratings:
        encodings += pack_histories(processor, data["train"], data_args.max_length, recent=data_args.packed_recent,
                                    task="rate_explain", explanations=data_args.packed_ratings == "explanations")
    others = [t for t in tasks if t != "recommend"]
    if others:
        samples = recent_history(select_tasks(data["tasks_train"], others, data_args.max_train_samples),
                                 data_args.task_history_items)
        if data_args.generate_contexts == "mixed":
            rows = [row for row, sample in enumerate(samples) if sample["task"] == "generate_image"][1::2]
            for row, sample in zip(rows, query_matched_contexts([samples[row] for row in rows], data["items"])):
                samples[row] = sample
        encodings += [processor.encode(sample) for sample in samples]
    return encodings


class PaddingCollator:
    """Collates encodings (`UniMPProcessor.encode` or packed sequences) for the Trainer, or encodes raw samples."""

    def __init__(self, processor: UniMPProcessor):
        self.processor = processor

    def __call__(self, rows):
        encodings = [row if "input_ids" in row else self.processor.encode(row) for row in rows]
        return self.processor.pad(encodings)


def plot_curves(log_history: list[dict], path: Path) -> None:
    """Training loss and validation NDCG@10 against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(7, 4))
    steps = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    if steps:
        loss_axis.plot(*zip(*steps), label="training loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("loss")
    ndcg = [(r["step"], r["eval_NDCG@10"]) for r in log_history if "eval_NDCG@10" in r]
    if ndcg:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(*zip(*ndcg), "o-", color="tab:orange", label="validation NDCG@10")
        metric_axis.set_ylabel("validation NDCG@10")
    figure.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: UniMPTrainingArguments):
    """Build the processor and model, train with validation ranking, save; returns (trainer, processor, data)."""
    if data_args.generate_contexts not in ("history", "mixed"):
        raise ValueError(f"--generate-contexts must be 'history' or 'mixed', not {data_args.generate_contexts!r}.")
    if data_args.packed_ratings not in ("", "ratings", "explanations"):
        raise ValueError(f"--packed-ratings must be '', 'ratings' or 'explanations', not {data_args.packed_ratings!r}.")
    if data_args.packed_ratings and not data_args.packed:
        raise ValueError(
            "--packed-ratings needs --packed: its sequences use the packed ('before') rate_explain prompt."
        )
    if training_args.train_sampling_strategy == "group_by_length" and not data_args.packed:
        raise ValueError("train_sampling_strategy='group_by_length' needs --packed: unpacked task samples are encoded "
                         "batch by batch and have no length to group by (pass --train-sampling-strategy random).")
    set_seed(training_args.seed)
    data = load_unimp_dataset(data_args.dataset)
    image_tokenizer = load_image_tokenizer(data_args.image_tokenizer) if data_args.image_tokenizer else None
    processor = build_processor(model_args, data_args, data, image_tokenizer)
    model = build_model(model_args, processor, image_tokenizer, zip(data["train"]["user_id"], data["train"]["item_id"]))
    tasks = [t for t in data_args.tasks.split(",") if t]
    collator = processor
    eval_dataset = select_tasks(data["tasks_validation"], tasks, data_args.max_eval_loss_samples)
    if data_args.packed:
        train_dataset = training_sequences(processor, data, tasks, data_args)
        # encoded like the train data, so that grouping by length can read their lengths too
        eval_dataset = [processor.encode(s) for s in recent_history(eval_dataset, data_args.task_history_items)]
        collator = PaddingCollator(processor)
    else:
        train_dataset = select_tasks(data["tasks_train"], tasks, data_args.max_train_samples,
                                     latest_recommend_only=not data_args.all_recommend_windows)
    trainer = UniMPTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=processor,
        ranking_samples=recommend_samples(data, processor.item_ids, "validation", data_args.max_eval_users),
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        output = Path(training_args.output_dir)
        if image_tokenizer is not None:
            image_tokenizer.save_pretrained(output / IMAGE_TOKENIZER_FOLDER)
        (output / "train_results.json").write_text(json.dumps(result.metrics, indent=2))
        plot_curves(trainer.state.log_history, output / "loss_curve.png")
    return trainer, processor, data
