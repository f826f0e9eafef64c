"""What a dataset build is told (`BuildConfig`) and what it reports back (`BuildReport`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..schema_unimp import TASKS

KEEP_EXAMPLES = 5
"""Examples of skipped records kept per reason in a `BuildReport`."""


@dataclass
class BuildReport:
    """What a build skipped or repaired, counted per reason with a few examples; saved next to the data.

    Nothing is dropped silently: every skip goes through `skip`, and `check` refuses a dataset that lost
    more than a set fraction of its raw records.
    """

    source: str
    strict: bool = False
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        """Count one skipped record; in strict mode raise instead, naming the reason and the record."""
        if self.strict:
            raise ValueError(f"{self.source}: {reason} at {where}")
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < KEEP_EXAMPLES:
            kept.append(where)

    def note(self, key: str, value: Any) -> None:
        """Record a fact about the build (e.g. how many interactions the k-core removed)."""
        self.notes[key] = value

    def check(self, total_records: int, max_skip_fraction: float) -> None:
        """Raise if the skipped records exceed `max_skip_fraction` of the raw ones: no silent partial data."""
        lost = sum(self.skipped.values())
        if total_records and lost / total_records > max_skip_fraction:
            raise ValueError(
                f"{self.source}: {lost} of {total_records} raw records were skipped (> {max_skip_fraction:.0%}); "
                f"reasons: {dict(self.skipped)}; examples: {self.examples}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form with deterministic key order."""
        return {
            "source": self.source,
            "skipped": dict(sorted(self.skipped.items())),
            "examples": dict(sorted(self.examples.items())),
            "notes": dict(sorted(self.notes.items())),
        }


@dataclass
class BuildConfig:
    """Every knob of a build; the same config and raw files give byte-identical output."""

    seed: int = 0
    min_user_interactions: int = 8  # paper: users with >= 8 interactions
    min_item_interactions: int = 5  # paper: items with >= 5 interactions
    split: str = "leave_one_out"  # or "user" (the paper's random 80/10/10 user split)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_history: int = 20  # most recent items kept as a task sample's history
    train_targets_per_user: int = 5  # training task samples per user (the last positions of the train part)
    tasks: tuple[str, ...] = TASKS
    num_candidates: int = 3  # select: candidates per sample (1 or 2 of them positive)
    dedup_keys: tuple[str, ...] = ("user_id", "item_id", "timestamp")
    max_skip_fraction: float = 0.5
    strict: bool = False
