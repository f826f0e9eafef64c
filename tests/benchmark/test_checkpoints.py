"""The shipped checkpoints (`examples/checkpoints/`): each still ranks its first test users as recorded when
`examples/train_checkpoints.py` made it, and the README's first contact — the fashion-shop checkpoint through
`pipeline("personalization")` as remote code, in a process where the packages cannot be imported — answers every
task."""

from pathlib import Path

import pytest

from processing_unimp import UniMPProcessor
from processing_unimp.benchmark.checkpoints import (
    CHECKPOINT_RECIPES,
    check_figures,
    checkpoint_name,
    load_checkpoint,
    recorded_results,
)
from processing_unimp.data.builders import load_unimp_dataset
from processing_unimp.export import hub as export_hub
from processing_unimp.generation_unimp import EXPLANATION_MAX_NEW_TOKENS

CHECKPOINTS = Path(__file__).resolve().parents[2] / "examples" / "checkpoints"


@pytest.mark.parametrize("dataset", list(CHECKPOINT_RECIPES))
def test_checkpoint_carries_the_current_shipped_code(dataset):
    folder = CHECKPOINTS / checkpoint_name(dataset)
    stale = [path.name for path in export_hub.code_files() if (folder / path.name).read_bytes() != path.read_bytes()]
    assert not stale, f"{stale} changed since {folder.name} was exported: python examples/train_checkpoints.py " \
                      "--refresh-code"


@pytest.mark.parametrize("dataset", list(CHECKPOINT_RECIPES))
def test_checkpoint_ranks_its_first_test_users_as_recorded(dataset):
    recorded = recorded_results(CHECKPOINTS, dataset)
    model, processor = load_checkpoint(CHECKPOINTS / checkpoint_name(dataset))
    figures = check_figures(model, processor, load_unimp_dataset(dataset), recorded["check"]["users"])
    # one user's target moving by one rank changes NDCG@10 by < 0.004: float order (thread count) may do that
    assert figures["NDCG@10"] == pytest.approx(recorded["check"]["NDCG@10"], abs=0.005)
    assert recorded["models"]["unimp"]["NDCG@10"] > 0


def test_first_contact_answers_every_task_as_remote_code(run_isolated):
    answers = run_isolated(
        """
        import json, sys
        from transformers import pipeline
        pipe = pipeline("personalization", model=sys.argv[1], trust_remote_code=True)
        history = ["fm00020", {"item_id": "fm00089", "rating": 5.0}, "fm00094"]
        explained = pipe(history=history, task="rate_explain", target="fm00116")
        print(json.dumps({
            "recommend": [r["item_id"] for r in pipe(history=history, task="recommend", top_k=5)],
            "search": [r["item_id"] for r in pipe(history=history, task="search", query="dark knit", top_k=5)],
            "rating": explained["rating"], "explanation": explained["explanation"],
            "select": [r["item_id"] for r in pipe(history=history, task="select",
                                                  candidates=["fm00165", "fm00188", "fm00226"])],
            "images": [image.size for image in pipe(history=history, task="generate_image", query="sneaker",
                                                    num_images=2, seed=0)],
        }))
        """,
        str(CHECKPOINTS / checkpoint_name("fashion-shop")),
    )
    assert len(answers["recommend"]) == len(set(answers["recommend"])) == 5
    assert len(answers["search"]) == 5 and 1 <= answers["rating"] <= 5
    words = answers["explanation"].split()
    assert words and len(set(words)) > len(words) / 2  # an explanation, not a loop
    assert answers["explanation"].rstrip().endswith((".", "!", "?")), answers["explanation"]  # whole, not cut off
    assert answers["select"] and set(answers["select"]) <= {"fm00165", "fm00188", "fm00226"}
    assert len(answers["images"]) == 2


def test_the_default_explanation_cap_holds_every_bundled_explanation():
    processor = UniMPProcessor.from_pretrained(CHECKPOINTS / checkpoint_name("fashion-shop"))
    explanations = [text for text in load_unimp_dataset("fashion-shop")["interactions"]["explanation"] if text]
    longest = max(len(ids) for ids in processor.tokenizer(explanations, add_special_tokens=False)["input_ids"])
    assert longest < EXPLANATION_MAX_NEW_TOKENS  # room for the end-of-text token
