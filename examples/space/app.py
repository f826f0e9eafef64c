"""UniMP demo (a Gradio app, Hugging Face Space layout): recommendations, search, ratings, selection and generated
images for a history a person picks or builds from the catalogue.

    python examples/space/app.py [--model runs/quickstart/hub] [--users test_users.json] [--host 127.0.0.1] \
        [--port 7860]

The model is any exported UniMP folder or Hub repo (`examples/export_hub.py`), loaded with `trust_remote_code=True`
through `pipeline("personalization")`: `--model`, else the `UNIMP_MODEL` environment variable, else the `model` of a
`demo_config.json` next to this file (an exported Space folder has one), else `runs/quickstart/hub`. Test users
(`--users`, `UNIMP_USERS`, the config's `test_users`, else `runs/quickstart/space/test_users.json` when it exists)
are a JSON file `{"users": [{"user_id", "history": [{"item_id", "rating", "explanation"}], "target"}]}`.

Everything a visitor sends is remote input: the pipeline runs with `allow_image_paths=False, allow_image_urls=False`,
so an item's image is accepted only inline (an upload, or base64 / a data URL in a JSON history) within the size
and pixel limits, and a path or URL is refused without being opened or fetched. Errors are messages, never
tracebacks. It needs only gradio, transformers, torch and PIL: the UniMP code comes with the model.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw
from transformers import AutoProcessor, pipeline

HERE = Path(__file__).resolve().parent
CONFIG_FILE = HERE / "demo_config.json"
DEFAULT_MODEL = "runs/quickstart/hub"
DEFAULT_USERS = "runs/quickstart/space/test_users.json"
TOP_K = 10
NUM_RETRIEVED = 5
"""As many items as retrieve-then-generate puts in its prompt (`generation_unimp.NUM_RETRIEVED`)."""
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_IMAGE_PIXELS = 2048 * 2048
CATALOGUE_PAGE = 24
THUMBNAIL = 112
HISTORY_HELP = (
    "Item ids, oldest first, separated by commas; or a JSON list of item ids and item objects "
    '(`{"item_id": ..., "image": <base64 or data URL>}`).'
)


def _config() -> dict[str, Any]:
    return json.loads(CONFIG_FILE.read_text()) if CONFIG_FILE.is_file() else {}


def resolve_model(model: str | None = None) -> str:
    """What to load: `--model`, `UNIMP_MODEL`, the config's model (a path relative to this file), the default."""
    if model or os.environ.get("UNIMP_MODEL"):
        return model or os.environ["UNIMP_MODEL"]
    configured = _config().get("model")
    if configured and (HERE / configured).exists():
        return str(HERE / configured)
    return configured or DEFAULT_MODEL


def model_title(model: str) -> str:
    """The model's name: the exported Space's `name` for its own model, else the folder's or repo's name."""
    config = _config()
    if config.get("name") and config.get("model") and model in (config["model"], str(HERE / config["model"])):
        return config["name"]
    return Path(model).name or model


def resolve_users(users: str | None = None) -> Path | None:
    """The test-users file: `--users`, `UNIMP_USERS`, the config's, or the quickstart's when it exists."""
    for candidate in (users, os.environ.get("UNIMP_USERS")):
        if candidate:
            return Path(candidate)
    configured = _config().get("test_users")
    if configured:
        return HERE / configured
    return Path(DEFAULT_USERS) if Path(DEFAULT_USERS).is_file() else None


