"""The task templates: one function per task turns a resolved sample into chunks of text and tokens.

The same function renders a sample for training (with its target) and for inference (target absent: the
sequence then ends at `<answer>`). Templates know nothing about a tokenizer: they emit text segments and
added-token segments, each with a token kind, and the processor tokenizes and truncates them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .vocabulary_unimp import ANSWER_TOKEN, END_OF_CHUNK_TOKEN, IMAGE_TOKEN

CONTEXT, TARGET, RECONSTRUCTION = 0, 1, 2
"""Token kinds: unsupervised context, the final answer, and the history items' own supervised parts."""

HISTORY_IDS = ("after", "before")
"""Where a history chunk puts its item id (recommend, search, select).

`"after"` (the original template): `<image>? text <answer> <item_k> <|endofchunk|>`: the id follows the item's own
content, so supervising it teaches *identification* (content -> id). `"before"`: `<answer> <item_k> <image>? text
<|endofchunk|>`: the `<answer>` opening chunk j sees only chunks < j, so every history id is a *next-item* target
(what SASRec trains on), and recommend's prompt is just the `<answer>` after the last chunk, as in packed training.
"""

RECOMMEND_PROMPT = "What is the next item recommended to the user?"
SEARCH_PROMPT = "Query: {query} What is the related item to the query based on the history?"
RATE_EXPLAIN_PROMPT = "What is the rating and explanation for the item?"
SELECT_HEADER = "Select from:"
SELECT_PROMPT = "Which of these items will the user choose?"
GENERATE_IMAGE_PROMPT = "Query: {query} What does the item the user wants look like?"
TEMPLATE_TEXTS = tuple(
    prompt.replace("{query} ", "")
    for prompt in (RECOMMEND_PROMPT, SEARCH_PROMPT, RATE_EXPLAIN_PROMPT, SELECT_HEADER, SELECT_PROMPT,
                   GENERATE_IMAGE_PROMPT)
)
"""The fixed words of every template, for a tokenizer trained from scratch to learn as whole tokens."""


@dataclass
class Segment:
    """A piece of a chunk: plain text to tokenize, or one added token (`token=True`)."""

    text: str
    kind: int = CONTEXT
    token: bool = False


@dataclass
class Chunk:
    """Segments that are kept or dropped together; `image` is the picture its `<image>` token stands for.

    `answer_turn` marks a question: a chat template's turn change (the end of the user's message and the assistant's
    header) goes before its `<answer>`, so an instruction-tuned LM reads the answer as its own reply.
    """

    segments: list[Segment]
    image: Any = None
    item_id: str | None = None
    answer_turn: bool = False


@dataclass
class Entry:
    """One item of a sample as the templates print it (attributes already capped and formatted)."""

    item_id: str
    item_token: str
    text: str = ""
    image: Any = None
    rating_token: str | None = None
    explanation: str | None = None
    image_code_tokens: list[str] | None = None


@dataclass
class ResolvedSample:
    """A task sample whose item ids are resolved to entries; `target`/`answer_slots` are None at inference."""

    task: str
    history: list[Entry]
    target: Entry | None = None
    query: str | None = None
    candidates: list[Entry] = field(default_factory=list)
    slot_tokens: list[str] = field(default_factory=list)
    answer_slots: list[str] | None = None
    history_ids: str = "after"


@dataclass
class Layout:
    """A rendered sample: history chunks (dropped oldest first when too long) and a tail kept whole."""

    history: list[Chunk]
    tail: list[Chunk]
    has_target: bool


def _token(text: str, kind: int = CONTEXT) -> Segment:
    return Segment(text, kind, token=True)


def item_chunk(entry: Entry, supervised: Sequence[Segment] = (), lead: Sequence[Segment] = (),
               show_id: bool = True, open_answer: bool = False) -> Chunk:
    """`<image>`? + lead + `<item_k>`? + attribute text + (`<answer>` + supervised part)? + `<|endofchunk|>`.

    The item token is shown (as input) unless it is the answer (`show_id=False`): it carries the item's row, the
    only thing that names the item when its chunk has no text (compact chunks, `item_fields=""`). `open_answer`
    always writes `<answer>` and leaves the chunk open after the supervised part (a prompt's last chunk).
    """
    segments = [_token(IMAGE_TOKEN)] if entry.image is not None else []
    segments += lead
    if show_id:
        segments.append(_token(entry.item_token))
    if entry.text:
        segments.append(Segment(entry.text))
    if supervised or open_answer:
        segments += [_token(ANSWER_TOKEN), *supervised]
    if not open_answer:
        segments.append(_token(END_OF_CHUNK_TOKEN))
    return Chunk(segments, image=entry.image, item_id=entry.item_id)


def next_item_chunk(entry: Entry, kind: int = RECONSTRUCTION) -> Chunk:
    """`<answer>` + `<item_k>` + `<image>`? + attribute text + `<|endofchunk|>`: the id is predicted before the
    item's content is seen (the `"before"` layout of `HISTORY_IDS`)."""
    segments = [_token(ANSWER_TOKEN), _token(entry.item_token, kind)]
    segments += [_token(IMAGE_TOKEN)] if entry.image is not None else []
    if entry.text:
        segments.append(Segment(entry.text))
    segments.append(_token(END_OF_CHUNK_TOKEN))
    return Chunk(segments, image=entry.image, item_id=entry.item_id)


