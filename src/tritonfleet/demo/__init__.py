"""The embedded demo models: all-MiniLM-L6-v2 fine-tuned on data the project generates itself.

Two tasks, so that a release can serve more than one classifier: ``sentiment`` (negative, neutral,
positive; the article's example) and ``topic`` (sports, technology, food, travel). Each is described by
a :class:`DemoTask` in its own module; :mod:`tritonfleet.demo.build` trains any of them, deterministic,
cached, atomic and locked. Nothing heavy (torch, transformers) is imported until a model is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonfleet.demo.build import (
    BUILD_INFO,
    DemoModelError,
    DemoTask,
    base_model_dir,
    is_complete,
    read_build_info,
)
from tritonfleet.demo.build import build as _build
from tritonfleet.demo.build import cache_key as _cache_key
from tritonfleet.demo.sentiment import TASK as SENTIMENT
from tritonfleet.demo.topic import TASK as TOPIC

__all__ = [
    "BUILD_INFO",
    "DEFAULT_TASK",
    "TASKS",
    "DemoModelError",
    "DemoTask",
    "base_model_dir",
    "build_demo_model",
    "cache_key",
    "check_sentences",
    "get_task",
    "held_out_texts",
    "is_complete",
    "read_build_info",
]

#: The demo tasks by name.
TASKS: dict[str, DemoTask] = {task.name: task for task in (SENTIMENT, TOPIC)}
#: The task of the project's default model (the article's sentiment classifier).
DEFAULT_TASK = SENTIMENT.name


def get_task(task: str | DemoTask) -> DemoTask:
    """Return the task named ``task`` (a DemoTask passes through); an unknown name raises DemoModelError."""
    if isinstance(task, DemoTask):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise DemoModelError(f"unknown demo task {task!r}: choose one of {', '.join(TASKS)}") from None


def build_demo_model(task: str | DemoTask, output_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Build the demo model of ``task`` into ``output_dir`` (cached) and return its build info.

    The info has ``"cached": True`` when ``output_dir`` already held this build. The model is trained
    in a temporary directory and renamed into place only after it passed its checks, so ``output_dir``
    is either the old build or the new one. Failures raise :class:`DemoModelError`.
    """
    return _build(get_task(task), Path(output_dir), force=force)


def cache_key(task: str | DemoTask) -> str:
    """The cache key a build of ``task`` gets now (16 hex digits, :func:`tritonfleet.release.content_key`)."""
    return _cache_key(get_task(task))


def held_out_texts(task: str | DemoTask) -> list[str]:
    """The hand-written held-out texts of ``task``: where int8 must agree with fp32."""
    return get_task(task).held_out_texts()


def check_sentences(task: str | DemoTask) -> dict[str, str]:
    """The check sentences of ``task`` and the label each must get (they join the golden file)."""
    return dict(get_task(task).checks)
