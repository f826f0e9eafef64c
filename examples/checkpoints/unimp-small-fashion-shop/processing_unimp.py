"""`UniMPProcessor`: task samples in the unified data format -> model inputs, and model outputs -> items.

The processor owns the item vocabulary (one `<item_k>` token per catalogue item, in a seeded random
order), the added special tokens, the catalogue that resolves item ids to attributes, and the task
templates. One code path renders a sample for training and for inference.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from PIL import Image
from tokenizers import AddedToken
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import cached_file

from .catalogue_unimp import CATALOGUE_FILE, ItemCatalogue
from .image_processing_unimp import load_rgb_image, make_image_processor
from .ranking_unimp import rank_tokens
from .schema_unimp import INTERACTION_FIELDS, TASKS, check_rating, check_task, item_id_of
from .templates_unimp import (
    CONTEXT,
    HISTORY_IDS,
    TEMPLATE_TEXTS,
    TEMPLATES,
    Chunk,
    Entry,
    Layout,
    ResolvedSample,
    history_chunk,
    item_part,
    rating_part,
)
from .tokenization_unimp import train_tokenizer
from .vocabulary_unimp import (
    ANSWER_TOKEN,
    END_OF_CHUNK_TOKEN,
    IMAGE_TOKEN,
    image_code_token,
    item_token,
    rating_token,
    rating_values,
    shuffled_item_ids,
    slot_token,
)

DEFAULT_ITEM_FIELDS = ("title", "brand", "categories", "price", "description")
ImageReader = Callable[[Any, str], Any]
"""`read_image(value, item_id) -> image`: how the images that a sample gives inline are read (e.g. a pipeline's
`ImagePolicy.read`, under a server's limits); it is called once the item id is known to the processor."""
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


@dataclass
class _Tokenized:
    """A chunk after tokenization: ids, their kinds, and the image its `<image>` token stands for."""

    ids: list[int]
    kinds: list[int]
    image: Any = None
    item_id: str | None = None


def cap_words(text: str, max_words: int) -> str:
    """The first `max_words` whitespace-separated words of `text`."""
    return " ".join(str(text).split()[:max_words])


def _field_label(name: str) -> str:
    """How an attribute is named in a chunk: `"release_year"` -> `"Release year"`."""
    return name.replace("_", " ").capitalize()


def _format_value(value: Any) -> str:
    """An attribute value as text: lists joined with commas, floats without trailing zeros."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(part) for part in value if part not in (None, ""))
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


_MESSAGE = "\x00unimp-message\x00"


def chat_framing(tokenizer: Any) -> tuple[list[int], list[int]]:
    """`(opening, turn)` token ids of the tokenizer's chat template around one user message: what precedes the
    message (e.g. a system turn and `<|im_start|>user\\n`) and what lies between it and the assistant's reply (the end
    of the turn and the assistant's header). Without a chat template: `([bos], [])`, or `([], [])` without a BOS.
    """
    if not getattr(tokenizer, "chat_template", None):
        return ([] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]), []
    text = tokenizer.apply_chat_template([{"role": "user", "content": _MESSAGE}], add_generation_prompt=True,
                                         tokenize=False)
    opening, turn = text.split(_MESSAGE)
    return [tokenizer(part, add_special_tokens=False)["input_ids"] for part in (opening, turn)]


LOSS_FIELDS = ("token_kinds", "task_ids")
"""Collated fields that only the training loss reads; `__call__` leaves them out, `pad` keeps them."""


class UniMPProcessor(ProcessorMixin):
    r"""Turns user histories into UniMP model inputs for every task, and model outputs back into items.

    Args:
        image_processor: any transformers image processor (CLIP-style by default, see `from_catalogue`).
        tokenizer: any fast tokenizer; the UniMP tokens are added to it when missing. With a chat template, each
            sample is framed as one exchange (`chat_framing`): the template's opening instead of the BOS, and its
            turn change before a question's `<answer>`.
        item_ids: the catalogue's item ids in token order: `item_ids[k]` is the item of `<item_k>`.
        rating_min, rating_max, rating_step: the rating scale, one `<rating_r>` token per value.
        num_slots: how many candidates a selection may have (`<slot_0>` ...).
        codebook_size: codes of the VQ image tokenizer (`<img_0>` ...); 0 disables image generation.
        max_history_items, max_length: truncation limits; the oldest history chunks are dropped first.
        max_field_words: every attribute, explanation and query is capped at this many words.
        item_fields: the item attributes written into a chunk, in this order, as "Key: value; ...".
        item_field_words: caps each item attribute at this many words instead of `max_field_words` (compact chunks).
        field_labels: write "Key: value; ..." (default) or only the values ("value; ...", compact chunks).
        history_ids: `"after"` (the original template: a history id follows its item's content, i.e. identification)
            or `"before"` (`<answer> <item_k>` opens each chunk: every history id is a next-item target, and
            recommend's prompt is the `<answer>` after the last chunk; see `templates_unimp.HISTORY_IDS`).
        unknown_items: `"error"` (default) or `"drop"` for history items missing from the item vocabulary.
        chunk_images: give a chunk its item's picture as an `<image>` (default). False gives no chunk a picture,
            the catalogue's or one given inline: for a model whose item rows are computed from the catalogue's
            pictures (`item_rows="content"`), a token and the cross-attention less per interaction.
        catalogue: the items table (a `datasets.Dataset`, a list of item dicts, or an `ItemCatalogue`).
    """

    image_token = IMAGE_TOKEN

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any,
        item_ids: Sequence[str] = (),
        rating_min: float = 1.0,
        rating_max: float = 5.0,
        rating_step: float = 1.0,
        num_slots: int = 3,
        codebook_size: int = 0,
        max_history_items: int = 20,
        max_length: int = 1024,
        max_field_words: int = 32,
        item_fields: Sequence[str] = DEFAULT_ITEM_FIELDS,
        item_field_words: int | None = None,
        field_labels: bool = True,
        history_ids: str = "after",
        unknown_items: str = "error",
        chunk_images: bool = True,
        catalogue: ItemCatalogue | datasets.Dataset | Iterable[Mapping[str, Any]] | None = None,
        chat_template: str | None = None,
    ):
        if unknown_items not in ("error", "drop"):
            raise ValueError(f"unknown_items must be 'error' or 'drop', got {unknown_items!r}.")
        if history_ids not in HISTORY_IDS:
            raise ValueError(f"history_ids must be one of {HISTORY_IDS}, got {history_ids!r}.")
        self.item_ids = list(item_ids)
        self.rating_min, self.rating_max, self.rating_step = rating_min, rating_max, rating_step
        self.rating_values = rating_values(rating_min, rating_max, rating_step)
        self.num_slots = num_slots
        self.codebook_size = codebook_size
        self.max_history_items = max_history_items
        self.max_length = max_length
        self.max_field_words = max_field_words
        self.item_fields = list(item_fields)
        self.item_field_words = item_field_words
        self.field_labels = field_labels
        self.history_ids = history_ids
        self.unknown_items = unknown_items
        self.chunk_images = chunk_images
        if catalogue is not None and not isinstance(catalogue, ItemCatalogue):
            catalogue = ItemCatalogue(catalogue)
        self.catalogue = catalogue
        self._item_index = {item_id: index for index, item_id in enumerate(self.item_ids)}
        if len(self._item_index) < len(self.item_ids):
            raise ValueError("item_ids contains duplicates.")
        added = [AddedToken(token, special=True, normalized=False) for token in self._added_tokens()]
        tokenizer.add_tokens(added, special_tokens=True)  # no-op for tokens a saved tokenizer already has
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.opening_ids, self._turn_ids = chat_framing(tokenizer)
        self._image_code_of = {token_id: code for code, token_id in enumerate(self.image_code_token_ids)}

    @classmethod
    def from_catalogue(
        cls,
        items: ItemCatalogue | datasets.Dataset | Iterable[Mapping[str, Any]],
        tokenizer: Any = None,
        image_processor: Any = None,
        seed: int = 0,
        vocab_size: int = 4096,
        image_size: int = 224,
        tokenizer_fields: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> UniMPProcessor:
        """Build a processor for a catalogue: seeded shuffled item tokens, and by default a BPE tokenizer
        trained on the catalogue's text (of `tokenizer_fields`, default the chunks' `item_fields`) and a CLIP-style
        image processor of `image_size` pixels."""
        catalogue = items if isinstance(items, ItemCatalogue) else ItemCatalogue(items)
        fields = kwargs.get("item_fields", DEFAULT_ITEM_FIELDS)
        if tokenizer is None:
            # Template words and field labels occur in every sample: weigh them like one occurrence per item.
            labels = [f"{_field_label(field)}:" for field in fields]
            fixed = [*TEMPLATE_TEXTS, *labels] * len(catalogue)
            texts = catalogue.texts(fields if tokenizer_fields is None else tokenizer_fields)
            tokenizer = train_tokenizer(itertools.chain(texts, fixed), vocab_size=vocab_size)
        if image_processor is None:
            image_processor = make_image_processor(image_size)
        item_ids = shuffled_item_ids(catalogue.item_ids, seed)
        return cls(image_processor, tokenizer, item_ids=item_ids, catalogue=catalogue, **kwargs)

    # ----------------------------------------------------------------- vocabulary
    def _added_tokens(self) -> list[str]:
        """Every token UniMP adds, in id order for a tokenizer that has none of them yet."""
        return [
            IMAGE_TOKEN,
            END_OF_CHUNK_TOKEN,
            ANSWER_TOKEN,
            *map(item_token, range(len(self.item_ids))),
            *map(rating_token, self.rating_values),
            *map(slot_token, range(self.num_slots)),
            *map(image_code_token, range(self.codebook_size)),
        ]

    def _ids(self, tokens: Iterable[str]) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(list(tokens))

    @property
    def image_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    @property
    def end_of_chunk_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(END_OF_CHUNK_TOKEN)

    @property
    def answer_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(ANSWER_TOKEN)

    @property
    def item_token_ids(self) -> list[int]:
        """Token id of each item, in `item_ids` order."""
        return self._ids(map(item_token, range(len(self.item_ids))))

    @property
    def rating_token_ids(self) -> list[int]:
        """Token id of each value of `rating_values`."""
        return self._ids(map(rating_token, self.rating_values))

    @property
    def slot_token_ids(self) -> list[int]:
        return self._ids(map(slot_token, range(self.num_slots)))

    @property
    def image_code_token_ids(self) -> list[int]:
        """Token id of each image code, in code order."""
        return self._ids(map(image_code_token, range(self.codebook_size)))

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_mask", "labels"]

    def check_new_items(self, item_ids: Sequence[Any]) -> None:
        """Refuse ids that are not non-empty strings, already in the vocabulary, or repeated (field `item_id`)."""
        for item_id in item_ids:
            if not isinstance(item_id, str) or not item_id:
                raise ValueError(f"Every added item needs a non-empty string `item_id`; got {item_id!r}.")
        known = [item_id for item_id in item_ids if item_id in self._item_index]
        if known or len(set(item_ids)) < len(item_ids):
            raise ValueError(f"Field `item_id`: items {(known or item_ids)[:5]} are already in the catalogue or "
                             "repeated.")

    def add_items(self, item_ids: Sequence[str], attributes: datasets.Dataset) -> list[int]:
        """Append items to the vocabulary (new `<item_k>` tokens) and their `attributes` rows to the catalogue;
        returns their token ids. Check them first with `check_new_items`."""
        self.check_new_items(item_ids)
        first = len(self.item_ids)
        tokens = [item_token(first + k) for k in range(len(item_ids))]
        self.tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
        self.item_ids.extend(item_ids)
        self._item_index.update({item_id: first + k for k, item_id in enumerate(item_ids)})
        if self.catalogue is not None:
            self.catalogue = self.catalogue.extended(attributes)
        return self._ids(tokens)

    # ----------------------------------------------------------------- resolving samples
    def _describe(self, attributes: Mapping[str, Any]) -> str:
        """The "Key: value; ..." attribute text of an item; missing fields are left out, never filled."""
        parts = []
        words = self.max_field_words if self.item_field_words is None else self.item_field_words
        for name in self.item_fields:
            value = attributes.get(name)
            text = cap_words(_format_value(value), words) if value is not None else ""
            if text:
                parts.append(f"{_field_label(name)}: {text}" if self.field_labels else text)
        return "; ".join(parts)

    def _rating_token(self, rating: float, item_id: str) -> str:
        """The token of the scale value nearest to (finite) `rating`; ratings outside the scale are an error."""
        tolerance = 1e-6 * max(1.0, abs(self.rating_max))
        if not self.rating_min - tolerance <= rating <= self.rating_max + tolerance:
            raise ValueError(
                f"Item {item_id!r}: field `rating` is {rating}, outside the rating scale "
                f"{self.rating_min:g}..{self.rating_max:g}."
            )
        return rating_token(self.rating_values[round((rating - self.rating_min) / self.rating_step)])

    def _image_code_tokens(self, codes: Sequence[int], item_id: str) -> list[str]:
        bad = [code for code in codes if not 0 <= int(code) < self.codebook_size]
        if bad:
            raise ValueError(
                f"Item {item_id!r}: field `image_codes` has codes {bad[:5]} outside the codebook "
                f"(codebook_size={self.codebook_size})."
            )
        return [image_code_token(int(code)) for code in codes]

    def _entry(self, raw: str | Mapping[str, Any], task: str, role: str, read_image: ImageReader | None) -> Entry:
        """Resolve one item reference: catalogue attributes, overridden by those given inline (an inline image read
        with `read_image`, if given, once the id is known)."""
        item_id = item_id_of(raw)
        raw = {"item_id": raw} if isinstance(raw, str) else raw
        if item_id not in self._item_index:
            raise ValueError(
                f"Unknown item id {item_id!r} in `{role}`: it is not in the processor's item vocabulary "
                f"of {len(self.item_ids)} items."
            )
        rating = check_rating(raw.get("rating"), item_id)
        attributes = dict(self.catalogue[item_id]) if self.catalogue is not None and item_id in self.catalogue else {}
        attributes.update({k: v for k, v in raw.items() if v is not None and k not in INTERACTION_FIELDS})
        if self.chunk_images and read_image is not None and raw.get("image") is not None:
            attributes["image"] = read_image(raw["image"], item_id)
        token = item_token(self._item_index[item_id])
        image = attributes.get("image") if self.chunk_images else None
        entry = Entry(item_id, token, self._describe(attributes), image)
        if task == "rate_explain":
            if rating is not None:
                entry.rating_token = self._rating_token(rating, item_id)
            if raw.get("explanation"):
                entry.explanation = cap_words(raw["explanation"], self.max_field_words) or None
        if task == "generate_image" and attributes.get("image_codes") is not None:
            entry.image_code_tokens = self._image_code_tokens(attributes["image_codes"], item_id)
        return entry

    def _history(self, history: Sequence[Any], task: str, read_image: ImageReader | None = None) -> list[Entry]:
        """Resolve the history; unknown items raise or, with `unknown_items="drop"`, are skipped."""
        if not history:
            raise ValueError("The sample's `history` is empty; every task needs at least one history item.")
        if self.unknown_items == "drop":
            history = [raw for raw in history if item_id_of(raw) in self._item_index]
            if not history:
                raise ValueError("No item of the sample's `history` is in the processor's item vocabulary.")
        return [self._entry(raw, task, "history", read_image) for raw in history]

    def resolve(
        self, sample: Mapping[str, Any], task: str | None = None, read_image: ImageReader | None = None
    ) -> ResolvedSample:
        """Check a task sample (see README, "Data format") and resolve its item ids to entries; `read_image` (see
        `ImageReader`) reads the images the sample gives inline."""
        task = check_task(sample.get("task") or task)
        query = sample.get("query")
        if task in ("search", "generate_image") and not query:
            raise ValueError(f"Task {task!r} needs a `query`.")
        history = self._history(sample.get("history"), task, read_image)
        resolved = ResolvedSample(task, history, history_ids=self.history_ids)
        resolved.query = cap_words(query, self.max_field_words) if query else None
        if sample.get("target") is not None:
            resolved.target = self._entry(sample["target"], task, "target", read_image)
        if task == "rate_explain" and resolved.target is None:
            raise ValueError("Task 'rate_explain' needs a `target`: the item to rate (without rating at inference).")
        target = resolved.target
        if task == "generate_image" and target is not None and not target.image_code_tokens:
            raise ValueError(f"Item {target.item_id!r}: field `image_codes` is needed for a generate_image target.")
        if task == "select":
            self._resolve_selection(sample, resolved, read_image)
        return resolved

    def _resolve_selection(
        self, sample: Mapping[str, Any], resolved: ResolvedSample, read_image: ImageReader | None
    ) -> None:
        candidates = list(sample.get("candidates") or ())
        if not candidates:
            raise ValueError("Task 'select' needs `candidates`.")
        if len(candidates) > self.num_slots:
            raise ValueError(
                f"`candidates` has {len(candidates)} items, but this processor selects among at most "
                f"{self.num_slots} (num_slots={self.num_slots})."
            )
        resolved.candidates = [self._entry(raw, "select", "candidates", read_image) for raw in candidates]
        resolved.slot_tokens = [slot_token(index) for index in range(len(candidates))]
        ids = [entry.item_id for entry in resolved.candidates]
        duplicates = sorted({item_id for item_id in ids if ids.count(item_id) > 1})
        if duplicates:
            raise ValueError(f"`candidates` lists item(s) {duplicates} more than once.")
        if sample.get("answer") is not None:
            missing = [item_id for item_id in sample["answer"] if item_id not in ids]
            if missing:
                raise ValueError(f"Item {missing[0]!r} in `answer` is not one of the `candidates`.")
            chosen = set(sample["answer"])
            resolved.answer_slots = [slot for slot, item_id in zip(resolved.slot_tokens, ids) if item_id in chosen]

    # ----------------------------------------------------------------- encoding
    def _tokenize(self, chunks: Sequence[Chunk]) -> list[_Tokenized]:
        """Tokenize all text segments in one call; text never turns into added tokens."""
        texts = [segment.text for chunk in chunks for segment in chunk.segments if not segment.token]
        encoded = iter(
            self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
        )
        tokenized = []
        for chunk in chunks:
            ids, kinds = [], []
            for segment in chunk.segments:
                if chunk.answer_turn and segment.token and segment.text == ANSWER_TOKEN:
                    ids += self._turn_ids
                    kinds += [CONTEXT] * len(self._turn_ids)
                piece = [self.tokenizer.convert_tokens_to_ids(segment.text)] if segment.token else next(encoded)
                ids += piece
                kinds += [segment.kind] * len(piece)
            tokenized.append(_Tokenized(ids, kinds, chunk.image, chunk.item_id))
        return tokenized

    def _truncate(self, history: list[_Tokenized], budget: int) -> list[_Tokenized]:
        """Keep the most recent whole chunks within `max_history_items` and a token `budget`."""
        if budget < 0:
            length = self.max_length - budget
            raise ValueError(f"The prompt without history is {length} tokens, over max_length={self.max_length}.")
        kept = history[-self.max_history_items :]
        total = sum(len(chunk.ids) for chunk in kept)
        while kept and total > budget:
            total -= len(kept[0].ids)
            kept = kept[1:]
        if not kept:
            raise ValueError(f"Not even the latest history item fits in max_length={self.max_length}.")
        return kept

    def encode(
        self, sample: Mapping[str, Any], task: str | None = None, read_image: ImageReader | None = None
    ) -> dict[str, Any]:
        """Render and tokenize one sample (unpadded lists, RGB images in `<image>` order); `read_image` (see
        `ImageReader`) reads the images the sample gives inline."""
        resolved = self.resolve(sample, task, read_image)
        layout: Layout = TEMPLATES[resolved.task](resolved)
        tail = self._tokenize(layout.tail)
        eos = [self.tokenizer.eos_token_id] if layout.has_target and self.tokenizer.eos_token_id is not None else []
        fixed = len(self.opening_ids) + sum(len(chunk.ids) for chunk in tail) + len(eos)
        chunks = self._truncate(self._tokenize(layout.history), self.max_length - fixed) + tail
        input_ids = self.opening_ids + [i for chunk in chunks for i in chunk.ids] + eos
        token_kinds = [0] * len(self.opening_ids) + [k for chunk in chunks for k in chunk.kinds] + [1] * len(eos)
        return {
            "input_ids": input_ids,
            "token_kinds": token_kinds,
            "labels": [i if kind else -100 for i, kind in zip(input_ids, token_kinds)],
            "images": [load_rgb_image(chunk.image, chunk.item_id) for chunk in chunks if chunk.image is not None],
            "task_id": TASKS.index(resolved.task),
        }

    def encode_history_chunks(
        self, history: Sequence[Any], history_ids: str | None = None, task: str = "recommend"
    ) -> list[dict[str, Any]]:
        """Each history item as one tokenized chunk, as `task`'s template renders it (no truncation).

        Returns per item `{"input_ids", "token_kinds", "images", "item_id"}`; concatenated after `opening_ids` they are
        the history part of `encode`'s sequence for `task` ("recommend", or "rate_explain": each chunk then carries its
        interaction's rating and explanation). `history_ids` overrides the processor's layout. Used to pack whole
        user histories into training sequences (`processing_unimp.training.packing`).
        """
        layout = self.history_ids if history_ids is None else history_ids
        if layout not in HISTORY_IDS:
            raise ValueError(f"history_ids must be one of {HISTORY_IDS}, got {layout!r}.")
        parts = {"recommend": item_part, "rate_explain": rating_part}
        if task not in parts:
            raise ValueError(f"encode_history_chunks renders 'recommend' or 'rate_explain' chunks, not {task!r}.")
        chunks = [history_chunk(entry, parts[task], layout) for entry in self._history(history, task)]
        return [
            {"input_ids": chunk.ids, "token_kinds": chunk.kinds, "item_id": chunk.item_id,
             "images": [] if chunk.image is None else [load_rgb_image(chunk.image, chunk.item_id)]}
            for chunk in self._tokenize(chunks)
        ]

    def pad(self, encodings: Sequence[Mapping[str, Any]], padding_side: str | None = None) -> BatchFeature:
        """Collate `encode` outputs into padded tensors (see docs/CONTRACTS.md for keys and shapes)."""
        side = padding_side or self.tokenizer.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}.")
        length = max(len(encoding["input_ids"]) for encoding in encodings)

        def padded(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
            batch = torch.full((len(rows), length), value, dtype=torch.long)
            for index, row in enumerate(rows):
                start = length - len(row) if side == "left" else 0
                batch[index, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
            return batch

        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self.tokenizer.eos_token_id or 0)
        data = {
            "input_ids": padded([encoding["input_ids"] for encoding in encodings], pad_id),
            "attention_mask": padded([[1] * len(encoding["input_ids"]) for encoding in encodings], 0),
            "labels": padded([encoding["labels"] for encoding in encodings], -100),
            "token_kinds": padded([encoding["token_kinds"] for encoding in encodings], 0),
            "task_ids": torch.tensor([encoding["task_id"] for encoding in encodings], dtype=torch.long),
        }
        data.update(self._pixel_values([encoding["images"] for encoding in encodings]))
        return BatchFeature(data)

    def _pixel_values(self, images: Sequence[Sequence[Image.Image]]) -> dict[str, torch.Tensor]:
        """`pixel_values` (B, N, 3, H, W) padded to the largest image count, and `image_mask` (B, N)."""
        flat = [image for row in images for image in row]
        # With no image in the batch, a blank one still gives the (3, H, W) shape of the empty tensor.
        processed = self.image_processor(flat or [Image.new("RGB", (1, 1))], return_tensors="pt")["pixel_values"]
        most = max(len(row) for row in images)
        pixel_values = processed.new_zeros((len(images), most, *processed.shape[1:]))
        image_mask = torch.zeros((len(images), most), dtype=torch.bool)
        start = 0
        for row, row_images in enumerate(images):
            pixel_values[row, : len(row_images)] = processed[start : start + len(row_images)]
            image_mask[row, : len(row_images)] = True
            start += len(row_images)
        return {"pixel_values": pixel_values, "image_mask": image_mask}

    def __call__(
        self,
        samples: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        task: str | None = None,
        padding_side: str | None = None,
    ) -> BatchFeature:
        """Encode and collate task samples into what the model takes (`model(**processor(samples))`), with `labels`.

        `task` is used for samples without a `"task"` key; `padding_side` defaults to the tokenizer's. The loss-only
        fields `token_kinds` and `task_ids` (read by `UniMPTrainer`) come from `pad([encode(sample), ...])`.
        """
        samples = [samples] if isinstance(samples, Mapping) else list(samples)
        batch = self.pad([self.encode(sample, task) for sample in samples], padding_side)
        return BatchFeature({k: v for k, v in batch.items() if k not in LOSS_FIELDS})

    def render(self, sample: Mapping[str, Any], task: str | None = None) -> str:
        """The sample's token sequence as text, to read what the model sees."""
        return self.tokenizer.decode(self.encode(sample, task)["input_ids"])

    # ----------------------------------------------------------------- decoding
    def rank_items(
        self, logits: torch.Tensor, top_k: int | None = 10, exclude: Sequence[Iterable[str]] | None = None,
        queries: Sequence[str | None] | None = None,
    ) -> list[list[str]]:
        """Item ids ranked by their token's logit at the `<answer>` position.

        `logits` is (B, vocab) or (vocab,); `exclude` gives per row the item ids to leave out (e.g. seen items);
        with `queries` (search) the items holding more of a row's query words rank first (`query_tiers`).
        """
        return [[item_id for item_id, _ in row] for row in self.scored_items(logits, top_k, exclude, queries)]

    def scored_items(
        self, logits: torch.Tensor, top_k: int | None = 10, exclude: Sequence[Iterable[str]] | None = None,
        queries: Sequence[str | None] | None = None,
    ) -> list[list[tuple[str, float]]]:
        """`rank_items` with each item's probability among all items: per row `(item_id, probability)`, best first."""
        positions = [[self._item_index[i] for i in item_ids if i in self._item_index] for item_ids in exclude or ()]
        tiers = None if queries is None else self.query_tiers(queries)
        ranked = rank_tokens(logits.detach(), self.item_token_ids, top_k, positions, tiers)
        return [[(self.item_ids[position], score) for position, score in row] for row in ranked]

    def query_tiers(self, queries: Sequence[str | None]) -> torch.Tensor:
        """`(B, num_items)`, in item-token order: how many of each query's words an item's title and categories
        hold. Search ranks by it first and by the model within it, a keyword match then the personalized order,
        as a shop's search narrows and ranks (zeros for no query)."""
        tiers = torch.zeros(len(queries), len(self.item_ids))
        for row, query in enumerate(queries):
            counts = self.catalogue.query_word_counts(query) if self.catalogue is not None and query else {}
            hits = [(self._item_index[i], count) for i, count in counts.items() if i in self._item_index]
            if hits:
                columns, values = zip(*hits)
                tiers[row, list(columns)] = torch.tensor(values, dtype=tiers.dtype)
        return tiers

    def rating_distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """Probability of each of `rating_values`: the softmax over the rating tokens' logits (..., vocab)."""
        return logits[..., self.rating_token_ids].float().softmax(dim=-1)

    def expected_rating(self, logits: torch.Tensor) -> torch.Tensor:
        """Expected rating under `rating_distribution` (..., vocab) -> (...)."""
        probabilities = self.rating_distribution(logits)
        return probabilities @ torch.tensor(self.rating_values, dtype=probabilities.dtype)

    def decode_explanation(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """The explanation in generated ids: the text after the rating token (if any), up to end of sequence."""
        ids = [int(i) for i in token_ids]
        ratings = set(self.rating_token_ids)
        start = next((position + 1 for position, i in enumerate(ids) if i in ratings), 0)
        stop = {self.tokenizer.eos_token_id, self.end_of_chunk_token_id}
        end = next((position for position in range(start, len(ids)) if ids[position] in stop), len(ids))
        return self.tokenizer.decode(ids[start:end], skip_special_tokens=True).strip()

    def decode_image_codes(
        self, token_ids: Sequence[int] | torch.Tensor, grid_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The image codes among generated ids as a (height, width) grid; square unless `grid_size` says."""
        codes = [self._image_code_of[int(i)] for i in token_ids if int(i) in self._image_code_of]
        height, width = grid_size or (math.isqrt(len(codes)), math.isqrt(len(codes)))
        if height * width != len(codes) or not codes:
            raise ValueError(f"Got {len(codes)} image codes, which do not fill a {height}x{width} grid.")
        return torch.tensor(codes, dtype=torch.long).reshape(height, width)

    # ----------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        """The processor config without the catalogue, which is saved as its own file."""
        output = super().to_dict()
        output.pop("catalogue", None)
        return output

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> list[str]:
        """Save the processor files, its code (for `trust_remote_code`) and the catalogue."""
        files = super().save_pretrained(save_directory, **kwargs)
        if self.catalogue is not None:
            files.append(self.catalogue.save(save_directory))
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> UniMPProcessor:
        """Load a saved processor, with its catalogue when the folder has one."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        path = cached_file(
            pretrained_model_name_or_path, CATALOGUE_FILE, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if path is not None:
            processor.catalogue = ItemCatalogue.load(path)
        return processor


UniMPProcessor.register_for_auto_class("AutoProcessor")
