"""Fast checks of the demo tasks' data and of the build's caching and output (no training)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tritonfleet import demo
from tritonfleet.demo import TASKS, DemoModelError, DemoTask, build
from tritonfleet.demo import sentiment as sentiment_data
from tritonfleet.demo import topic as topic_data
from tritonfleet.demo.sentiment import ARTICLE_SENTENCES, LABELS, normalise, training_set
from tritonfleet.layout import MODEL_TEXTS_FILE

ALL_TASKS = sorted(TASKS)


def test_tasks() -> None:
    assert set(TASKS) == {"sentiment", "topic"}
    assert TASKS["sentiment"] is sentiment_data.TASK and TASKS["topic"] is topic_data.TASK
    assert demo.DEFAULT_TASK == "sentiment"
    assert demo.get_task("topic") is topic_data.TASK
    with pytest.raises(DemoModelError, match="unknown demo task"):
        demo.get_task("weather")


def test_labels_are_the_issue_labels() -> None:
    assert LABELS == ("negative", "neutral", "positive")
    assert TASKS["sentiment"].labels == LABELS


def test_topic_labels_differ_from_sentiment() -> None:
    assert topic_data.LABELS == ("sports", "technology", "food", "travel")
    assert not set(topic_data.LABELS) & set(LABELS)


def test_article_sentences() -> None:
    assert ARTICLE_SENTENCES == {
        "I love you so much!": "positive",
        "I hate this movie": "negative",
        "Ok, let's see tomorrow.": "neutral",
    }
    assert demo.check_sentences("sentiment") == ARTICLE_SENTENCES


@pytest.mark.parametrize("name", ALL_TASKS)
def test_checks_cover_every_label(name: str) -> None:
    task = TASKS[name]
    assert set(task.checks.values()) == set(task.labels)
    assert len({normalise(text) for text in task.checks}) == len(task.checks)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_held_out_is_large_enough_and_covers_every_class(name: str) -> None:
    task = TASKS[name]
    assert len(task.held_out) >= 20 * len(task.labels)
    counts = Counter(label for _, label in task.held_out)
    assert set(counts) == set(range(len(task.labels)))
    assert min(counts.values()) >= 20
    assert max(counts.values()) - min(counts.values()) <= 2
    assert len({normalise(text) for text, _ in task.held_out}) == len(task.held_out), "duplicate held-out texts"
    assert demo.held_out_texts(name) == [text for text, _ in task.held_out]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_training_set_size_balance_and_uniqueness(name: str) -> None:
    task = TASKS[name]
    data = task.training_set(task.hyperparameters["data_seed"])
    assert 300 <= len(data) <= 1500
    counts = Counter(label for _, label in data)
    assert set(counts) == set(range(len(task.labels)))
    assert max(counts.values()) - min(counts.values()) <= len(data) // 10
    assert len({normalise(text) for text, _ in data}) == len(data), "duplicate training texts"
    assert all(text.strip() and "{" not in text and "}" not in text for text, _ in data), "unfilled template slot"


@pytest.mark.parametrize("name", ALL_TASKS)
def test_held_out_is_disjoint_from_training(name: str) -> None:
    task = TASKS[name]
    train = {normalise(text) for text, _ in task.training_set(0)}
    overlap = [text for text, _ in task.held_out if normalise(text) in train]
    assert overlap == []


@pytest.mark.parametrize("name", ALL_TASKS)
def test_check_sentences_are_not_in_training(name: str) -> None:
    # The templates can produce them ("I hate this movie" at seed 25, "We're flying to Tokyo next week."
    # at seeds 7 and 22): the generator must filter them out whatever the seed.
    task = TASKS[name]
    for seed in range(40):
        train = {normalise(text) for text, _ in task.training_set(seed)}
        assert [s for s in task.checks if normalise(s) in train] == [], f"seed {seed}"
    held_out = {normalise(text) for text, _ in task.held_out}
    assert [s for s in task.checks if normalise(s) in held_out] == []


@pytest.mark.parametrize("name", ALL_TASKS)
def test_training_set_is_deterministic(name: str) -> None:
    generate = TASKS[name].training_set
    assert generate(0) == generate(0)
    assert generate(7) == generate(7)
    assert generate(0) != generate(1)


def test_sentiment_training_set_default_seed() -> None:
    assert training_set() == training_set(0)


def test_a_check_with_an_unknown_label_is_rejected() -> None:
    with pytest.raises(DemoModelError, match="not in"):
        dataclasses.replace(TASKS["topic"], checks={"Paris is lovely in spring.": "tourism"})


# --- the build's cache and atomic output, with training replaced by a stub ---------------------


def _fake_build(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
    """Stand-in for build._build_into: writes the model files of a complete directory, trains nothing."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (target / name).write_text("{}")
    return {"task": task.name, "cache_key": key, "held_out_accuracy": 1.0, "build_seconds": 0.0}


def _left_beside(parent: Path) -> list[str]:
    """Names in ``parent`` apart from the build's lock file."""
    return sorted(p.name for p in parent.iterdir() if p.name != ".demo-model.lock")