def placeholder(text: str = "no image") -> Image.Image:
    image = Image.new("RGB", (THUMBNAIL, THUMBNAIL), (236, 236, 236))
    ImageDraw.Draw(image).text((THUMBNAIL // 2, THUMBNAIL // 2), text, fill=(120, 120, 120), anchor="mm")
    return image


def thumbnail(image: Image.Image) -> Image.Image:
    """`image` scaled to THUMBNAIL pixels on its long side (small catalogue pictures are enlarged, pixels kept)."""
    scale = THUMBNAIL / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return image.convert("RGB").resize(size, resample)


class UniMPDemo:
    """The app's state and callbacks. Every callback raises `gr.Error` (a message in the page) on bad input."""

    def __init__(self, model: str, users: Path | None = None):
        self.model_name = model
        self.title = model_title(model)
        self.processor = AutoProcessor.from_pretrained(model, trust_remote_code=True)
        catalogue = self.processor.catalogue
        if catalogue is None:
            raise ValueError(f"{model} has no item catalogue (item_catalogue.parquet): it is no UniMP export.")
        columns = catalogue.table.column_names
        self.item_ids: list[str] = list(catalogue.item_ids)
        self.titles = dict(
            zip(self.item_ids, catalogue.table["title"] if "title" in columns else [None] * len(self.item_ids))
        )
        self._images = catalogue.table["image"] if "image" in columns else [None] * len(self.item_ids)
        self._row = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._thumbnails: dict[str, Image.Image] = {}
        self.users = self._read_users(users)
        self._pipe = None
        self._load_error: str | None = None
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._load_pipeline, daemon=True).start()

    # ----------------------------------------------------------------- loading
    def _read_users(self, path: Path | None) -> dict[str, dict[str, Any]]:
        if path is None or not path.is_file():
            return {}
        users = json.loads(path.read_text())["users"]
        return {user["user_id"]: user for user in users if all(h["item_id"] in self._row for h in user["history"])}

    def _load_pipeline(self) -> None:
        started = time.perf_counter()
        try:
            self._pipe = pipeline(
                "personalization", model=self.model_name, processor=self.processor, trust_remote_code=True,
                allow_image_paths=False, allow_image_urls=False, max_image_bytes=MAX_UPLOAD_BYTES,
                max_image_pixels=MAX_IMAGE_PIXELS,
            )
            print(f"Model {self.model_name} loaded in {time.perf_counter() - started:.1f} s", flush=True)
        except Exception as error:  # noqa: BLE001 (the details go to the server log, not to the visitor)
            print(f"The model {self.model_name} could not be loaded: {type(error).__name__}: {error}", file=sys.stderr)
            self._load_error = "The model could not be loaded; the server log says why."
        finally:
            self._loaded.set()

    def pipe(self, progress: gr.Progress | None = None):
        """The pipeline, once the model has loaded (progress is shown while it loads)."""
        waited = 0.0
        while not self._loaded.wait(0.25):
            waited += 0.25
            if progress is not None:
                progress(0, desc=f"Loading the model… {waited:.0f} s")
        if self._load_error:
            raise gr.Error(self._load_error)
        return self._pipe

    def status(self, progress: gr.Progress = gr.Progress()) -> str:
        self.pipe(progress)
        users = f"{len(self.users)} test users" if self.users else "no test users (pass `--users`)"
        return f"**Model** `{self.title}` · {len(self.item_ids):,} catalogue items · {users} · ready"

    # ----------------------------------------------------------------- items
    def label(self, item_id: str) -> str:
        return f"{self.titles.get(item_id) or '(untitled)'} · {item_id}"

    def item_image(self, item_id: str) -> Image.Image:
        """The catalogue's picture of an item (the model's own, trusted data), as a thumbnail."""
        if item_id not in self._thumbnails:
            stored = self._images[self._row[item_id]]
            data = stored.get("bytes") if isinstance(stored, dict) else None
            self._thumbnails[item_id] = thumbnail(Image.open(io.BytesIO(data))) if data else placeholder()
        return self._thumbnails[item_id]

    def _check_item(self, item_id: Any, field: str) -> str:
        if not isinstance(item_id, str) or item_id not in self._row:
            raise gr.Error(f"Unknown item id {item_id!r} in {field}: it is not in this model's catalogue of "
                           f"{len(self.item_ids):,} items.")
        return item_id

    def catalogue_page(self, words: str | None) -> list[tuple[Image.Image, str]]:
        """Catalogue items whose title has every word of `words`, with their pictures."""
        return [(self.item_image(item_id), self.label(item_id)) for item_id in self._matches(words)]

    def _matches(self, words: str | None) -> list[str]:
        terms = (words or "").lower().split()
        found = [i for i in self.item_ids if all(t in self.label(i).lower() for t in terms)]
        return found[:CATALOGUE_PAGE]

    # ----------------------------------------------------------------- the history
    def parse_history(self, text: str | None) -> list[Any]:
        """The history box: comma-separated item ids, or a JSON list of ids and item objects."""
        text = (text or "").strip()
        if not text:
            raise gr.Error("The history is empty: pick a test user or add catalogue items first.")
        if text.startswith("["):
            try:
                history = json.loads(text)
            except json.JSONDecodeError as error:
                raise gr.Error(
                    f"The history is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
                )
        else:
            history = [part for part in re.split(r"[\s,;]+", text) if part]
        if not isinstance(history, list) or not history:
            raise gr.Error("The history must be a non-empty list of item ids or item objects.")
        for entry in history:
            if isinstance(entry, dict):
                self._check_item(entry.get("item_id"), "the history")
            elif isinstance(entry, str):
                self._check_item(entry, "the history")
            else:
                raise gr.Error(f"Every history entry must be an item id or an item object, got {entry!r}.")
        return history

    def request_history(self, text: str | None, user_id: str | None, photo: bytes | None) -> list[Any]:
        """The history as the pipeline gets it: a test user's ratings and explanations kept, the photo (an upload's
        bytes) as the picture of the latest item."""
        history = self.parse_history(text)
        known = {h["item_id"]: h for h in self.users.get(user_id or "", {}).get("history", [])}
        entries = [dict(known[entry]) if isinstance(entry, str) and entry in known else entry for entry in history]
        if photo:
            latest = entries[-1]
            entries[-1] = {**({"item_id": latest} if isinstance(latest, str) else latest), "image": bytes(photo)}
        return entries

    def show_history(
        self, text: str | None, user_id: str | None = None, photo: bytes | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> list[tuple[Image.Image, str]]:
        """The history as pictures and titles; an inline or uploaded picture is read as the pipeline reads it."""
        if not (text or "").strip():
            return []
        cards = []
        for entry in self.request_history(text, user_id, photo):
            item_id = entry if isinstance(entry, str) else entry["item_id"]
            picture = self.item_image(item_id)
            if isinstance(entry, dict) and entry.get("image") is not None:
                picture = thumbnail(self._read_image(entry["image"], item_id, progress))
            rating = f" · rated {entry['rating']:g}" if isinstance(entry, dict) and entry.get("rating") else ""
            cards.append((picture, self.label(item_id) + rating))
        return cards

    def _read_image(self, image: Any, item_id: str, progress: gr.Progress | None) -> Image.Image:
        try:
            return self.pipe(progress).image_policy.read(image, item_id)
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error

    def load_user(self, user_id: str | None) -> tuple[str, str, str]:
        """A test user's history (ids), a line about the user, and the user (whose ratings then go with the ids)."""
        if not user_id:
            raise gr.Error("Pick a test user first.")
        if user_id not in self.users:
            raise gr.Error(f"Unknown test user {user_id!r}.")
        user = self.users[user_id]
        ids = [h["item_id"] for h in user["history"]]
        target = user.get("target")
        held_out = f"; the held-out next item is **{self.label(target)}**" if target in self._row else ""
        return ", ".join(ids), f"User `{user_id}`: {len(ids)} items in the history{held_out}.", user_id

    def add_items(self, text: str | None, item_ids: list[str] | None) -> str:
        """The history with catalogue items appended (a duplicate is moved to the end)."""
        if not item_ids:
            raise gr.Error("Choose one or more catalogue items to add.")
        history = [] if not (text or "").strip() else self.parse_history(text)
        if any(isinstance(entry, dict) for entry in history):
            raise gr.Error("This history is a JSON list: edit it in the box to add items.")
        added = [self._check_item(item_id, "the items to add") for item_id in item_ids]
        return ", ".join([entry for entry in history if entry not in added] + added)

    def add_from_catalogue(self, words: str | None, text: str | None, event: gr.SelectData) -> str:
        """A click on a catalogue picture adds that item to the history."""
        matches = self._matches(words)
        if not isinstance(event.index, int) or not 0 <= event.index < len(matches):
            raise gr.Error("That catalogue item is no longer shown; search again.")
        return self.add_items(text, [matches[event.index]])

    # ----------------------------------------------------------------- tasks
    def _run(self, progress: gr.Progress, desc: str, history: list[Any], **kwargs: Any) -> Any:
        pipe = self.pipe(progress)
        progress(0.5, desc=desc)
        try:
            with self._lock:
                return pipe(history=history, **kwargs)
        except (ValueError, TypeError) as error:
            raise gr.Error(str(error)) from error

    def _cards(self, results: list[dict[str, Any]], held_out: str | None = None, score: str = "p") -> tuple:
        """A gallery (picture, short caption) and a table (rank, item, title, score) of ranked items."""
        cards, rows = [], [f"| # | item | title | {score} |", "|---:|---|---|---:|"]
        for rank, result in enumerate(results, 1):
            item_id, mark = result["item_id"], " ★" if result["item_id"] == held_out else ""
            title = self.titles.get(item_id) or "(untitled)"
            cards.append((self.item_image(item_id), f"{rank}. {title} ({result['score']:.3f}){mark}"))
            rows.append(f"| {rank} | `{item_id}` | {title}{' ★ held-out next item' if mark else ''} | "
                        f"{result['score']:.4f} |")
        return cards, "\n".join(rows)

    def recommend(
        self, text: str | None, user_id: str | None, photo: bytes | None, exclude_seen: bool,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple], str]:
        """The top-10 of the whole catalogue for the history, as pictures and as a table."""
        history = self.request_history(text, user_id, photo)
        results = self._run(progress, f"Ranking {len(self.item_ids):,} items…", history, task="recommend",
                            top_k=TOP_K, exclude_seen=bool(exclude_seen))
        return self._cards(results, self.users.get(user_id or "", {}).get("target"))

    def search(
        self, text: str | None, user_id: str | None, photo: bytes | None, query: str | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple], str]:
        """The top-10 items for a query, personalized by the history."""
        if not (query or "").strip():
            raise gr.Error("Type what you are looking for first.")
        history = self.request_history(text, user_id, photo)
        return self._cards(self._run(progress, "Searching…", history, task="search", query=query, top_k=TOP_K))

    def rate(
        self, text: str | None, user_id: str | None, photo: bytes | None, item_id: str | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[Image.Image, str, dict[str, float], str]:
        """The predicted rating of an item, its distribution, and the explanation."""
        if not item_id:
            raise gr.Error("Choose the item to rate first.")
        self._check_item(item_id, "the item to rate")
        history = self.request_history(text, user_id, photo)
        result = self._run(progress, "Rating and explaining…", history, task="rate_explain", target=item_id)
        distribution = {f"{float(value):g} ★": float(p) for value, p in result["rating_distribution"].items()}
        headline = f"### {self.label(item_id)}\nPredicted rating **{result['rating']:.2f}** (expected value)"
        return self.item_image(item_id), headline, distribution, result["explanation"] or "(no explanation generated)"

    def select(
        self, text: str | None, user_id: str | None, photo: bytes | None, candidates: list[str] | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple], str]:
        """The candidates the user would choose, with their probability among the candidates."""
        if not candidates:
            raise gr.Error("Choose the candidates to select from first.")
        for item_id in candidates:
            self._check_item(item_id, "the candidates")
        history = self.request_history(text, user_id, photo)
        chosen = self._run(progress, "Selecting…", history, task="select", candidates=list(candidates))
        return self._cards(chosen, score="p among the candidates")

    def generate(
        self, text: str | None, user_id: str | None, photo: bytes | None, query: str | None, num_images: int,
        seed: float | None, progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple], list[tuple], str]:
        """Retrieve-then-generate: pictures of the item the user would like, and the retrieved items they come from.

        The retrieved items are the search task's top `NUM_RETRIEVED` for the same history and query: the context
        that `generate_image` retrieves and generates from.
        """
        if not (query or "").strip():
            raise gr.Error("Describe the item to generate first.")
        history = self.request_history(text, user_id, photo)
        retrieved = self._run(progress, "Retrieving items…", history, task="search", query=query, top_k=NUM_RETRIEVED)
        seed = None if seed is None or seed == "" else int(seed)
        images = self._run(progress, f"Generating {int(num_images)} image(s)…", history, task="generate_image",
                           query=query, num_images=int(num_images), seed=seed)
        generated = [(thumbnail(image), f"generated {index}") for index, image in enumerate(images, 1)]
        return generated, *self._cards(retrieved, score="retrieval p")


