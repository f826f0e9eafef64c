"""Export a trained UniMP folder as a self-contained Hub folder, optionally with a Space for it, and push them.

    python examples/export_hub.py --model runs/small --output exports/unimp-small \
        [--results runs/benchmark/results.json] [--dataset fashion-shop] [--name unimp-small-fashion-shop] \
        [--space exports/unimp-small-space] [--push-to-hub org/unimp-small] [--push-space org/unimp-small-demo]

`--model` is what `examples/train.py` writes to `--output-dir` (model and processor). The export holds everything
`AutoModel`/`AutoProcessor.from_pretrained(..., trust_remote_code=True)` and `pipeline("personalization", ...)` need
where the UniMP packages are not installed: config.json (with `auto_map` and `custom_pipelines`), safetensors
weights, the generation config, the processor with its tokenizer and item catalogue, the code files (flat), an
Inference Endpoints `handler.py`, the `image_tokenizer/` folder when the model has one, and a README.md model card
rendered from `hub_cards/`. The folder is written to a temporary sibling and renamed into place, so a failed export
never leaves a half-written folder.

`--space DIR` also writes a ready-to-push Gradio Space (`examples/space/app.py`, requirements, a README with the
Space front matter, which model to load and the test users of `--dataset`) to DIR: `python DIR/app.py` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from processing_unimp.export.hub import export, push_to_hub
from processing_unimp.export.space import push_space


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="A trained UniMP folder (model + processor).")
    parser.add_argument("--output", required=True, type=Path, help="The export folder to write.")
    parser.add_argument("--results", type=Path, help="Benchmark results JSON for the card's model-index.")
    parser.add_argument("--dataset", help="What the model was trained on (bundled name or folder): the card reports "
                        "only its results; the Space's test users come from it (default: detected for bundled data).")
    parser.add_argument("--name", help="The model's name on its card (default: the repo's or the folder's name).")
    parser.add_argument("--space", type=Path, metavar="DIR", help="Also write a ready-to-push Gradio Space to DIR.")
    parser.add_argument("--push-space", metavar="REPO", help="Push the --space folder to this Hub Space repo.")
    parser.add_argument("--card", help="Card template: unimp-3b, demo or a path (default: by model size).")
    parser.add_argument("--push-to-hub", metavar="REPO", help="Push the export to this Hub model repo.")
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output folder.")
    args = parser.parse_args(argv)
    if args.push_space and not args.space:
        parser.error("--push-space needs --space DIR (the folder to push).")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = export(args.model, args.output, results=args.results, card=args.card, repo_id=args.push_to_hub,
                    overwrite=args.overwrite, name=args.name, dataset=args.dataset, space_dir=args.space,
                    space_repo=args.push_space)
    print(f"Exported {args.model} to {folder}" + (f"; its Space to {args.space} (python {args.space}/app.py)"
                                                  if args.space else ""))
    if args.push_to_hub:
        print(f"Pushed: {push_to_hub(folder, args.push_to_hub, args.private)}")
    if args.push_space:
        print(f"Pushed the Space: {push_space(args.space, args.push_space, args.private)}")


if __name__ == "__main__":
    main()
