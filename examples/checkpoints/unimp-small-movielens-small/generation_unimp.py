"""Retrieve-then-generate: a picture of the item a user wants, from a UniMP model and its VQ image tokenizer.

Three steps (the paper's user-guided image generation, carried through to pixels):
1. retrieve: the model's own search task ranks the whole catalogue at `<answer>` for the user's history and query
   (exact, one forward pass), and the top items become the context;
2. generate: a generate_image prompt over that context, then exactly one image's number of codes (h * w), with
   every token that is not an image code masked out;
3. decode: the VQ decoder turns the code grid into pixels.
`retrieve=False` generates from the user's own history instead (the no-retrieval baseline).
`copy_weight` > 0 also draws each code from the context items' codes at the same grid position (`ContextCodeMixer`),
so that what retrieval finds shapes the picture directly, not only through attention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from .image_codes_unimp import code_grid_size, decode_image_codes, encode_image_codes
from .schema_unimp import item_id_of

_PROMPT_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_mask")
SAMPLING = {"temperature": 0.5, "copy_weight": 0.25}
"""Retrieve-then-generate's default sampling, chosen on fashion-shop validation users (README, Image generation)."""
NUM_RETRIEVED = 5
"""How many retrieved items make the generate_image prompt's context."""
EXPLANATION_MAX_NEW_TOKENS = 64
"""Length cap of a generated explanation: above the longest bundled one (fashion-shop: median 31 tokens, max 50)."""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}).")
    return float(value)


def check_temperature(temperature: Any) -> float:
    """The code sampling `temperature` as a float; it must be a number above 0."""
    if _number("temperature", temperature) <= 0:
        raise ValueError(f"`temperature` must be above 0, got {temperature}.")
    return float(temperature)


def check_copy_weight(copy_weight: Any) -> float:
    """The copy prior's weight (`ContextCodeMixer`) as a float; it must be a number in [0, 1]."""
    if not 0 <= _number("copy_weight", copy_weight) <= 1:
        raise ValueError(f"`copy_weight` must be in [0, 1], got {copy_weight}.")
    return float(copy_weight)