def _task_tabs(choices: list[tuple[str, str]], slots: int) -> SimpleNamespace:
    """The right-hand column: one tab per task, its inputs and outputs (returned by name for the wiring)."""
    with gr.Column(scale=3):
        with gr.Tab("Recommend"):
            exclude = gr.Checkbox(label="Leave out items already in the history", value=False)
            recommend = gr.Button("Recommend the top 10", variant="primary", elem_id="recommend")
            recommendations = gr.Gallery(label="Top-10 recommendations", columns=5, height=330,
                                         elem_id="recommendations")
            recommendations_table = gr.Markdown(elem_id="recommendations-table")
        with gr.Tab("Search"):
            query = gr.Textbox(label="Search query", placeholder="e.g. dark bag", elem_id="query")
            search = gr.Button("Search", variant="primary", elem_id="search")
            found = gr.Gallery(label="Top-10 for the query", columns=5, height=330, elem_id="found")
            found_table = gr.Markdown()
        with gr.Tab("Rate & explain"):
            item = gr.Dropdown(choices, value=None, filterable=True, label="Item to rate", elem_id="rate-item")
            rate = gr.Button("Predict the rating", variant="primary", elem_id="rate")
            with gr.Row():
                item_picture = gr.Image(label="Item", height=160, interactive=False)
                with gr.Column():
                    headline = gr.Markdown()
                    distribution = gr.Label(label="Rating distribution", num_top_classes=10)
            explanation = gr.Textbox(label="Explanation", interactive=False)
        with gr.Tab("Select"):
            candidates = gr.Dropdown(choices, multiselect=True, filterable=True, max_choices=slots,
                                     label=f"Candidates (up to {slots})", elem_id="candidates")
            select = gr.Button("Which would the user choose?", variant="primary", elem_id="select")
            selected = gr.Gallery(label="Chosen", columns=5, height=200, elem_id="selected")
            selected_table = gr.Markdown()
        with gr.Tab("Generate images", elem_id="generate-tab"):
            description = gr.Textbox(label="What the user is looking for", placeholder="e.g. dark coat",
                                     elem_id="generate-query")
            with gr.Row():
                num_images = gr.Slider(1, 4, value=4, step=1, label="Images")
                seed = gr.Number(value=0, precision=0, label="Seed")
            generate = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                generated = gr.Gallery(label="Generated for this user", columns=2, height=330,
                                       elem_id="generated")
                retrieved = gr.Gallery(label=f"Retrieved items (top {NUM_RETRIEVED}), the context",
                                       columns=3, height=330, elem_id="retrieved")
            retrieved_table = gr.Markdown()
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("choices", "slots")})


