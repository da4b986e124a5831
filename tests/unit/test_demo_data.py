"""Fast checks of the demo model's data set and of the build's caching (no training)."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tritonfleet import demo_model
from tritonfleet.demo_data import ARTICLE_SENTENCES, HELD_OUT, LABELS, normalise, training_set


def test_labels_are_the_issue_labels() -> None:
    assert LABELS == ("negative", "neutral", "positive")


def test_article_sentences() -> None:
    assert ARTICLE_SENTENCES == {
        "I love you so much!": "positive",
        "I hate this movie": "negative",
        "Ok, let's see tomorrow.": "neutral",
    }


def test_held_out_is_large_enough_and_covers_every_class() -> None:
    assert len(HELD_OUT) >= 60
    counts = Counter(label for _, label in HELD_OUT)
    assert set(counts) == {0, 1, 2}
    assert min(counts.values()) >= 20
    assert len({normalise(text) for text, _ in HELD_OUT}) == len(HELD_OUT), "duplicate held-out texts"


def test_training_set_size_balance_and_uniqueness() -> None:
    data = training_set()
    assert 300 <= len(data) <= 1500
    counts = Counter(label for _, label in data)
    assert set(counts) == {0, 1, 2}
    assert max(counts.values()) - min(counts.values()) <= len(data) // 10
    assert len({normalise(text) for text, _ in data}) == len(data), "duplicate training texts"
    assert all(text.strip() and "{" not in text for text, _ in data), "unfilled template slot"


def test_held_out_is_disjoint_from_training() -> None:
    train = {normalise(text) for text, _ in training_set()}
    overlap = [text for text, _ in HELD_OUT if normalise(text) in train]
    assert overlap == []


def test_article_sentences_are_not_in_training() -> None:
    # The templates can produce them ("I hate this movie" turns up at seed 25): the generator must
    # filter them out whatever the seed.
    for seed in range(40):
        train = {normalise(text) for text, _ in training_set(seed)}
        assert [s for s in ARTICLE_SENTENCES if normalise(s) in train] == [], f"seed {seed}"
    assert [s for s in ARTICLE_SENTENCES if normalise(s) in {normalise(t) for t, _ in HELD_OUT}] == []


def test_training_set_is_deterministic() -> None:
    assert training_set(0) == training_set(0)
    assert training_set(7) == training_set(7)
    assert training_set(0) != training_set(1)


# --- the build's cache and atomic output, with training replaced by a stub ---------------------


def _fake_build(target: Path, key: str) -> dict[str, Any]:
    """Stand-in for demo_model._build_into: writes the files of a complete model directory."""
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (target / name).write_text("{}")
    info = {"cache_key": key, "held_out_accuracy": 1.0, "build_seconds": 0.0}
    (target / demo_model.BUILD_INFO).write_text(json.dumps(info))
    return info


def _left_beside(parent: Path) -> list[str]:
    """Names in ``parent`` apart from the build's lock file."""
    return sorted(p.name for p in parent.iterdir() if p.name != ".demo-model.lock")


def test_build_is_cached_and_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def build(target: Path, key: str) -> dict[str, Any]:
        calls.append(target)
        return _fake_build(target, key)

    monkeypatch.setattr(demo_model, "_build_into", build)
    out = tmp_path / "demo-model"
    first = demo_model.build_demo_model(out)
    assert first["cached"] is False and len(calls) == 1
    second = demo_model.build_demo_model(out)
    assert second["cached"] is True and len(calls) == 1
    assert second["cache_key"] == demo_model.cache_key()
    third = demo_model.build_demo_model(out, force=True)
    assert third["cached"] is False and len(calls) == 2
    assert _left_beside(tmp_path) == ["demo-model"], "temporary directories left"


def test_stale_key_rebuilds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_model, "_build_into", _fake_build)
    out = tmp_path / "demo-model"
    out.mkdir()
    _fake_build(out, "stale")
    (out / "leftover.txt").write_text("old build")
    info = demo_model.build_demo_model(out)
    assert info["cached"] is False
    assert json.loads((out / demo_model.BUILD_INFO).read_text())["cache_key"] == demo_model.cache_key()
    assert not (out / "leftover.txt").exists()


def test_interrupted_build_leftovers_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_model, "_build_into", _fake_build)
    (tmp_path / ".demo-model.tmp-killed").mkdir()
    (tmp_path / ".demo-model.old-killed").mkdir()
    demo_model.build_demo_model(tmp_path / "demo-model")
    assert _left_beside(tmp_path) == ["demo-model"]


def test_concurrent_builds_train_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow_build(target: Path, key: str) -> dict[str, Any]:
        calls.append(target)
        time.sleep(0.5)
        return _fake_build(target, key)

    monkeypatch.setattr(demo_model, "_build_into", slow_build)
    out = tmp_path / "demo-model"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: demo_model.build_demo_model(out), range(2)))
    assert len(calls) == 1
    assert sorted(r["cached"] for r in results) == [False, True]


def test_failed_build_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(target: Path, key: str) -> dict[str, Any]:
        _fake_build(target, key)
        raise demo_model.DemoModelError("held-out accuracy 0.5")

    monkeypatch.setattr(demo_model, "_build_into", failing)
    out = tmp_path / "demo-model"
    with pytest.raises(demo_model.DemoModelError, match="accuracy"):
        demo_model.build_demo_model(out)
    assert _left_beside(tmp_path) == []


def test_cache_key_depends_on_hyperparameters(monkeypatch: pytest.MonkeyPatch) -> None:
    key = demo_model.cache_key()
    assert len(key) == 64 and key == demo_model.cache_key()
    monkeypatch.setitem(demo_model.HYPERPARAMETERS, "epochs", demo_model.HYPERPARAMETERS["epochs"] + 1)
    assert demo_model.cache_key() != key