class ImageCodeLogitsProcessor(LogitsProcessor):
    """Masks every token except the image codes, so that each generated token is one `<img_k>`."""

    def __init__(self, image_code_token_ids: Sequence[int]):
        if not image_code_token_ids:
            raise ValueError("The processor has no image-code tokens (codebook_size=0): it cannot generate images.")
        self.allowed = torch.tensor(sorted(set(image_code_token_ids)), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        mask[:, self.allowed.to(scores.device)] = 0
        return scores + mask


class ContextCodeMixer(LogitsProcessor):
    """A position-aligned copy prior that follows one context item: mixes the model's next-code probabilities with
    the context items' codes at the grid position being generated, each item weighted by how well it explains the
    codes drawn so far (a pointer mixture in the spirit of kNN-LM, with a posterior over which item is copied).

    Item i's own model of a code is q_i = (1 - weight) * p_model + weight * [code is item i's code here]; items
    start equally likely and their weights are the posterior given the drawn prefix, so the picture keeps to one
    item's layout instead of patching positions from several. p = (1 - weight) * p_model + weight * sum_i
    posterior_i * [code is item i's]; rows whose context has no codes keep the model's probabilities. Sampling
    warpers (temperature, top-k) apply to the mixture. Run it after `ImageCodeLogitsProcessor`.
    """

    def __init__(self, context_codes: Sequence[torch.Tensor], code_token_ids: Sequence[int], weight: float,
                 prompt_length: int):
        weight = check_copy_weight(weight)
        items = max((len(codes) for codes in context_codes), default=0)
        num_codes = max((codes.shape[1] for codes in context_codes), default=0)
        self.codes = torch.zeros(len(context_codes), items, num_codes, dtype=torch.long)  # code indices, padded
        self.log_posterior = torch.full((len(context_codes), items), float("-inf"))
        for row, codes in enumerate(context_codes):  # codes: (items, num_codes)
            self.codes[row, : len(codes)] = codes
            self.log_posterior[row, : len(codes)] = 0.0
        self.weight = torch.tensor([weight if len(codes) else 0.0 for codes in context_codes])
        self.code_token_ids = torch.tensor(list(code_token_ids), dtype=torch.long)
        self.prompt_length = prompt_length
        self.previous: torch.Tensor | None = None  # the model's code probabilities at the last step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        if step >= self.codes.shape[2] or not self.codes.shape[1]:
            return scores
        code_ids = self.code_token_ids.to(scores.device)
        probabilities = scores.float().softmax(-1)[:, code_ids].cpu()  # other tokens are masked out already
        weight = self.weight[:, None]
        if self.previous is not None:  # reweigh the items by the code just drawn
            drawn = input_ids[:, -1:].cpu() == self.code_token_ids  # (rows, codebook) one-hot
            model_part = (self.previous * drawn).sum(-1, keepdim=True)
            copied = drawn.gather(1, self.codes[:, :, step - 1]).float()  # (rows, items): item i has that code
            self.log_posterior += ((1 - weight) * model_part + weight * copied).clamp_min(1e-30).log()
        self.previous = probabilities
        posterior = torch.nan_to_num(self.log_posterior.softmax(-1))  # rows without items: all zero
        prior = torch.zeros_like(probabilities).scatter_add_(1, self.codes[:, :, step], posterior)
        mixed = torch.zeros_like(scores, dtype=torch.float32)
        mixed[:, code_ids] = ((1 - weight) * probabilities + weight * prior).to(scores.device)
        return mixed.log().to(scores.dtype)


def context_code_grids(processor, contexts: Sequence[Sequence[Any]], num_codes: int) -> list[torch.Tensor]:
    """Per context, the `(items, num_codes)` image codes of its items that have a grid of that size (inline codes,
    else the catalogue's); codes of another grid cannot be aligned with the generated one and are left out."""
    grids = []
    for context in contexts:
        rows = []
        for reference in context:
            codes = None if isinstance(reference, str) else reference.get("image_codes")
            item_id = item_id_of(reference)
            if codes is None and processor.catalogue is not None and item_id in processor.catalogue:
                codes = processor.catalogue[item_id].get("image_codes")
            if codes is None:
                continue
            codes = torch.as_tensor(codes, dtype=torch.long).flatten()
            if len(codes) == num_codes:
                rows.append(codes)
        grids.append(torch.stack(rows) if rows else torch.zeros(0, num_codes, dtype=torch.long))
    return grids


def _model_inputs(model, processor, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Left-padded prompts (no target) on the model's device."""
    device = next(model.parameters()).device
    batch = processor([{**sample, "target": None} for sample in samples], padding_side="left")
    return {key: batch[key].to(device) for key in _PROMPT_KEYS}


@torch.no_grad()
def retrieve_items(
    model,
    processor,
    histories: Sequence[Sequence[Any]],
    queries: Sequence[str],
    num_retrieved: int = 5,
    batch_size: int = 16,
    exclude: Sequence[Sequence[str]] | None = None,
) -> list[list[str]]:
    """Per user, the `num_retrieved` catalogue items that search ranks highest for the query (items holding more of
    its words first, `processor.query_tiers`), best first.

    `exclude` gives per user item ids to leave out of the ranking.
    """
    model.eval()
    retrieved: list[list[str]] = []
    starts = range(0, len(histories), batch_size)
    for start in tqdm(starts, desc="retrieving items", disable=len(starts) < 2):
        samples = [{"task": "search", "history": history, "query": query} for history, query
                   in zip(histories[start : start + batch_size], queries[start : start + batch_size])]
        logits = model(**_model_inputs(model, processor, samples), logits_to_keep=1).logits[:, -1].float().cpu()
        excluded = None if exclude is None else exclude[start : start + batch_size]
        retrieved += processor.rank_items(logits, top_k=num_retrieved, exclude=excluded,
                                          queries=queries[start : start + batch_size])
    return retrieved


def with_image_codes(processor, image_tokenizer, references: Sequence[Any]) -> list[Any]:
    """History entries, with `image_codes` encoded inline for items that have an image but no codes for it.

    An inline image without inline codes is encoded; otherwise the catalogue's codes (see `add_image_codes`) are
    used, and the catalogue image is encoded only when the catalogue has no codes for the item.
    """
    missing, images = [], []
    for index, reference in enumerate(references):
        inline = {} if isinstance(reference, str) else {k: v for k, v in reference.items() if v is not None}
        item_id = item_id_of(reference)
        stored = (processor.catalogue[item_id] if processor.catalogue is not None and item_id in processor.catalogue
                  else {})
        if "image_codes" in inline:
            continue
        image = inline.get("image")
        if image is None and stored.get("image_codes") is None:
            image = stored.get("image")
        if image is not None:
            missing.append(index)
            images.append(image)
    if not missing:
        return list(references)
    item_ids = [item_id_of(references[index]) for index in missing]
    codes = encode_image_codes(image_tokenizer, images, item_ids=item_ids).tolist()
    completed = list(references)
    for index, item_codes in zip(missing, codes):
        reference = completed[index]
        entry = {"item_id": reference} if isinstance(reference, str) else dict(reference)
        completed[index] = {**entry, "image_codes": item_codes}
    return completed


def check_image_tokenizer(processor, image_tokenizer) -> None:
    """Refuse a VQ image tokenizer whose codebook is not the processor's image-code vocabulary."""
    if processor.codebook_size != image_tokenizer.config.num_vq_embeddings:
        raise ValueError(
            f"The processor has codebook_size={processor.codebook_size} but the image tokenizer has "
            f"num_vq_embeddings={image_tokenizer.config.num_vq_embeddings}; they must match."
        )


@torch.no_grad()
def generate_image_codes(
    model,
    processor,
    contexts: Sequence[Sequence[Any]],
    queries: Sequence[str],
    num_codes: int,
    batch_size: int = 16,
    do_sample: bool = True,
    temperature: float = SAMPLING["temperature"],
    top_k: int | None = None,
    copy_weight: float = SAMPLING["copy_weight"],
    num_images: int = 1,
) -> torch.Tensor:
    """Codes `(len(contexts) * num_images, num_codes)` generated by the generate_image prompt of each (context,
    query), codes only; each prompt is encoded once and sampled `num_images` times (its rows are consecutive).

    `copy_weight` mixes in the context items' codes at each grid position (`ContextCodeMixer`; 0: the model alone).
    `batch_size` counts prompts.
    """
    temperature, copy_weight = check_temperature(temperature), check_copy_weight(copy_weight)
    model.eval()
    only_codes = ImageCodeLogitsProcessor(processor.image_code_token_ids)
    pad = processor.tokenizer.pad_token_id
    pad = pad if pad is not None else processor.tokenizer.eos_token_id
    codes = []
    starts = range(0, len(contexts), batch_size)
    for start in tqdm(starts, desc="generating image codes", disable=len(starts) < 2):
        batch = contexts[start : start + batch_size]
        samples = [{"task": "generate_image", "history": context, "query": query}
                   for context, query in zip(batch, queries[start : start + batch_size])]
        inputs = {key: value.repeat_interleave(num_images, dim=0)
                  for key, value in _model_inputs(model, processor, samples).items()}
        processors = LogitsProcessorList([only_codes])
        if copy_weight:
            grids = [grid for grid in context_code_grids(processor, batch, num_codes) for _ in range(num_images)]
            processors.append(ContextCodeMixer(grids, processor.image_code_token_ids, copy_weight,
                                               inputs["input_ids"].shape[1]))
        sampling = {"temperature": temperature, "top_k": top_k or 0} if do_sample else {}
        generated = model.generate(
            **inputs, max_new_tokens=num_codes, do_sample=do_sample,
            logits_processor=processors, pad_token_id=pad, **sampling,
        )
        new = generated[:, inputs["input_ids"].shape[1] :].cpu()
        codes += [processor.decode_image_codes(row, (1, num_codes)).flatten() for row in new]
    return torch.stack(codes)


def generate_from_context(
    model,
    processor,
    image_tokenizer,
    context: Sequence[Any],
    query: str,
    num_images: int = 1,
    seed: int | None = None,
    **sampling: Any,
) -> list[Image.Image]:
    """`num_images` pictures for `query` from the generate_image prompt over `context` (items, the one nearest the
    prompt last), decoded by the VQ `image_tokenizer`; `sampling` is `generate_image_codes`'s `do_sample`,
    `temperature`, `top_k` and `copy_weight` (defaults: `SAMPLING`), and `seed` makes it repeatable.
    """
    check_image_tokenizer(processor, image_tokenizer)
    if seed is not None:
        torch.manual_seed(seed)
    context = with_image_codes(processor, image_tokenizer, context)
    height, width = code_grid_size(image_tokenizer)
    codes = generate_image_codes(model, processor, [context], [query], height * width, num_images=num_images,
                                 **sampling)
    return decode_image_codes(image_tokenizer, codes, (height, width))


def generate_item_images(
    model,
    processor,
    image_tokenizer,
    history: Sequence[Any],
    query: str,
    num_retrieved: int = NUM_RETRIEVED,
    retrieve: bool = True,
    **generation: Any,
) -> list[Image.Image]:
    """Pictures of the item that the user with this `history` wants for `query` (`generate_from_context`'s
    `num_images`, `seed` and sampling arguments in `generation`).

    With `retrieve` (the default), the context is the `num_retrieved` items that the model's search task finds
    (best last, nearest the prompt); otherwise it is the user's own history.
    """
    check_image_tokenizer(processor, image_tokenizer)  # before the retrieval's forward pass
    context = list(history)
    if retrieve:
        context = retrieve_items(model, processor, [history], [query], num_retrieved)[0][::-1]
    return generate_from_context(model, processor, image_tokenizer, context, query, **generation)


__all__ = [
    "ContextCodeMixer",
    "ImageCodeLogitsProcessor",
    "check_copy_weight",
    "check_image_tokenizer",
    "check_temperature",
    "context_code_grids",
    "generate_from_context",
    "generate_image_codes",
    "generate_item_images",
    "retrieve_items",
    "with_image_codes",
]
