"""`PersonalizationPipeline`, the "personalization" task: a user's history in, catalogue items out.

    pipe = pipeline("personalization", model="org/unimp-model", trust_remote_code=True)
    pipe(history=["B01", "B07"], task="recommend", top_k=10)

One-token answers are ranked exactly from one forward pass to `<answer>` (every item, rating or selection slot
scored at once); answers that span several tokens (a set of selected candidates) are decoded by beam search under
a `TrieLogitsProcessor`, so that only valid answers can come out. Results are catalogue items, never token strings.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList, Pipeline
from transformers.utils import cached_file

from .content_unimp import add_items
from .generation_unimp import (
    EXPLANATION_MAX_NEW_TOKENS,
    NUM_RETRIEVED,
    check_copy_weight,
    check_temperature,
    generate_from_context,
)
from .image_inputs_unimp import MAX_IMAGE_BYTES, ImagePolicy, enable_decompression_bomb_guard
from .image_processing_unimp import MAX_IMAGE_PIXELS
from .ranking_unimp import TokenTrie, TrieLogitsProcessor, answer_sequences
from .schema_unimp import INTERACTION_FIELDS, check_task, item_id_of

REQUEST_FIELDS = ("history", "task", "query", "target", "candidates")
"""Keys of a request dict; `task`, `query`, `target` and `candidates` override the call's keyword arguments."""


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a positive integer, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")
    return value


def _slot_subsets(slot_ids: Sequence[int]) -> list[tuple[int, ...]]:
    """Every valid selection answer: a non-empty set of candidate slots, in slot order (as the templates write it)."""
    return [subset for size in range(1, len(slot_ids) + 1) for subset in itertools.combinations(slot_ids, size)]


