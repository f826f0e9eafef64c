"""Forward/backward throughput of a UniMP preset on this machine, and the speed-up of cached image features.

    python examples/benchmark_speed.py --preset small --output-dir runs/speed

Writes `speed.json` and `speed.md`. Inputs are random token histories of `--items` item chunks, each with one image,
shaped like the bundled datasets' training samples; the numbers measure compute, not quality.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from modeling_unimp import UniMPConfig, UniMPForConditionalGeneration

IMAGE, END, ANSWER = 3, 4, 5


def make_batch(config: UniMPConfig, batch: int, items: int, words: int) -> dict[str, torch.Tensor]:
    """Random histories: per item `<image>` + `words` text tokens + `<answer>` + item token + `<eoc>`."""
    generator = torch.Generator().manual_seed(0)
    vocab = config.text_config.vocab_size
    rows = []
    for _ in range(batch):
        ids = [1]
        for _ in range(items):
            text = torch.randint(16, vocab, (words + 1,), generator=generator).tolist()
            ids += [IMAGE, *text[:-1], ANSWER, text[-1], END]
        rows.append(ids + [ANSWER])
    input_ids = torch.tensor(rows)
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch, items, 3, size, size, generator=generator),
        "labels": input_ids,
    }


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--items", type=int, default=10, help="item chunks (one image each) per sample")
    parser.add_argument("--words", type=int, default=24, help="text tokens per item chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/speed"))
    args = parser.parse_args()

    torch.manual_seed(0)
    config = UniMPConfig.from_preset(
        args.preset, image_token_id=IMAGE, end_of_chunk_token_id=END, answer_token_id=ANSWER, freeze_vision_tower=True
    )
    model = UniMPForConditionalGeneration(config)
    batch = make_batch(config, args.batch_size, args.items, args.words)
    with torch.no_grad():
        features = model.get_image_features(batch["pixel_values"], batch.get("image_mask")).last_hidden_state
    cached = {k: v for k, v in batch.items() if k != "pixel_values"}
    cached["image_features"] = features

    def forward(inputs):
        with torch.no_grad():
            model.eval()(**inputs)

    def train_step(inputs):
        model.train()
        model.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()

    seconds = {
        "forward_pixels": timed(lambda: forward(batch), args.repeats),
        "forward_cached_features": timed(lambda: forward(cached), args.repeats),
        "train_step_pixels": timed(lambda: train_step(batch), args.repeats),
        "train_step_cached_features": timed(lambda: train_step(cached), args.repeats),
    }
    samples = {name: args.batch_size / s for name, s in seconds.items()}
    result = {
        "preset": args.preset,
        "device": f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "sequence_length": batch["input_ids"].shape[1],
        "images_per_sample": args.items,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "samples_per_s": samples,
        "speedup_cached_features": {
            "forward": seconds["forward_pixels"] / seconds["forward_cached_features"],
            "train_step": seconds["train_step_pixels"] / seconds["train_step_cached_features"],
        },
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "speed.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"UniMP `{args.preset}`, batch {args.batch_size}, {result['sequence_length']} tokens and "
        f"{args.items} images per sample, {result['device']}, vision tower frozen",
        "",
        "| measure | samples/s |",
        "|---|---|",
        *[f"| {name} | {value:.2f} |" for name, value in samples.items()],
        "",
        f"Cached image features speed-up: forward x{result['speedup_cached_features']['forward']:.2f}, "
        f"train step x{result['speedup_cached_features']['train_step']:.2f}",
    ]
    (args.output_dir / "speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
