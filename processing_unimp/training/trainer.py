"""`UniMPTrainer`: a `transformers.Trainer` with UniMP's objective (not shipped to the Hub).

The loss is next-token cross-entropy in fp32 on supervised tokens, times a focal factor (1 - p)^gamma that
down-weights easy tokens, times `context_weight` on context-reconstruction tokens (the history items' own ids,
ratings and explanations), times a per-task weight. It is summed and divided by the number of supervised tokens in
the whole accumulated batch (`num_items_in_batch`), so gradient accumulation gives the update of a bigger batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from modeling_unimp.configuration_unimp import UniMPConfig
from modeling_unimp.modeling_unimp import UniMPForConditionalGeneration

from ..schema_unimp import TASKS
from ..templates_unimp import RECONSTRUCTION
from .distributed import enable_fsdp_on_cpu, resolve_use_cpu, save_fsdp_sharded
from .evaluation import evaluate_ranking


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


def unimp_for_processor(preset: str, processor, **overrides) -> UniMPForConditionalGeneration:
    """A from-scratch UniMP preset sized for `processor`: its vocabulary and special-token ids.

    The processor's images must have the preset's `vision_config.image_size`.
    """
    tokenizer = processor.tokenizer
    text = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = UniMPConfig.from_preset(
        preset,
        text_config={**text, **overrides.pop("text_config", {})},
        image_token_id=processor.image_token_id,
        end_of_chunk_token_id=processor.end_of_chunk_token_id,
        answer_token_id=processor.answer_token_id,
        **overrides,
    )
    return UniMPForConditionalGeneration(config)


def _token_matrices(model) -> list[torch.Tensor]:
    """The input embedding matrix, and the output one unless it is tied to it."""
    matrices = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())}
    return list(matrices.values())


def _standardised(rows: torch.Tensor) -> torch.Tensor:
    """Rows centred over the catalogue and scaled to unit standard deviation (overall)."""
    rows = rows - rows.mean(0, keepdim=True)
    return rows / rows.std().clamp(min=1e-12)


def interaction_factors(item_ids: Sequence[str], interactions: Iterable[tuple[str, str]], rank: int,
                        seed: int = 0, dense_max_cells: int = 2**25) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's factor in a rank-`rank` truncated SVD of the (user x item) interaction matrix (PureSVD: rows
    scaled to unit length, factors `V * sqrt(S)`): `(factors (num_items, rank), has_interactions (num_items,))`.

    Items that the same users consumed get close factors; items never interacted with get zeros. Pass train
    interactions only, as `(user_id, item_id)` pairs. A matrix of at most `dense_max_cells` cells (the bundled
    datasets') is factorised dense, which reproduces the benchmark rows bit for bit; a larger one stays sparse.
    """
    if rank < 1:
        raise ValueError(f"The interaction SVD's rank (--item-init-interaction-rank) must be >= 1, got {rank}.")
    column = {item_id: index for index, item_id in enumerate(item_ids)}
    users: dict[str, int] = {}
    cells = {(users.setdefault(user, len(users)), column[item]) for user, item in interactions if item in column}
    rank = min(rank, len(users), len(item_ids))
    has_interactions = torch.zeros(len(item_ids), dtype=torch.bool)
    if not cells:
        return torch.zeros(len(item_ids), max(rank, 1)), has_interactions
    index = torch.tensor(sorted(cells)).T
    if len(users) * len(item_ids) <= dense_max_cells:
        matrix = torch.zeros(len(users), len(item_ids))
        matrix[tuple(index)] = 1.0
        matrix = matrix / matrix.norm(dim=1, keepdim=True)
    else:
        per_user = torch.bincount(index[0], minlength=len(users)).float()
        matrix = torch.sparse_coo_tensor(index, per_user[index[0]].rsqrt(), (len(users), len(item_ids)),
                                         check_invariants=True, is_coalesced=True)
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws its start from the global generator: seed a copy
        torch.manual_seed(seed)
        _, singular, v = torch.svd_lowrank(matrix, q=rank, niter=4)
    has_interactions[index[1]] = True
    return v * singular.sqrt(), has_interactions


