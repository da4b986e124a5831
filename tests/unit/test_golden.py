"""The golden set and the golden file that the smoke test reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritonfleet import golden as g
from tritonfleet import layout
from tritonfleet.errors import ReleaseError


def test_golden_set_holds_the_required_kinds_of_text():
    texts = g.GOLDEN_TEXTS
    assert all(t in texts for t in g.ARTICLE_TEXTS)
    assert any(any(ord(c) > 0xFFFF for c in t) for t in texts), "an emoji text"
    assert "" in texts, "the empty string"
    assert len(g.LONG_TEXT.split()) > 600, "longer than the model's maximum length"


def test_golden_batches_differ_from_the_traced_shape():
    sizes = {len(b) for b in g.GOLDEN_BATCHES}
    assert sizes - {1}, "batches other than 1"
    assert all(0 <= i < len(g.GOLDEN_TEXTS) for b in g.GOLDEN_BATCHES for i in b)


@pytest.fixture(scope="module")
def gold(tiny_artifacts):
    return g.GoldenFile.load(tiny_artifacts / layout.GOLDEN_FILE)


def test_golden_file_covers_every_golden_text(gold):
    assert [e.text for e in gold.entries] == g.GOLDEN_TEXTS


@pytest.mark.parametrize("index", range(len(g.GOLDEN_TEXTS)))
def test_golden_entry_label_is_argmax_of_its_logits_and_scores_are_softmax(gold, index):
    e = gold.entries[index]
    logits = np.array(e.logits)
    assert e.label == gold.labels[int(logits.argmax())]
    z = np.exp(logits - logits.max())
    np.testing.assert_allclose(e.scores, z / z.sum(), rtol=1e-6)
    assert "int8" in e.variants and e.variants["int8"]["label"] in gold.labels


def test_golden_file_round_trips(gold, tmp_path):
    gold.save(tmp_path / "g.json")
    again = g.GoldenFile.load(tmp_path / "g.json")
    assert again == gold


def test_malformed_golden_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "golden.json"
    bad.write_text(json.dumps({"model": "x", "labels": []}))
    with pytest.raises(ReleaseError, match="malformed"):
        g.GoldenFile.load(bad)
    with pytest.raises(ReleaseError, match="does not exist"):
        g.GoldenFile.load(tmp_path / "missing.json")


def test_only_the_empty_text_is_not_servable():
    assert [t for t in g.GOLDEN_TEXTS if not g.is_servable(t)] == [""]
