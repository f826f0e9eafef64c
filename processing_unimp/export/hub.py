"""A self-contained Hub export of a trained UniMP folder (`examples/export_hub.py`), and its push.

Not shipped itself: it writes the shipped layer (every flat code file of `modeling_unimp/` and `processing_unimp/`)
next to the weights, the processor, the image tokenizer and a model card, and optionally a Space for it
(`export.space`).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

import modeling_unimp
from modeling_unimp import UniMPForConditionalGeneration

from .. import UniMPProcessor
from ..data.files import atomic_directory
from ..image_codes_unimp import IMAGE_TOKENIZER_FOLDER
from .space import matching_bundled_dataset, relative_path, space_url, test_users, write_space

CARDS = Path(__file__).resolve().parents[2] / "hub_cards"
CARD_TEMPLATES = {"unimp-3b": CARDS / "model_unimp-3b.md", "demo": CARDS / "model_unimp-demo.md"}

MODEL_CLASS = "modeling_unimp.UniMPForConditionalGeneration"
AUTO_MAP = {
    "AutoConfig": "configuration_unimp.UniMPConfig",
    "AutoModel": MODEL_CLASS,
    "AutoModelForCausalLM": MODEL_CLASS,
    "AutoModelForImageTextToText": MODEL_CLASS,
    "AutoProcessor": "processing_unimp.UniMPProcessor",
}
CUSTOM_PIPELINES = {
    "personalization": {
        "impl": "pipeline_unimp.PersonalizationPipeline",
        "pt": ["AutoModelForImageTextToText"],
        "type": "multimodal",
    }
}
SHIPPED_PACKAGES = (Path(modeling_unimp.__file__).parent, Path(__file__).parents[1])
"""The packages whose flat code files are the shipped layer; their subpackages are offline tooling."""
TAGS = ["personalization", "recommendation", "custom_code", "multimodal", "unimp"]
RANKING_METRIC = re.compile(r"^(HR|NDCG|MRR|Recall)@\d+$")
"""The next-item metrics a card reports; other entries of a benchmark (timings, per-task blocks) are left out."""
BILLION = 1e9


def code_files() -> list[Path]:
    """The shipped layer: every flat code file of the two packages but their `__init__.py` (registration only).

    A Hub folder is flat, so these files import only each other (`from .x import y`); `handler.py` is the
    Inference Endpoints entry point.
    """
    return sorted(path for package in SHIPPED_PACKAGES for path in package.glob("*.py") if path.name != "__init__.py")


def load_results(path: Path | None, dataset: str | None = None) -> dict[str, Any]:
    """A benchmark JSON `{"datasets": {NAME: {"protocol", "models": {MODEL: {METRIC: value}}}}}`, or nothing.

    With `dataset`, only that dataset's block: the one the exported model was trained and measured on.
    """
    if path is None:
        return {}
    results = json.loads(Path(path).read_text())
    if not isinstance(results.get("datasets"), dict):
        raise ValueError(f"{path}: a benchmark results file needs a `datasets` object.")
    if dataset is None:
        return results["datasets"]
    if dataset not in results["datasets"]:
        raise ValueError(f"{path} has no results for dataset {dataset!r}; it has {sorted(results['datasets'])}.")
    return {dataset: results["datasets"][dataset]}


def _ranking_metrics(scores: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in scores.items() if RANKING_METRIC.match(name)}


def eval_results(datasets: dict[str, Any]) -> list[EvalResult]:
    """model-index entries: UniMP's next-item metrics on each benchmark dataset (baselines go to the table only)."""
    entries = []
    for dataset, result in datasets.items():
        for metric, value in _ranking_metrics(result.get("models", {}).get("unimp", {})).items():
            entries.append(EvalResult(
                task_type="recommendation", task_name="Next-item recommendation (full ranking)",
                dataset_type=dataset, dataset_name=dataset, dataset_split="test",
                dataset_args={"protocol": result.get("protocol", "")},
                metric_type=metric.lower(), metric_name=metric, metric_value=value,
            ))
    return entries


def results_table(datasets: dict[str, Any]) -> str:
    """The benchmark as one markdown table per dataset, UniMP and the baselines side by side."""
    sections = []
    for dataset, result in datasets.items():
        models = {model: _ranking_metrics(scores) for model, scores in result.get("models", {}).items()}
        metrics = list(dict.fromkeys(metric for scores in models.values() for metric in scores))
        rows = [f"| model | {' | '.join(metrics)} |", f"|---|{'---:|' * len(metrics)}"]
        for model, scores in models.items():
            values = [f"{scores[m]:.4f}" if m in scores else "–" for m in metrics]
            rows.append(f"| {model} | {' | '.join(values)} |")
        sections.append(f"**{dataset}** ({result.get('protocol', 'protocol not given')})\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


def _count(parameters: int) -> str:
    return f"{parameters / BILLION:.2f} B" if parameters >= BILLION else f"{parameters / 1e6:.2f} M"


def render_card(
    model: UniMPForConditionalGeneration,
    processor: UniMPProcessor,
    template: str | Path,
    name: str,
    repo_id: str | None,
    datasets: dict[str, Any],
    has_image_tokenizer: bool,
    space: str = "",
) -> ModelCard:
    """The model card: metadata (pipeline tag, tags, model-index) plus the template filled from the model."""
    config = model.config
    every = config.cross_attention_every_n_layers
    card_data = ModelCardData(
        model_name=name, library_name="transformers", pipeline_tag="image-text-to-text", license="apache-2.0",
        tags=TAGS, eval_results=eval_results(datasets) or None,
    )
    vision, text = config.vision_config, config.text_config
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=name,
        repo_id=repo_id or f"path/to/{name}",
        num_parameters=_count(model.num_parameters()),
        vision=f"{vision.model_type} ({vision.num_hidden_layers} layers, hidden {vision.hidden_size}, "
               f"{vision.image_size}-pixel images)",
        language_model=f"{text.model_type} ({text.num_hidden_layers} layers, hidden {text.hidden_size})",
        resampler=f"{config.num_latents} latents, depth {config.resampler_depth}",
        cross_attention="every decoder layer" if every == 1 else f"one in {every} decoder layers",
        num_items=len(processor.item_ids),
        example_history=processor.item_ids[:3],
        has_image_tokenizer=has_image_tokenizer,
        results_table=results_table(datasets),
        space=space,
    )


