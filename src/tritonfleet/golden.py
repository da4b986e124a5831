"""The golden set: fixed texts every export is checked against, and the golden file the smoke test reads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReleaseError

#: The article's three sentences.
ARTICLE_TEXTS = ["I love you so much!", "I hate this movie", "Ok, let's see tomorrow."]

EMOJI_TEXT = "Good night 😊"
EMPTY_TEXT = ""
#: Well past 512 tokens: exercises truncation to the model's maximum length.
LONG_TEXT = " ".join(
    ["The service was slow, the food was cold and the staff ignored us for an hour."] * 60
)

GOLDEN_TEXTS: list[str] = [
    *ARTICLE_TEXTS,
    EMOJI_TEXT,
    EMPTY_TEXT,
    LONG_TEXT,
    "What a wonderful surprise, thank you all!",
    "Terrible customer support, never again.",
    "The train leaves at 9 from platform 4.",
    "meh",
]

#: Batches at sizes and sequence lengths other than the traced one (1 x 100): the trace pitfall.
#: Each is a list of indices into GOLDEN_TEXTS.
GOLDEN_BATCHES: list[list[int]] = [
    [0, 1, 2],
    [3, 6, 7, 8, 9, 0, 1],
    [5, 0],
    list(range(len(GOLDEN_TEXTS))),
]


def is_servable(text: str) -> bool:
    """The server refuses empty texts (INVALID_ARG); every other golden text must be answered."""
    return bool(text.strip())


@dataclass
class GoldenEntry:
    text: str
    label: str
    logits: list[float]
    scores: list[float]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class GoldenFile:
    model: str
    labels: list[str]
    max_length: int
    entries: list[GoldenEntry]

    def save(self, path: Path) -> None:
        data = {
            "model": self.model,
            "labels": self.labels,
            "max_length": self.max_length,
            "entries": [e.__dict__ for e in self.entries],
        }
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> GoldenFile:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            entries = [GoldenEntry(**e) for e in data["entries"]]
            return cls(model=data["model"], labels=list(data["labels"]),
                       max_length=int(data["max_length"]), entries=entries)
        except FileNotFoundError:
            raise ReleaseError(f"golden file {path} does not exist (run `tritonfleet convert` first)") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ReleaseError(f"golden file {path} is malformed: {exc}") from exc

    def expected(self, entry: GoldenEntry, variant: str | None) -> tuple[str, list[float]]:
        """Label and scores the server should return for `entry` when it serves `variant` (e.g. int8)."""
        if variant and variant in entry.variants:
            v = entry.variants[variant]
            return v["label"], v["scores"]
        return entry.label, entry.scores
