"""`UniMPTrainer`: a `transformers.Trainer` with UniMP's objective (not shipped to the Hub).

The loss is next-token cross-entropy in fp32 on supervised tokens, times a focal factor (1 - p)^gamma that
down-weights easy tokens, times `context_weight` on context-reconstruction tokens (the history items' own ids,
ratings and explanations), times a per-task weight. It is summed and divided by the number of supervised tokens in
the whole accumulated batch (`num_items_in_batch`), so gradient accumulation gives the update of a bigger batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from ..evaluation.tasks import evaluate_ranking
from ..schema_unimp import TASKS
from ..templates_unimp import RECONSTRUCTION
from .distributed import enable_fsdp_on_cpu, resolve_use_cpu, save_fsdp_sharded


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """`(B, T)` bool: the positions whose logits predict a supervised token (position t predicts `labels[:, t + 1]`).

    Passed to the model as `logits_to_keep`, the LM head runs only there and returns `(num_true, vocab)` logits, in
    row-major order: with a catalogue-sized vocabulary most of a step's head compute and memory go to positions
    that have no label.
    """
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


def unimp_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    token_kinds: torch.Tensor | None = None,
    task_ids: torch.Tensor | None = None,
    *,
    gamma: float = 0.0,
    context_weight: float = 1.0,
    task_weights: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """UniMP's weighted next-token loss; `labels` are unshifted, `-100` marks unsupervised tokens.

    `logits` are `(B, T, vocab)` at every position, or `(num_supervised, vocab)` at `supervised_positions(labels)`
    only (the same loss, computed without the head at unlabelled positions). `task_weights[t]` weighs every token
    of a row whose task id is `t`. Without `num_items_in_batch` the sum is divided by this batch's own count of
    supervised tokens.
    """
    labels = labels.to(logits.device)
    supervised = labels[:, 1:] != -100
    if logits.dim() == 3:
        logits = logits[:, :-1][supervised]
    logits = logits.float()
    targets = labels[:, 1:][supervised]
    log_p = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weight = torch.ones_like(log_p)
    if gamma:
        weight = weight * (1 - log_p.exp()).pow(gamma)
    if token_kinds is not None and context_weight != 1.0:
        is_context = token_kinds[:, 1:].to(logits.device)[supervised] == RECONSTRUCTION
        weight = weight * torch.where(is_context, context_weight, 1.0)
    if task_ids is not None and task_weights is not None:
        row_weight = task_weights.to(logits.device)[task_ids.to(logits.device)]
        weight = weight * row_weight.unsqueeze(-1).expand_as(supervised)[supervised]
    total = -(weight * log_p).sum()
    count = supervised.sum() if num_items_in_batch is None else num_items_in_batch
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)


def parse_task_weights(spec: str) -> dict[str, float]:
    """`"recommend=2,search=1"` -> `{"recommend": 2.0, "search": 1.0}`; unnamed tasks weigh 1."""
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in TASKS or not value:
            raise ValueError(f"task_weights entry {part!r} must be TASK=WEIGHT with TASK in {TASKS}.")
        weights[name] = float(value)
    return weights


@dataclass
class UniMPTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus UniMP's loss weights (paper: gamma 2, recommendation weight 2)."""

    gamma: float = field(default=2.0, metadata={"help": "Focal token re-weighting (1-p)^gamma; 0 = plain CE."})
    context_weight: float = field(
        default=1.0, metadata={"help": "Weight of context-reconstruction tokens relative to target tokens."}
    )
    task_weights: str = field(
        default="recommend=2.0", metadata={"help": "Per-task loss weights, e.g. 'recommend=2,search=1'."}
    )
    decay_cross_attention_only: bool = field(
        default=False, metadata={"help": "Apply weight decay only to the cross-attention weights (as in the paper)."}
    )
    logits_at_labels: bool = field(
        default=True,
        metadata={"help": "Run the LM head only at positions that predict a supervised token (same loss, less "
                          "compute); False computes logits everywhere."},
    )
    cache_image_features: bool = field(
        default=True,
        metadata={"help": "With a frozen vision tower, encode each distinct image once and reuse its features: "
                          "histories repeat catalogue items constantly."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the processor's extra columns (images, token kinds, task ids)."}
    )

    def __post_init__(self):
        self.use_cpu = resolve_use_cpu(self.use_cpu)  # else torchrun on a CPU host trains independent copies
        super().__post_init__()
        parse_task_weights(self.task_weights)  # fail at parse time, not at the first step


class UniMPTrainer(Trainer):
    """`Trainer` whose loss is `unimp_loss`, normalised over the accumulated batch.

    With `ranking_samples` (validation recommend samples), every evaluation also ranks the whole catalogue for each
    of them and logs HR/NDCG/MRR, so that `metric_for_best_model="NDCG@10"` picks checkpoints on validation.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, ranking_samples=None, **kwargs):
        super().__init__(*args, **kwargs)
        weights = parse_task_weights(getattr(self.args, "task_weights", ""))
        self.task_weights = torch.tensor([weights.get(task, 1.0) for task in TASKS])
        self.ranking_samples = ranking_samples
        self._image_features: dict[bytes, torch.Tensor] = {}

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        self.is_fsdp_enabled = enable_fsdp_on_cpu(self.accelerator) or self.is_fsdp_enabled

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        save_fsdp_sharded(self, output_dir or self.args.output_dir, _internal_call)
        super().save_model(output_dir, _internal_call)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.ranking_samples is not None:
            ranking = evaluate_ranking(
                self.model, self.processing_class, self.ranking_samples,
                batch_size=self.args.per_device_eval_batch_size, accelerator=self.accelerator,
            )
            ranking = {f"{metric_key_prefix}_{name}": value for name, value in ranking.items()}
            self.log(ranking)
            metrics.update(ranking)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, ranking)
        return metrics

    def _cached_image_features(self, model, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, N, P, D)` vision features of `(B, N, 3, H, W)` images, each distinct image encoded once per run."""
        base = self.accelerator.unwrap_model(model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        flat = pixel_values.flatten(0, 1)
        keys = [image.cpu().numpy().tobytes() for image in flat]
        new = [key for key in dict.fromkeys(keys) if key not in self._image_features]
        if new:
            with torch.no_grad():
                features = base.get_image_features(flat[[keys.index(key) for key in new]][None]).last_hidden_state[0]
            self._image_features.update(zip(new, features.cpu()))  # on the host: catalogues can be large
        stacked = torch.stack([self._image_features[key] for key in keys]).to(pixel_values.device)
        return stacked.view(*pixel_values.shape[:2], *stacked.shape[1:])

    def _uses_feature_cache(self, model) -> bool:
        config = getattr(self.accelerator.unwrap_model(model), "config", None)
        return bool(getattr(self.args, "cache_image_features", False) and getattr(config, "freeze_vision_tower", False))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        token_kinds = inputs.pop("token_kinds", None)
        task_ids = inputs.pop("task_ids", None)
        if (inputs.get("pixel_values") is not None and inputs["pixel_values"].shape[1]
                and self._uses_feature_cache(model)):
            inputs["image_features"] = self._cached_image_features(model, inputs.pop("pixel_values"))
        if getattr(self.args, "logits_at_labels", False):
            inputs["logits_to_keep"] = supervised_positions(labels)
        outputs = model(**inputs)
        loss = unimp_loss(
            outputs.logits,
            labels,
            token_kinds,
            task_ids,
            gamma=getattr(self.args, "gamma", 0.0),
            context_weight=getattr(self.args, "context_weight", 1.0),
            task_weights=self.task_weights,
            num_items_in_batch=num_items_in_batch,
        )
        if num_items_in_batch is not None and self.args.average_tokens_across_devices:
            # The count spans every process while DDP averages gradients over them.
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def get_decay_parameter_names(self, model) -> list[str]:
        names = super().get_decay_parameter_names(model)
        if getattr(self.args, "decay_cross_attention_only", False):
            names = [n for n in names if "gated_cross_attention" in n and not n.endswith("_gate")]
        return names


__all__ = [
    "UniMPTrainer",
    "UniMPTrainingArguments",
    "parse_task_weights",
    "supervised_positions",
    "unimp_loss",
]