@torch.no_grad()
def item_content_rows(
    model,
    processor,
    fields: Sequence[str] = ("title",),
    image_weight: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    interactions: Iterable[tuple[str, str]] = (),
    interaction_weight: float = 0.0,
    interaction_rank: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A content start for every item token: `(rows (num_items, hidden), has_content (num_items,) bool)`.

    Per item, in `processor.item_ids` order: the mean input-embedding row of the tokens of its `fields` text (each
    field as the chunk prints it), plus `image_weight` times a fixed seeded random projection of its image's
    vision-tower features (mean over patches; items without an image get none), plus `interaction_weight` times
    a fixed random projection of its rank-`interaction_rank` `interaction_factors` (default rank: the hidden size) in
    the train `(user_id, item_id)` pairs (a collaborative start: what SASRec must learn from scratch), plus `noise`
    times a seeded Gaussian, which separates items whose content is identical (fashion-shop has 90 distinct titles
    for 2,305 items). Each part is standardised over the catalogue first, and the sum is scaled to the embedding's
    std.
    """
    weight = model.get_input_embeddings().weight
    catalogue = processor.catalogue
    attributes = [dict(catalogue[item_id]) if catalogue is not None and item_id in catalogue else {}
                  for item_id in processor.item_ids]
    texts = [" ".join(str(a.get(f) if not isinstance(a.get(f), (list, tuple)) else " ".join(map(str, a[f])))
                      for f in fields if a.get(f) is not None) for a in attributes]
    encoded = processor.tokenizer(texts, add_special_tokens=False)["input_ids"] if fields else [[] for _ in texts]
    has_text = torch.tensor([bool(ids) for ids in encoded])
    rows = torch.zeros(len(texts), weight.shape[1])
    text = torch.stack([weight[ids].float().mean(0) if ids else weight.new_zeros(weight.shape[1]).float()
                        for ids in encoded])
    if has_text.any():
        rows[has_text] = _standardised(text[has_text])
    generator = torch.Generator().manual_seed(seed)
    images = [(row, a["image"]) for row, a in enumerate(attributes) if a.get("image") is not None]
    has_image = torch.zeros(len(texts), dtype=torch.bool)
    if image_weight and images:
        from ..image_processing_unimp import load_rgb_image

        device = next(model.parameters()).device
        features = []
        for start in range(0, len(images), batch_size):
            part = [load_rgb_image(image, processor.item_ids[row]) for row, image in images[start : start + batch_size]]
            pixels = processor.image_processor(part, return_tensors="pt")["pixel_values"].to(device)
            features.append(model.get_image_features(pixels[None]).last_hidden_state[0].float().mean(1).cpu())
        features = torch.cat(features)
        projection = torch.randn(features.shape[1], weight.shape[1], generator=generator)
        index = torch.tensor([row for row, _ in images])
        rows[index] += image_weight * _standardised(_standardised(features) @ projection)
        has_image[index] = True
    has_interactions = torch.zeros(len(texts), dtype=torch.bool)
    if interaction_weight:
        factors, has_interactions = interaction_factors(processor.item_ids, interactions,
                                                        weight.shape[1] if interaction_rank is None else interaction_rank, seed)
        projection = torch.randn(factors.shape[1], weight.shape[1], generator=generator)
        rows[has_interactions] += interaction_weight * _standardised(_standardised(factors[has_interactions]) @ projection)
    if noise:
        rows += noise * torch.randn(rows.shape, generator=generator)
    rows = rows / rows.std().clamp(min=1e-12) * weight.float().std()
    return rows, has_text | has_image | has_interactions | bool(noise)


@torch.no_grad()
def init_item_tokens_from_content(model, processor, fields: Sequence[str] = ("title",), image_weight: float = 0.0,
                                  noise: float = 0.0, seed: int = 0, interactions: Iterable[tuple[str, str]] = (),
                                  interaction_weight: float = 0.0, interaction_rank: int | None = None) -> int:
    """Start each item token's embedding (and output) row at `item_content_rows`; returns how many were set.

    Items with similar content then start close and share what is learnt about their neighbours; `noise` keeps items
    with identical content apart (their rows would otherwise start equal and only separate slowly).
    """
    rows, has_content = item_content_rows(model, processor, fields, image_weight, noise, seed,
                                          interactions=interactions, interaction_weight=interaction_weight,
                                          interaction_rank=interaction_rank)
    token_rows = torch.tensor(processor.item_token_ids)[has_content]
    for matrix in _token_matrices(model):
        matrix[token_rows] = rows[has_content].to(matrix.dtype).to(matrix.device)
    return int(has_content.sum())


@torch.no_grad()
def init_image_code_tokens(model, processor, image_tokenizer, seed: int = 0) -> None:
    """Start each `<img_k>` row at a fixed random projection of VQ codebook vector k, at the embedding's scale, so
    that codes that decode alike start close."""
    weight = model.get_input_embeddings().weight
    codebook = image_tokenizer.quantize.embedding.weight.detach().float()
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(codebook.shape[1], weight.shape[1], generator=generator)
    projected = (codebook - codebook.mean(0)) @ projection
    rows = projected / projected.std() * weight.std()
    for matrix in _token_matrices(model):
        matrix[processor.image_code_token_ids] = rows.to(matrix.dtype)


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
        if inputs.get("pixel_values") is not None and inputs["pixel_values"].shape[1] and self._uses_feature_cache(model):
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
    "init_image_code_tokens",
    "init_item_tokens_from_content",
    "interaction_factors",
    "item_content_rows",
    "parse_task_weights",
    "supervised_positions",
    "unimp_for_processor",
    "unimp_loss",
]