class PersonalizationPipeline(Pipeline):
    r"""Recommend, search, rate and explain, select, or generate images for a user, from their item history.

    Call forms (`history` is a list of catalogue item ids, or of item dicts with an `item_id` whose other fields,
    e.g. an `image`, override the catalogue's):

        pipe(history=["B01", "B07"], task="recommend", top_k=10, exclude_seen=False)
        pipe({"history": [...], "query": "trail shoes"}, task="search")
        pipe([{"history": [...]}, {"history": [...], "task": "select", "candidates": [...]}])   # a batch

    Tasks and outputs:
        - `recommend`, `search` (needs `query`): a list of `{"item_id", "score", "title"}`, best first; `score` is
          the item's probability among all catalogue items. `top_k` (default 10) items; `exclude_seen=True` leaves
          out the history's items.
        - `rate_explain` (needs `target`): `{"item_id", "title", "rating", "rating_distribution", "explanation"}`;
          `rating` is the expected rating, `rating_distribution` maps each rating value to its probability, and the
          explanation is generated greedily (up to `max_new_tokens`, default 64) after the most likely rating.
        - `select` (needs `candidates`): the selected candidates as `{"item_id", "score", "title"}`, best first;
          `score` is the candidate's probability among the candidates. With `num_selected=k` the `k` best are
          taken; by default the model decides how many, by trie-constrained beam search (`num_beams`).
        - `generate_image` (needs `query`): a list of `num_images` (default 1) PIL images, sampled (`seed` makes
          them repeatable; `temperature` and `copy_weight` as in `generation_unimp.generate_item_images`) and
          decoded by the model's VQ image tokenizer, after retrieving the items that match.

    A batch (a list of request dicts, or `history=` a list of histories) returns one output per request; a request
    that is invalid gives `{"error": message, "error_type": name}` in its place while the others still run. A single
    invalid request raises a `ValueError` or `TypeError` that names the field and the item.

    Images in requests (see `image_inputs_unimp`): a PIL image, bytes, base64 or a data URL always; a file path
    while `allow_image_paths=True` (the default, for the pipeline's own user); an http(s) URL only with
    `allow_image_urls=True`, and never from a loopback, private or link-local address. A server for remote
    callers (`handler.py`, the Space) passes `allow_image_paths=False`: then a path or URL is refused with a
    message that echoes neither, and PIL's decompression-bomb guard is turned on for the process. Every image is
    at most `max_image_bytes` inline; a remote caller's image of more than `max_image_pixels` is refused from its
    header, the pipeline's own user's (a 12-48 MP photo) is downscaled to that many pixels and used. An image is
    read once its item id is known to the processor.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(
        self,
        *args: Any,
        image_tokenizer: Any = None,
        allow_image_paths: bool = True,
        allow_image_urls: bool = False,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        **kwargs: Any,
    ):
        self._image_tokenizer = image_tokenizer
        self.image_policy = ImagePolicy(allow_image_paths, allow_image_urls, max_image_bytes, max_image_pixels)
        if not allow_image_paths:
            enable_decompression_bomb_guard(max_image_pixels)
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError("PersonalizationPipeline needs the model's UniMP processor (`processor=`).")

    # ----------------------------------------------------------------- parameters
    def _sanitize_parameters(
        self,
        task: str | None = None,
        query: str | None = None,
        target: str | Mapping[str, Any] | None = None,
        candidates: Sequence[str | Mapping[str, Any]] | None = None,
        top_k: int | None = None,
        exclude_seen: bool | None = None,
        num_selected: int | None = None,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
        num_images: int | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        copy_weight: float | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Check the call's parameters (errors here concern every request) and route them to the three steps."""
        if task is not None:
            check_task(task)
        for name, value in (("top_k", top_k), ("num_selected", num_selected), ("num_beams", num_beams),
                            ("max_new_tokens", max_new_tokens), ("num_images", num_images)):
            if value is not None:
                _positive_int(name, value)
        if exclude_seen is not None and not isinstance(exclude_seen, bool):
            raise TypeError(f"`exclude_seen` must be True or False, got {exclude_seen!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an integer, got {seed!r}.")
        if temperature is not None:
            check_temperature(temperature)
        if copy_weight is not None:
            check_copy_weight(copy_weight)
        preprocess = {"task": task, "query": query, "target": target, "candidates": candidates}
        forward = {"num_selected": num_selected, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
                   "num_images": num_images, "seed": seed, "temperature": temperature, "copy_weight": copy_weight}
        postprocess = {"top_k": top_k, "exclude_seen": exclude_seen, "num_selected": num_selected}
        return tuple({k: v for k, v in params.items() if v is not None}
                     for params in (preprocess, forward, postprocess))

    def __call__(
        self,
        inputs: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        history: Sequence[Any] | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run one request or a batch (see the class docstring for the call forms and outputs)."""
        requests, batched = self._requests(inputs, history)
        preprocess_params, forward_params, postprocess_params = (
            {**defaults, **given} for defaults, given in zip(
                (self._preprocess_params, self._forward_params, self._postprocess_params),
                self._sanitize_parameters(**kwargs),
            )
        )
        batch_size = _positive_int("batch_size", batch_size if batch_size is not None else self._batch_size or 1)
        results: list[Any] = [None] * len(requests)
        by_task: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, request in enumerate(requests):
            try:
                prepared = self.preprocess(request, **preprocess_params)
            except (ValueError, KeyError, TypeError) as error:
                if not batched:
                    raise
                results[index] = {"error": f"Request {index}: {error}", "error_type": type(error).__name__}
                continue
            by_task.setdefault(prepared["task"], []).append((index, prepared))
        for task, prepared in by_task.items():
            for start in range(0, len(prepared), batch_size):
                chunk = prepared[start : start + batch_size]
                outputs = self.forward(self._collate(task, [item for _, item in chunk]), **forward_params)
                for (index, _), result in zip(chunk, self.postprocess(outputs, **postprocess_params)):
                    results[index] = result
        return results if batched else results[0]

    @staticmethod
    def _requests(inputs: Any, history: Sequence[Any] | None) -> tuple[list[Any], bool]:
        """The call's requests and whether they form a batch."""
        if history is not None:
            if inputs is not None:
                raise ValueError("Give the history either as the first argument or as `history=`, not both.")
            if isinstance(history, (list, tuple)) and history and all(isinstance(h, (list, tuple)) for h in history):
                return [{"history": h} for h in history], True
            return [{"history": history}], False
        if isinstance(inputs, Mapping):
            return [inputs], False
        if (isinstance(inputs, (list, tuple)) and inputs
                and all(isinstance(i, Mapping) and "history" in i for i in inputs)):
            return list(inputs), True
        if isinstance(inputs, (list, tuple)):
            return [{"history": inputs}], False
        raise TypeError(
            "Call the pipeline with `history=[item ids or item dicts]`, a request dict with a `history`, or a list of "
            f"request dicts; got {type(inputs).__name__}."
        )

    # ----------------------------------------------------------------- preprocessing
    def preprocess(
        self,
        request: Mapping[str, Any],
        task: str = "recommend",
        query: str | None = None,
        target: str | Mapping[str, Any] | None = None,
        candidates: Sequence[Any] | None = None,
    ) -> dict[str, Any]:
        """Check one request and encode it as an inference prompt (ending at `<answer>`): the processor checks its
        item ids, then reads its inline images under `image_policy`. generate_image encodes its search prompt: the
        forward pass retrieves the items it generates from."""
        if not isinstance(request, Mapping):
            raise TypeError(f"A request must be a dict with a `history`, got {type(request).__name__}.")
        unknown = sorted(set(request) - set(REQUEST_FIELDS))
        if unknown:
            raise ValueError(f"Unknown request field(s) {unknown}; a request may have {', '.join(REQUEST_FIELDS)}.")
        task = check_task(request.get("task", task))
        sample: dict[str, Any] = {"task": task, "history": self._item_references(request.get("history"), "history")}
        if task in ("search", "generate_image"):
            sample["query"] = self._query(request.get("query", query), task)
        if task == "rate_explain":
            sample["target"] = self._target(request.get("target", target))
        if task == "select":
            sample["candidates"] = self._candidates(request.get("candidates", candidates))
        prompt = sample
        if task == "generate_image":
            self._load_image_tokenizer()
            prompt = {**sample, "task": "search"}
        encoding = self.processor.encode(prompt, read_image=self.image_policy.read)
        return {"task": task, "sample": sample, "encoding": encoding}

    @staticmethod
    def _item_reference(reference: Any, field: str) -> str | Mapping[str, Any]:
        """One item: an id, or an item dict with a string `item_id`."""
        if isinstance(reference, str):
            return reference
        if not isinstance(reference, Mapping):
            raise TypeError(
                f"Every entry of `{field}` must be an item id (str) or an item dict with `item_id`; "
                f"got {type(reference).__name__} {reference!r}."
            )
        if not isinstance(reference.get("item_id"), str):
            raise TypeError(f"An item dict in `{field}` needs a string `item_id`, got {reference.get('item_id')!r}.")
        return reference

    def _item_references(self, references: Any, field: str) -> list[str | Mapping[str, Any]]:
        if references is None or (isinstance(references, (list, tuple)) and not references):
            raise ValueError(f"`{field}` is empty; give at least one item id or item dict.")
        if not isinstance(references, (list, tuple)):
            raise TypeError(f"`{field}` must be a list of item ids or item dicts, got {type(references).__name__}.")
        return [self._item_reference(reference, field) for reference in references]

    @staticmethod
    def _query(query: Any, task: str) -> str:
        if query is None:
            raise ValueError(f"Task {task!r} needs a `query` (what the user is looking for).")
        if not isinstance(query, str):
            raise TypeError(f"`query` must be a string, got {type(query).__name__}.")
        if not query.strip():
            raise ValueError(f"Task {task!r} needs a non-empty `query`.")
        return query

    def _target(self, target: Any) -> dict[str, Any]:
        """The item to rate, without any rating or explanation (those are what the model predicts)."""
        if target is None:
            raise ValueError("Task 'rate_explain' needs a `target`: the item id (or item dict) to rate.")
        reference = self._item_reference(target, "target")
        reference = {"item_id": reference} if isinstance(reference, str) else reference
        return {key: value for key, value in reference.items() if key not in INTERACTION_FIELDS}

    def _candidates(self, candidates: Any) -> list[str | Mapping[str, Any]]:
        if candidates is None:
            raise ValueError("Task 'select' needs `candidates`: the item ids (or item dicts) to select from.")
        return self._item_references(candidates, "candidates")

    def _collate(self, task: str, prepared: list[dict[str, Any]]) -> dict[str, Any]:
        """Left-padded model inputs of a batch of one task, with the samples for postprocessing."""
        inputs = self.processor.pad([item["encoding"] for item in prepared], padding_side="left")
        inputs = {key: inputs[key] for key in ("input_ids", "attention_mask", "pixel_values", "image_mask")}
        return {"task": task, "inputs": inputs, "samples": [item["sample"] for item in prepared]}

    # ----------------------------------------------------------------- model
    def _forward(
        self,
        batch: dict[str, Any],
        num_selected: int | None = None,
        num_beams: int = 4,
        max_new_tokens: int = EXPLANATION_MAX_NEW_TOKENS,
        num_images: int = 1,
        seed: int | None = None,
        **sampling: float,
    ) -> dict[str, Any]:
        """One forward pass to `<answer>`; rate_explain then generates the explanation, select may beam-search, and
        generate_image generates from the items that this (search) pass retrieves."""
        task, samples, inputs = batch["task"], batch["samples"], batch["inputs"]
        output = self.model(**inputs, logits_to_keep=1)
        result = {"task": task, "samples": samples, "logits": output.logits[:, -1].float()}
        if task == "generate_image":
            retrieved = self.processor.rank_items(result["logits"], top_k=NUM_RETRIEVED,
                                                  queries=[sample["query"] for sample in samples])
            result["images"] = [self._generate_images(sample, context[::-1], num_images, seed, **sampling)
                                for sample, context in zip(samples, retrieved)]
        if task == "rate_explain":
            result["generated"] = self._explain(inputs, result["logits"], output.media_latents, max_new_tokens)
        if task == "select" and num_selected is None:
            result["answers"] = self._select(inputs, samples, output.media_latents, num_beams)
        return result

    def _generation_kwargs(self, inputs: dict[str, torch.Tensor], media_latents: torch.Tensor) -> dict[str, Any]:
        """Arguments of every `generate` call: the visual latents of the forward pass are reused, not recomputed."""
        tokenizer = self.processor.tokenizer
        return {
            "attention_mask": inputs["attention_mask"], "media_latents": media_latents,
            "image_mask": inputs["image_mask"], "do_sample": False, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }

    def _explain(
        self, inputs: dict[str, torch.Tensor], logits: torch.Tensor, media_latents: torch.Tensor, max_new_tokens: int
    ) -> torch.Tensor:
        """Greedy explanation after the most likely rating token; UniMP's added tokens cannot appear in it."""
        rating_ids = torch.tensor(self.processor.rating_token_ids, device=logits.device)
        best = rating_ids[logits[:, rating_ids].argmax(dim=-1)].unsqueeze(1)
        input_ids = torch.cat([inputs["input_ids"], best], dim=1)
        kwargs = self._generation_kwargs(inputs, media_latents)
        kwargs["attention_mask"] = torch.cat([kwargs["attention_mask"], torch.ones_like(best)], dim=1)
        generated = self.model.generate(
            input_ids=input_ids, max_new_tokens=max_new_tokens, num_beams=1, suppress_tokens=self._added_token_ids(),
            **kwargs,
        )
        return generated[:, input_ids.shape[1] :]

    def _added_token_ids(self) -> list[int]:
        processor = self.processor
        return [processor.image_token_id, processor.end_of_chunk_token_id, processor.answer_token_id,
                *processor.item_token_ids, *processor.rating_token_ids, *processor.slot_token_ids,
                *processor.image_code_token_ids]

    def _select(
        self, inputs: dict[str, torch.Tensor], samples: list[dict[str, Any]], media_latents: torch.Tensor,
        num_beams: int,
    ) -> list[list[int]]:
        """The most likely valid set of slots per row, by beam search constrained to non-empty slot subsets."""
        slot_ids = self.processor.slot_token_ids
        tries = [TokenTrie(_slot_subsets(slot_ids[: len(sample["candidates"])])) for sample in samples]
        prompt_length = inputs["input_ids"].shape[1]
        eos = self.processor.tokenizer.eos_token_id
        generated = self.model.generate(
            input_ids=inputs["input_ids"], num_beams=min(num_beams, min(map(len, tries))),
            max_new_tokens=max(trie.max_length for trie in tries) + 1, length_penalty=0.0, early_stopping=True,
            logits_processor=LogitsProcessorList([TrieLogitsProcessor(tries, prompt_length, eos)]),
            **self._generation_kwargs(inputs, media_latents),
        )
        return answer_sequences(generated, prompt_length, eos)

    # ----------------------------------------------------------------- image generation
    def _load_image_tokenizer(self) -> Any:
        """The VQ image tokenizer: given to the pipeline, or the `image_tokenizer/` folder saved with the model."""
        if self._image_tokenizer is None:
            from .image_codes_unimp import IMAGE_TOKENIZER_FOLDER, load_image_tokenizer

            path = self.model.name_or_path
            found = path and cached_file(
                path, "config.json", subfolder=IMAGE_TOKENIZER_FOLDER, _raise_exceptions_for_missing_entries=False
            )
            if not found or not self.processor.codebook_size:
                raise ValueError(
                    f"This model has no image tokenizer (no `{IMAGE_TOKENIZER_FOLDER}/` folder with its weights, or no "
                    "image-code tokens), so it cannot generate images; pass `image_tokenizer=` to the pipeline."
                )
            self._image_tokenizer = load_image_tokenizer(path, subfolder=IMAGE_TOKENIZER_FOLDER)
        return self._image_tokenizer

    def _generate_images(self, sample: dict[str, Any], context: list[str], num_images: int, seed: int | None,
                         **sampling: float) -> list[Any]:
        """PIL images for the query from the retrieved `context` (best last), as `generation_unimp.generate_item_images`
        makes them; `sampling` is its `temperature` and `copy_weight` where the call gives them."""
        return generate_from_context(self.model, self.processor, self._load_image_tokenizer(), context, sample["query"],
                                     num_images=num_images, seed=seed, **sampling)

    # ----------------------------------------------------------------- postprocessing
    def add_items(self, items: Sequence[Mapping[str, Any]]) -> list[str]:
        """Grow the catalogue after training: the items (`item_id`, text fields, optional `image`) get item tokens
        whose rows are computed from their content (a model with `item_rows="content"`); all or nothing. Their
        images are read under the pipeline's image policy (a remote caller's only inline). Save with
        `save_pretrained` to keep them. Returns the added ids."""
        read = [{**item, "image": self.image_policy.read(item["image"], str(item.get("item_id")))}
                if isinstance(item, Mapping) and item.get("image") is not None else item for item in items]
        return add_items(self.model, self.processor, read)

    def _title(self, item_id: str) -> str | None:
        catalogue = self.processor.catalogue
        return catalogue.value(item_id, "title") if catalogue is not None else None

    def _item(self, item_id: str, score: float) -> dict[str, Any]:
        return {"item_id": item_id, "score": score, "title": self._title(item_id)}

    def postprocess(
        self, outputs: dict[str, Any], top_k: int = 10, exclude_seen: bool = False, num_selected: int | None = None
    ) -> list[Any]:
        """One result per request of the batch: catalogue items, a rating with its explanation, or images."""
        task, samples = outputs["task"], outputs["samples"]
        if task == "generate_image":
            return outputs["images"]
        logits = outputs["logits"]
        if task in ("recommend", "search"):
            exclude = [[item_id_of(h) for h in s["history"]] for s in samples] if exclude_seen else None
            queries = [s["query"] for s in samples] if task == "search" else None
            ranked = self.processor.scored_items(logits, top_k, exclude, queries)
            return [[self._item(item_id, score) for item_id, score in row] for row in ranked]
        if task == "rate_explain":
            return [self._rating(row, generated, sample)
                    for row, generated, sample in zip(logits, outputs["generated"], samples)]
        answers = outputs.get("answers") or [None] * len(samples)
        return [self._selection(row, answer, sample, num_selected)
                for row, answer, sample in zip(logits, answers, samples)]

    def _rating(self, logits: torch.Tensor, generated: torch.Tensor, sample: dict[str, Any]) -> dict[str, Any]:
        probabilities = self.processor.rating_distribution(logits).tolist()
        item_id = sample["target"]["item_id"]
        return {
            "item_id": item_id,
            "title": self._title(item_id),
            "rating": float(self.processor.expected_rating(logits)),
            "rating_distribution": dict(zip(self.processor.rating_values, probabilities)),
            "explanation": self.processor.decode_explanation(generated),
        }

    def _selection(
        self, logits: torch.Tensor, answer: list[int] | None, sample: dict[str, Any], num_selected: int | None
    ) -> list[dict[str, Any]]:
        candidates = [item_id_of(c) for c in sample["candidates"]]
        slot_ids = self.processor.slot_token_ids[: len(candidates)]
        probabilities = logits[slot_ids].softmax(dim=-1).tolist()
        if answer is None:
            chosen = sorted(range(len(candidates)), key=lambda i: -probabilities[i])[:num_selected]
        else:
            chosen = sorted((slot_ids.index(token) for token in answer), key=lambda i: -probabilities[i])
        return [self._item(candidates[i], probabilities[i]) for i in chosen]


__all__ = ["PersonalizationPipeline"]