@pytest.mark.parametrize("name", ALL_TASKS)
def test_build_is_cached_and_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls: list[Path] = []

    def fake(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
        calls.append(target)
        return _fake_build(task, target, key)

    monkeypatch.setattr(build, "_build_into", fake)
    out = tmp_path / "demo-model"
    first = demo.build_demo_model(name, out)
    assert first["cached"] is False and len(calls) == 1
    second = demo.build_demo_model(name, out)
    assert second["cached"] is True and len(calls) == 1
    assert second["cache_key"] == demo.cache_key(name)
    third = demo.build_demo_model(name, out, force=True)
    assert third["cached"] is False and len(calls) == 2
    assert _left_beside(tmp_path) == ["demo-model"], "temporary directories left"


def test_texts_file_holds_checks_and_held_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    for name, task in TASKS.items():
        out = tmp_path / name
        demo.build_demo_model(name, out)
        texts = json.loads((out / MODEL_TEXTS_FILE).read_text(encoding="utf-8"))
        assert texts == {"golden": list(task.checks), "agreement": [text for text, _ in task.held_out]}
        assert json.loads((out / build.BUILD_INFO).read_text())["cache_key"] == demo.cache_key(name)


def test_a_build_without_its_texts_file_is_not_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    out = tmp_path / "demo-model"
    demo.build_demo_model("topic", out)
    assert demo.is_complete(out)
    (out / MODEL_TEXTS_FILE).unlink()
    assert not demo.is_complete(out)
    info = demo.build_demo_model("topic", out)
    assert info["cached"] is False and (out / MODEL_TEXTS_FILE).is_file()


def test_an_incomplete_build_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
        info = _fake_build(task, target, key)
        (target / "model.safetensors").unlink()
        return info

    monkeypatch.setattr(build, "_build_into", no_weights)
    with pytest.raises(DemoModelError, match="incomplete"):
        demo.build_demo_model("topic", tmp_path / "demo-model")
    assert _left_beside(tmp_path) == []


def test_tasks_do_not_share_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    out = tmp_path / "demo-model"
    demo.build_demo_model("sentiment", out)
    assert demo.build_demo_model("topic", out)["cached"] is False
    assert json.loads((out / MODEL_TEXTS_FILE).read_text())["golden"] == list(TASKS["topic"].checks)


def test_stale_key_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    out = tmp_path / "demo-model"
    out.mkdir()
    task = TASKS["sentiment"]
    build._write_metadata(task, out, _fake_build(task, out, "stale"))
    assert demo.is_complete(out)
    (out / "leftover.txt").write_text("old build")
    info = demo.build_demo_model("sentiment", out)
    assert info["cached"] is False
    assert json.loads((out / build.BUILD_INFO).read_text())["cache_key"] == demo.cache_key("sentiment")
    assert not (out / "leftover.txt").exists()


def test_interrupted_build_leftovers_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    (tmp_path / ".demo-model.tmp-killed").mkdir()
    (tmp_path / ".demo-model.old-killed").mkdir()
    demo.build_demo_model("sentiment", tmp_path / "demo-model")
    assert _left_beside(tmp_path) == ["demo-model"]


def test_concurrent_builds_train_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow_build(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
        calls.append(target)
        time.sleep(0.5)
        return _fake_build(task, target, key)

    monkeypatch.setattr(build, "_build_into", slow_build)
    out = tmp_path / "demo-model"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: demo.build_demo_model("topic", out), range(2)))
    assert len(calls) == 1
    assert sorted(r["cached"] for r in results) == [False, True]


def test_failed_build_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
        _fake_build(task, target, key)
        raise DemoModelError("held-out accuracy 0.5")

    monkeypatch.setattr(build, "_build_into", failing)
    out = tmp_path / "demo-model"
    with pytest.raises(DemoModelError, match="accuracy"):
        demo.build_demo_model("sentiment", out)
    assert _left_beside(tmp_path) == []


def test_failed_rebuild_keeps_the_old_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "_build_into", _fake_build)
    out = tmp_path / "demo-model"
    old_key = demo.build_demo_model("sentiment", out)["cache_key"]

    def failing(task: DemoTask, target: Path, key: str) -> dict[str, Any]:
        raise DemoModelError("held-out accuracy 0.5")

    monkeypatch.setattr(build, "_build_into", failing)
    with pytest.raises(DemoModelError):
        demo.build_demo_model("sentiment", out, force=True)
    assert build.read_build_info(out)["cache_key"] == old_key
    assert _left_beside(tmp_path) == ["demo-model"]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_cache_key_depends_on_hyperparameters(name: str) -> None:
    task = TASKS[name]
    key = demo.cache_key(name)
    assert len(key) == 16 and int(key, 16) >= 0 and key == demo.cache_key(name)
    more_epochs = {**task.hyperparameters, "epochs": task.hyperparameters["epochs"] + 1}
    assert demo.cache_key(dataclasses.replace(task, hyperparameters=more_epochs)) != key


def test_cache_key_depends_on_task_and_sources(tmp_path: Path) -> None:
    sentiment = TASKS["sentiment"]
    assert demo.cache_key("sentiment") != demo.cache_key("topic")
    assert demo.cache_key(dataclasses.replace(sentiment, name="renamed")) != demo.cache_key(sentiment)
    copy = tmp_path / "sentiment.py"
    copy.write_bytes(sentiment.sources[-1].read_bytes())
    same = dataclasses.replace(sentiment, sources=(*sentiment.sources[:-1], copy))
    assert demo.cache_key(same) == demo.cache_key(sentiment), "the key must not depend on where the files are"
    copy.write_text(copy.read_text() + "\n# edited\n")
    assert demo.cache_key(same) != demo.cache_key(sentiment)


def test_cache_key_depends_on_base_model_version(monkeypatch: pytest.MonkeyPatch) -> None:
    key = demo.cache_key("topic")
    monkeypatch.setattr(build, "base_model_version", lambda: "99.0")
    assert demo.cache_key("topic") != key


@pytest.mark.parametrize("name", ALL_TASKS)
def test_task_sources_are_build_and_data_module(name: str) -> None:
    sources = [Path(p).name for p in TASKS[name].sources]
    assert sources == ["build.py", f"{name}.py"]
    assert all(Path(p).is_file() for p in TASKS[name].sources)