def history_chunk(entry: Entry, part: Callable[[Entry, int], list[Segment]], history_ids: str = "after") -> Chunk:
    """One history item: its id before its content (`history_ids="before"`, item-id parts only) or after it; with
    any other part (rating, image codes) the id is shown as input next to the content."""
    if history_ids == "before" and part is item_part:
        return next_item_chunk(entry)
    return item_chunk(entry, part(entry, RECONSTRUCTION), show_id=part is not item_part)


def prompt_chunk(text: str, answer: Sequence[Segment]) -> Chunk:
    """The task instruction, `<answer>`, and the answer when training."""
    return Chunk([Segment(text), _token(ANSWER_TOKEN), *answer], answer_turn=True)


def item_part(entry: Entry, kind: int) -> list[Segment]:
    """The supervised part of an item for recommend, search and select: its item token."""
    return [_token(entry.item_token, kind)]


def rating_part(entry: Entry, kind: int) -> list[Segment]:
    """The supervised part for rate_explain: `<rating_r>`? + explanation?."""
    part = [_token(entry.rating_token, kind)] if entry.rating_token else []
    return part + ([Segment(entry.explanation, kind)] if entry.explanation else [])


def image_code_part(entry: Entry, kind: int) -> list[Segment]:
    """The supervised part for generate_image: the item's image-code tokens."""
    return [_token(code, kind) for code in entry.image_code_tokens or ()]


def _history(sample: ResolvedSample, part: Callable[[Entry, int], list[Segment]]) -> list[Chunk]:
    return [history_chunk(entry, part, sample.history_ids) for entry in sample.history]


def _answer(sample: ResolvedSample, part: Callable[[Entry, int], list[Segment]]) -> list[Segment]:
    return part(sample.target, TARGET) if sample.target is not None else []


def recommend(sample: ResolvedSample) -> Layout:
    """History chunks ending `<answer> <item_k>`; "What is the next item ...? <answer>" -> `<item_k>`.

    With `history_ids="before"` every chunk opens with `<answer> <item_k>` and the prompt is that same opening for
    the next item: `<answer>` -> `<item_k>`, exactly the position every history id is trained at.
    """
    answer = _answer(sample, item_part)
    if sample.history_ids == "before":
        return Layout(_history(sample, item_part), [Chunk([_token(ANSWER_TOKEN), *answer])], bool(answer))
    return Layout(_history(sample, item_part), [prompt_chunk(RECOMMEND_PROMPT, answer)], bool(answer))


def search(sample: ResolvedSample) -> Layout:
    """Recommend's history; "Query: q What is the related item ...? <answer>" -> `<item_k>`."""
    answer = _answer(sample, item_part)
    prompt = prompt_chunk(SEARCH_PROMPT.format(query=sample.query), answer)
    return Layout(_history(sample, item_part), [prompt], bool(answer))


def rate_explain(sample: ResolvedSample) -> Layout:
    """History chunks ending `<answer> <rating_r> explanation`; the target item's chunk; the question.

    With `history_ids="before"` the target's chunk is left open at its `<answer>` instead of a question: the
    position every history rating is trained at, as packed rating sequences train it (`packed_ratings`). Its
    `<answer>` still opens the assistant's turn under a chat template: the explanation is generated text.
    """
    answer = _answer(sample, rating_part)
    if sample.history_ids == "before":
        target = item_chunk(sample.target, answer, open_answer=True)
        target.answer_turn = True
        return Layout(_history(sample, rating_part), [target], bool(answer))
    tail = [item_chunk(sample.target), prompt_chunk(RATE_EXPLAIN_PROMPT, answer)]
    return Layout(_history(sample, rating_part), tail, bool(answer))


def select(sample: ResolvedSample) -> Layout:
    """History; "Select from:" and one chunk per candidate led by its slot token; the answer is slot tokens."""
    answer = [_token(slot, TARGET) for slot in sample.answer_slots or ()]
    candidates = [
        item_chunk(entry, lead=[_token(slot)]) for entry, slot in zip(sample.candidates, sample.slot_tokens)
    ]
    tail = [Chunk([Segment(SELECT_HEADER)]), *candidates, prompt_chunk(SELECT_PROMPT, answer)]
    return Layout(_history(sample, item_part), tail, bool(answer))


def generate_image(sample: ResolvedSample) -> Layout:
    """History chunks ending `<answer>` + their image codes; "Query: q ...? <answer>" -> the target's codes."""
    answer = _answer(sample, image_code_part)
    prompt = prompt_chunk(GENERATE_IMAGE_PROMPT.format(query=sample.query), answer)
    return Layout(_history(sample, image_code_part), [prompt], bool(answer))


TEMPLATES: dict[str, Callable[[ResolvedSample], Layout]] = {
    "recommend": recommend,
    "search": search,
    "rate_explain": rate_explain,
    "select": select,
    "generate_image": generate_image,
}