def build_ui(demo: UniMPDemo) -> gr.Blocks:
    """The page: a history on the left, the tasks on the right."""
    choices = [(demo.label(item_id), item_id) for item_id in demo.item_ids]
    slots = demo.processor.num_slots
    with gr.Blocks(title=f"UniMP demo: {demo.title}") as page:
        gr.Markdown("# UniMP: multi-modal personalization\nPick a test user or build a history from the catalogue, "
                    "then ask for recommendations, search, a rating, a selection or generated images.")
        status = gr.Markdown("Loading the model…", elem_id="status")
        active_user = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    user = gr.Dropdown(sorted(demo.users), value=None, label="A test user", elem_id="user",
                                       filterable=True, interactive=bool(demo.users), scale=3)
                    use_user = gr.Button("Use this user's history", elem_id="use-user", scale=1)
                user_info = gr.Markdown()
                history = gr.Textbox(label="History (oldest first)", info=HISTORY_HELP, lines=2, elem_id="history")
                history_cards = gr.Gallery(label="Your history", columns=5, height=240, allow_preview=False,
                                           elem_id="history-cards")
                with gr.Row():
                    to_add = gr.Dropdown(choices, multiselect=True, filterable=True, label="Add catalogue items",
                                         elem_id="add-items", scale=3)
                    add = gr.Button("Add to history", elem_id="add", scale=1)
                with gr.Accordion("Browse the catalogue (click a picture to add it)", open=False):
                    words = gr.Textbox(label="Title words (Enter to search)", elem_id="catalogue-words")
                    catalogue = gr.Gallery(demo.catalogue_page(""), label="Catalogue", columns=6, height=300,
                                           allow_preview=False, elem_id="catalogue")
                photo = gr.File(label="Your photo of the latest item (optional; replaces its picture)",
                                type="binary", file_types=["image"], elem_id="photo")
                clear = gr.Button("Clear the history", elem_id="clear")
            tabs = _task_tabs(choices, slots)

        context = [history, active_user, photo]
        show = {"fn": demo.show_history, "inputs": context, "outputs": history_cards}
        page.load(demo.status, outputs=status)
        use_user.click(demo.load_user, inputs=user, outputs=[history, user_info, active_user]).success(**show)
        add.click(demo.add_items, inputs=[history, to_add], outputs=history).success(list, outputs=to_add).success(
            **show
        )
        catalogue.select(demo.add_from_catalogue, inputs=[words, history], outputs=history).success(**show)
        words.submit(demo.catalogue_page, inputs=words, outputs=catalogue)
        history.submit(**show)
        history.blur(**show)
        photo.change(**show)
        clear.click(lambda: ("", None, None, [], "", None),
                    outputs=[history, active_user, user, history_cards, user_info, photo])
        tabs.recommend.click(demo.recommend, inputs=[*context, tabs.exclude],
                             outputs=[tabs.recommendations, tabs.recommendations_table])
        tabs.search.click(demo.search, inputs=[*context, tabs.query], outputs=[tabs.found, tabs.found_table])
        tabs.query.submit(demo.search, inputs=[*context, tabs.query], outputs=[tabs.found, tabs.found_table])
        tabs.rate.click(demo.rate, inputs=[*context, tabs.item],
                        outputs=[tabs.item_picture, tabs.headline, tabs.distribution, tabs.explanation])
        tabs.select.click(demo.select, inputs=[*context, tabs.candidates], outputs=[tabs.selected, tabs.selected_table])
        tabs.generate.click(demo.generate, inputs=[*context, tabs.description, tabs.num_images, tabs.seed],
                            outputs=[tabs.generated, tabs.retrieved, tabs.retrieved_table])
    return page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="An exported UniMP folder or Hub repo id (default: see above).")
    parser.add_argument("--users", help="A test-users JSON file (default: see above).")
    parser.add_argument("--host", help="Address to listen on (default: gradio's, 127.0.0.1 or GRADIO_SERVER_NAME).")
    parser.add_argument("--port", type=int, help="Port to listen on (default: gradio's, 7860 or GRADIO_SERVER_PORT).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    demo = UniMPDemo(resolve_model(args.model), resolve_users(args.users))
    page = build_ui(demo)
    page.queue(default_concurrency_limit=2)
    page.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False,
                prevent_thread_lock=True, show_error=False)
    print(f"UniMP demo of {demo.model_name} up in {time.perf_counter() - started:.1f} s", flush=True)
    page.block_thread()


if __name__ == "__main__":
    main()