def _write(
    model_dir: Path, folder: Path, name: str, card: str | Path | None, repo_id: str | None, datasets: dict[str, Any],
    space: str,
) -> UniMPProcessor:
    """Write every file of the export into `folder` (see `export` for `card`); `name` titles the model card and
    `space` (markdown) says where its demo is. Returns the processor."""
    if not (model_dir / "config.json").is_file():
        hint = " It holds a LoRA adapter: merge it into its base model first." if (
            model_dir / "adapter_config.json").is_file() else ""
        raise FileNotFoundError(f"{model_dir} has no config.json, so it is no saved UniMP model.{hint}")
    model = UniMPForConditionalGeneration.from_pretrained(model_dir)
    processor = UniMPProcessor.from_pretrained(model_dir)
    model.config.auto_map = AUTO_MAP
    model.config.custom_pipelines = CUSTOM_PIPELINES
    model.save_pretrained(folder)  # config.json, model.safetensors, generation_config.json
    processor.save_pretrained(folder)  # processor config, tokenizer, item catalogue, processor code
    for path in code_files():
        shutil.copy2(path, folder / path.name)
    image_tokenizer = model_dir / IMAGE_TOKENIZER_FOLDER
    if image_tokenizer.is_dir():
        shutil.copytree(image_tokenizer, folder / IMAGE_TOKENIZER_FOLDER)
        _drop_local_path(folder / IMAGE_TOKENIZER_FOLDER / "config.json")
    if card is None:
        card = "unimp-3b" if model.num_parameters() >= BILLION else "demo"
    template = CARD_TEMPLATES.get(str(card), Path(card))
    model_card = render_card(model, processor, template, name, repo_id, datasets, image_tokenizer.is_dir(), space)
    model_card.save(folder / "README.md")
    return processor


def _drop_local_path(config_file: Path) -> None:
    """diffusers records where a model was loaded from (`_name_or_path`); a published folder names no local path."""
    config = json.loads(config_file.read_text())
    if config.pop("_name_or_path", None) is not None:
        config_file.write_text(json.dumps(config, indent=2) + "\n")


def _space_line(output_dir: Path, space_dir: Path | None, space_repo: str | None) -> str:
    """Where the model card says the demo is: the Space on the Hub, or the Space folder next to the export."""
    if space_repo:
        return f"Try it in the Space [{space_repo}]({space_url(space_repo)}) (a Gradio app on this model)."
    if space_dir is None:
        return ""
    relative = relative_path(space_dir, output_dir)
    return (
        f"A ready-to-push Gradio Space for this model was written to [`{relative}`]({relative}/README.md) (relative "
        f"to this folder): run it with `python {relative}/app.py`; its README says how to push it."
    )


def export(
    model_dir: str | Path,
    output_dir: str | Path,
    results: str | Path | None = None,
    card: str | Path | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
    name: str | None = None,
    dataset: str | Path | None = None,
    space_dir: str | Path | None = None,
    space_repo: str | None = None,
) -> Path:
    """Write the self-contained export of `model_dir` to `output_dir` atomically; returns `output_dir`.

    `card` is a template name (`unimp-3b`, `demo`) or path; by default `unimp-3b` for models of a billion
    parameters or more, else `demo`. `name` titles the card (default: the repo's or the folder's name). `dataset`
    (a bundled name or a dataset folder) is what the model was trained on: the card reports only its `results`,
    and the Space picks its test users from it (default: the bundled dataset with the model's catalogue, if any).
    `space_dir` also writes a ready-to-push Space (`export.space.write_space`) there; the card links it, or the
    Space `space_repo` when it is pushed there.
    """
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    space_dir = Path(space_dir) if space_dir is not None else None
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass --overwrite to replace it.")
    if space_dir is not None and space_dir.exists() and not overwrite:
        raise FileExistsError(f"{space_dir} exists; pass --overwrite to replace it.")
    dataset_name = Path(dataset).name if dataset is not None else None
    datasets = load_results(Path(results) if results else None, dataset_name)
    name = name or (repo_id.split("/")[-1] if repo_id else output_dir.name)
    with atomic_directory(output_dir) as staging:
        processor = _write(model_dir, staging, name, card, repo_id, datasets, _space_line(output_dir, space_dir,
                                                                                       space_repo))
    if space_dir is not None:
        source = dataset if dataset is not None else matching_bundled_dataset(processor.item_ids)
        users = test_users(source, processor.item_ids) if source is not None else None
        model = repo_id or relative_path(output_dir, space_dir)
        write_space(space_dir, model, name, users, model_repo=repo_id, space_repo=space_repo, overwrite=overwrite)
    return output_dir


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the model repo (if needed) and upload the export in one commit; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               commit_message="Upload UniMP export (examples/export_hub.py)")
    return str(commit)
