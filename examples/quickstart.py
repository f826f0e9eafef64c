"""A small end-to-end run of the UniMP model core: build, train a few steps, save, reload, generate.

    python examples/quickstart.py --output-dir runs/quickstart

It uses the `tiny` preset and synthetic histories in which each item's token is predictable from its image, so
that the cross-attention has something to learn. It writes `results.json` to the output directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm.auto import trange

from modeling_unimp import UniMPConfig, UniMPForConditionalGeneration

IMAGE, END, ANSWER = 3, 4, 5
FIRST_ITEM, NUM_ITEMS = 100, 8


def synthetic_batch(config: UniMPConfig, prototypes: torch.Tensor, batch: int, items: int, generator):
    """Histories `<image> <answer> <item_k> <eoc>` where item k's image is a noisy copy of prototype k."""
    picks = torch.randint(NUM_ITEMS, (batch, items), generator=generator)
    rows = [[1] + sum(([IMAGE, ANSWER, FIRST_ITEM + int(k), END] for k in row), []) for row in picks]
    input_ids = torch.tensor(rows)
    pixels = prototypes[picks] + 0.1 * torch.randn(batch, items, *prototypes.shape[1:], generator=generator)
    labels = torch.where(input_ids >= FIRST_ITEM, input_ids, torch.full_like(input_ids, -100))
    return {"input_ids": input_ids, "pixel_values": pixels, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    config = UniMPConfig.from_preset("tiny", image_token_id=IMAGE, end_of_chunk_token_id=END, answer_token_id=ANSWER)
    model = UniMPForConditionalGeneration(config)
    size = config.vision_config.image_size
    prototypes = torch.randn(NUM_ITEMS, 3, size, size, generator=generator)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)

    model.train()
    losses = []
    for _ in (progress := trange(args.steps, desc="training tiny UniMP")):
        loss = model(**synthetic_batch(config, prototypes, 16, 4, generator)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.3f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output_dir / "model")
    model = UniMPForConditionalGeneration.from_pretrained(args.output_dir / "model").eval()

    test = synthetic_batch(config, prototypes, 64, 4, generator)
    with torch.no_grad():
        logits = model(input_ids=test["input_ids"], pixel_values=test["pixel_values"]).logits
    targets = test["labels"][:, 1:]
    predicted = logits[:, :-1].argmax(-1)
    supervised = targets != -100
    accuracy = (predicted == targets)[supervised].float().mean().item()
    prompt = test["input_ids"][:1, :-2]
    generated = model.generate(input_ids=prompt, pixel_values=test["pixel_values"][:1], max_new_tokens=2,
                               do_sample=False, pad_token_id=0)
    results = {
        "first_loss": losses[0],
        "last_loss": sum(losses[-10:]) / 10,
        "item_accuracy_from_image": accuracy,
        "chance_accuracy": 1 / NUM_ITEMS,
        "generated_tail": generated[0, prompt.shape[1]:].tolist(),
        "expected_tail": test["input_ids"][0, -2:].tolist(),
    }
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
