"""A ready-to-push Hugging Face Space (Gradio) for an exported UniMP model (`examples/export_hub.py --space DIR`).

Not shipped itself. The Space folder holds `examples/space/app.py` and `requirements.txt` as they are, a README.md
whose front matter names the model (so that the model page lists the Space), `demo_config.json` (which model the
app loads: the Hub repo when the model is pushed, else the export folder relative to the Space folder) and
`test_users.json` (the test split's users, for the app's user picker).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub import HfApi, SpaceCard

from ..data.builders import BUNDLED_DATASETS, bundled_dataset_path, load_unimp_dataset
from ..data.files import atomic_directory
from ..schema_unimp import item_id_of

SPACE_TEMPLATE = Path(__file__).resolve().parents[2] / "examples" / "space"
SPACE_FILES = ("app.py", "requirements.txt")
"""Copied as they are; README.md is the template's with the model filled in."""
CONFIG_FILE = "demo_config.json"
USERS_FILE = "test_users.json"
MAX_EXPLANATION_WORDS = 24


def test_users(dataset: str | os.PathLike, item_ids: Iterable[str], limit: int | None = None) -> list[dict[str, Any]]:
    """The test split's users as the app shows them: each user's recommend history (item id, rating, explanation)
    and held-out next item, for users whose items are all in the catalogue `item_ids`."""
    known = set(item_ids)
    users, seen = [], set()
    for sample in load_unimp_dataset(dataset)["tasks_test"]:
        if sample["task"] != "recommend" or sample["user_id"] in seen:
            continue
        history = [_entry(entry) for entry in sample["history"]]
        target = item_id_of(sample["target"]) if sample.get("target") else None
        if history and all(entry["item_id"] in known for entry in history) and (target is None or target in known):
            users.append({"user_id": sample["user_id"], "history": history, "target": target})
            seen.add(sample["user_id"])
        if limit is not None and len(users) >= limit:
            break
    return users


def _entry(entry: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"item_id": entry}
    kept = {"item_id": entry["item_id"]}
    if entry.get("rating") is not None:
        kept["rating"] = float(entry["rating"])
    if entry.get("explanation"):
        kept["explanation"] = " ".join(entry["explanation"].split()[:MAX_EXPLANATION_WORDS])
    return kept


def space_url(repo_id: str) -> str:
    return f"https://huggingface.co/spaces/{repo_id}"


def _readme(model: str, model_repo: str | None, name: str, space_repo: str | None) -> SpaceCard:
    """The template's README, with the Space's title, the model in the front matter and a section on this Space."""
    card = SpaceCard.load(SPACE_TEMPLATE / "README.md")
    card.data.title = f"{name} demo"[:60]
    if model_repo:
        card.data.models = [model_repo]  # the model page then lists this Space
    served = f"[{model_repo}](https://huggingface.co/{model_repo})" if model_repo else f"the export at `{model}`"
    repo = space_repo or "org/space-name"
    steps = "" if model_repo else (
        "First push the model (`examples/export_hub.py ... --push-to-hub org/model-name`) and set `model` in "
        f"`{CONFIG_FILE}` to its repo id (or set the Space variable `UNIMP_MODEL`): a Space cannot read a local "
        "folder.\n\n"
    )
    published = f"Published at {space_url(space_repo)}.\n\n" if space_repo else ""
    card.text += (
        f"\n## This Space\n\nServes **{name}**: {served} (`{CONFIG_FILE}`); the test users are in `{USERS_FILE}`. "
        f"Written by `examples/export_hub.py --space`. {published}Run it here:\n\n```bash\npython app.py\n```\n\n"
        f"Push it to the Hub:\n\n{steps}```bash\nhf repos create {repo} --type space --space-sdk gradio --exist-ok\n"
        f"hf upload {repo} . . --repo-type space\n```\n"
    )
    return card


def write_space(
    folder: str | os.PathLike,
    model: str,
    name: str,
    users: list[dict[str, Any]] | None = None,
    model_repo: str | None = None,
    space_repo: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the Space folder atomically; returns it.

    `model` is what the app loads (a Hub repo id, or a path relative to `folder`), `name` the model's name,
    `users` the test users (`test_users`), `model_repo`/`space_repo` the Hub repos when they are pushed.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass --overwrite to replace it.")
    with atomic_directory(folder) as staging:
        for file in SPACE_FILES:
            shutil.copy2(SPACE_TEMPLATE / file, staging / file)
        _readme(model, model_repo, name, space_repo).save(staging / "README.md")
        config = {"model": model, "name": name, "test_users": USERS_FILE if users else None}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if users:
            (staging / USERS_FILE).write_text(json.dumps({"split": "test", "users": users}) + "\n")
    return folder


def relative_path(target: str | os.PathLike, start: str | os.PathLike) -> str:
    """`target` relative to the folder `start`, with POSIX separators (e.g. the export as the Space's app finds it)."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


def matching_bundled_dataset(item_ids: Iterable[str]) -> str | None:
    """The bundled dataset whose catalogue is exactly `item_ids` (the model was trained on it), if there is one."""
    wanted = set(item_ids)
    for name in BUNDLED_DATASETS:
        try:
            items = datasets.load_from_disk(str(bundled_dataset_path(name) / "items"))
        except FileNotFoundError:  # not a source checkout
            continue
        if len(items) == len(wanted) and set(items["item_id"]) == wanted:
            return name
    return None


def push_space(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the Space repo (Gradio SDK) if needed and upload the folder in one commit; returns the commit URL."""
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="space",
                               commit_message="Upload UniMP demo Space (examples/export_hub.py --space)")
    return str(commit)
