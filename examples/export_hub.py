"""Export a trained UniMP folder as a self-contained Hub folder, and optionally push it.

    python examples/export_hub.py --model runs/small --output exports/unimp-small \
        [--results runs/benchmark/results.json] [--push-to-hub org/unimp-small]

`--model` is what `examples/train.py` writes to `--output-dir` (model and processor). The export holds everything
`AutoModel`/`AutoProcessor.from_pretrained(..., trust_remote_code=True)` and `pipeline("personalization", ...)` need
where the UniMP packages are not installed: config.json (with `auto_map` and `custom_pipelines`), safetensors
weights, the generation config, the processor with its tokenizer and item catalogue, the code files (flat), an
Inference Endpoints `handler.py`, the `image_tokenizer/` folder when the model has one, and a README.md model card
rendered from `hub_cards/`. The folder is written to a temporary sibling and renamed into place, so a failed export
never leaves a half-written folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from processing_unimp.export.hub import export, push_to_hub


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="A trained UniMP folder (model + processor).")
    parser.add_argument("--output", required=True, type=Path, help="The export folder to write.")
    parser.add_argument("--results", type=Path, help="Benchmark results JSON for the card's model-index.")
    parser.add_argument("--card", help="Card template: unimp-3b, demo or a path (default: by model size).")
    parser.add_argument("--push-to-hub", metavar="REPO", help="Push the export to this Hub model repo.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output folder.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = export(args.model, args.output, args.results, args.card, args.push_to_hub, args.overwrite)
    print(f"Exported {args.model} to {folder}")
    if args.push_to_hub:
        print(f"Pushed: {push_to_hub(folder, args.push_to_hub, args.private)}")


if __name__ == "__main__":
    main()
