"""int8-static: calibrated on texts it is never judged on, and batch-invariant to the last bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritonfleet import golden as g
from tritonfleet import layout
from tritonfleet.calibration import calibration_texts, normalise
from tritonfleet.convert import encode, onnx_runner
from tritonfleet.errors import UsageError
from tritonfleet.release import ModelOptions


def test_calibration_texts_never_include_a_checked_text():
    texts, dropped = calibration_texts(300)
    banned = texts[:20] + [t.upper() + " !" for t in texts[20:40]]  # equal after normalising case and punctuation
    again, dropped = calibration_texts(300, exclude=banned)
    assert len(again) == 300 and len(set(again)) == 300
    assert dropped >= 40
    assert not {normalise(t) for t in again} & {normalise(t) for t in banned}


def _tokenizer(artifacts):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(artifacts / layout.TOKENIZER_DIR))


def _alone_and_batched(model_file, tokenizer, texts, max_length):
    run = onnx_runner(model_file, threads=1)
    batched = run(*encode(tokenizer, texts, max_length))
    alone = np.stack([run(*encode(tokenizer, [t], max_length))[0] for t in texts])
    return alone, batched


def test_int8_static_scores_are_bit_identical_alone_and_batched(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    rep = manifest["parity"]["int8-static"]
    assert rep["batch_invariance"]["bit_identical"] is True
    assert rep["calibration"]["texts"] == 64 and rep["calibration"]["overlap_with_checked_texts"] == 0
    texts = [t for t in g.GOLDEN_TEXTS if g.is_servable(t)] + ["a much longer text " * 20, "ok"]
    tok = _tokenizer(tiny_artifacts)
    alone, batched = _alone_and_batched(tiny_artifacts / layout.ONNX_INT8_STATIC_FILE, tok, texts,
                                        manifest["max_length"])
    assert np.array_equal(alone, batched), np.abs(alone - batched).max()


def test_dynamic_int8_is_not_batch_invariant_which_is_why_it_runs_one_text_per_run(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    texts = [t for t in g.GOLDEN_TEXTS if g.is_servable(t)] + ["a much longer text " * 20, "ok"]
    alone, batched = _alone_and_batched(tiny_artifacts / layout.ONNX_INT8_FILE, _tokenizer(tiny_artifacts), texts,
                                        manifest["max_length"])
    assert not np.array_equal(alone, batched)


def test_int8_static_may_run_sorted_sub_batches_and_dynamic_int8_may_not():
    formats = ("onnx", "int8", "int8-static")
    assert ModelOptions(formats=formats, format="int8-static").effective_sub_batch_size() == 0
    assert ModelOptions(formats=formats, format="int8-static", sub_batch_size=4).sub_batch_size == 4
    ModelOptions.from_dict({"formats": formats, "format": "int8-static", "sub_batch_size": 4})
    with pytest.raises(UsageError, match="one text per run"):
        ModelOptions.from_dict({"formats": formats, "format": "int8", "sub_batch_size": 4})
    with pytest.raises(UsageError, match="add onnx"):
        ModelOptions.from_dict({"formats": ["int8-static"], "format": "int8-static"})
    assert ModelOptions(formats=formats, format="int8-static", backend="onnxruntime").int8_batch_invariant()


def test_the_golden_file_has_int8_static_outputs_and_the_release_names_the_variant(tiny_artifacts, tmp_path):
    from tritonfleet.repo import build_repository, parse_config

    gold = g.GoldenFile.load(tiny_artifacts / layout.GOLDEN_FILE)
    assert all("int8-static" in e.variants for e in gold.entries)
    opts = ModelOptions(formats=("torchscript", "onnx", "int8", "int8-static"), format="int8-static",
                        sub_batch_size=4)
    release = build_repository([("sentiment", tiny_artifacts, opts)], tmp_path / "repo")
    assert release.models[0].variant == "int8-static"
    assert layout.variant_of_file(layout.ONNX_INT8_STATIC_FILE) == "int8-static"
    config = parse_config(layout.config_path(tmp_path / "repo", "sentiment_classifier").read_text())
    runner = json.loads(config.parameters["runner"].string_value)
    assert runner["model_file"] == layout.ONNX_INT8_STATIC_FILE and runner["sub_batch_size"] == 4
