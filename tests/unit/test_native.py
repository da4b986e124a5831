"""Native (C++) preprocessing: parity is measured and listed, a model that fails it is refused, auto chooses by
parity then speed, and the repository serves raw text through one graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonfleet import golden as g
from tritonfleet import layout, native
from tritonfleet.errors import ParityError, UsageError
from tritonfleet.release import ModelOptions
from tritonfleet.repo import build_repository, parse_config

CATEGORIES = {"golden", "plain", "emoji", "accents", "cjk", "urls", "whitespace", "unicode", "mixed_case", "numbers",
              "over_max_length"}


def _manifest(artifacts) -> dict:
    return json.loads((artifacts / layout.MANIFEST_FILE).read_text())


def test_parity_texts_cover_every_kind_and_the_golden_set():
    cases = native.parity_texts(5000, g.GOLDEN_TEXTS)
    assert len(cases) >= 5000 and {c for c, _ in cases} == CATEGORIES
    assert all(t.strip() for _, t in cases), "blank texts never reach a tokenizer (the server refuses them)"
    assert [t for c, t in cases if c == "golden"] == [t for t in g.GOLDEN_TEXTS if t.strip()]
    assert min(len(t.split()) for c, t in cases if c == "over_max_length") >= 600


def test_a_bpe_tokenizer_passes_parity_on_5000_texts_and_its_graph_is_kept(tiny_roberta_artifacts):
    rep = _manifest(tiny_roberta_artifacts)["parity"]["native"]
    assert rep["passed"] is True and rep["op"] == "RobertaTokenizer" and rep["batchable"] is True
    assert rep["texts"] >= 5000 and rep["mismatches"] == 0 and rep["listing"] == []
    assert set(rep["categories"]) == CATEGORIES
    assert rep["labels"]["texts"] >= 200 and rep["labels"]["differ"] == 0
    assert (tiny_roberta_artifacts / layout.NATIVE_TOKENIZER_FILE).is_file()


def test_the_native_graph_truncates_and_batches_as_the_python_tokenizer_does(tiny_roberta_artifacts):
    m = _manifest(tiny_roberta_artifacts)
    sess = native.session(tiny_roberta_artifacts / layout.NATIVE_TOKENIZER_FILE)
    texts = ["word " * 300, "short", "Ça coûte 5€ 😊", "東京は晴れです  \t end"]
    want = native.python_ids(tiny_roberta_artifacts / "tokenizer" / "tokenizer.json", texts, m["max_length"])
    assert native.native_ids(sess, texts) == want
    assert len(want[0]) == m["max_length"]
    ids, mask = native.run_texts(sess, texts)[:2]  # one padded batch: the rows are the same ids
    assert [[int(i) for i, k in zip(r, mk, strict=True) if k] for r, mk in zip(ids, mask, strict=True)] == want


def test_a_tokenizer_that_differs_is_listed_and_refused(tiny_artifacts, tmp_path):
    rep = _manifest(tiny_artifacts)["parity"]["native"]
    assert rep["supported"] is True and rep["op"] == "BertTokenizer"
    assert rep["passed"] is False and rep["mismatches"] > 0
    assert rep["mismatches"] == sum(c["mismatches"] for c in rep["categories"].values())
    first = rep["listing"][0]
    assert first["python_ids"] != first["native_ids"] and first["category"] in CATEGORIES
    assert not (tiny_artifacts / layout.NATIVE_TOKENIZER_FILE).exists()
    opts = ModelOptions(formats=("torchscript", "onnx", "int8", "int8-static"), preprocessing="native")
    with pytest.raises(ParityError, match="native preprocessing refused: native parity failed"):
        build_repository([("sentiment", tiny_artifacts, opts)], tmp_path / "repo")
    assert not (tmp_path / "repo").exists(), "a refused build leaves nothing"
    auto = build_repository([("sentiment", tiny_artifacts, ModelOptions(formats=opts.formats))], tmp_path / "auto")
    assert auto.models[0].options["preprocessing"] == "python"
    assert auto.models[0].parity["native"]["passed"] is False, "release.json records the parity figures"


PASSED = {"passed": True, "reason": "equal", "speed": {"python_texts_per_s": 100.0, "native_texts_per_s": 300.0}}


def test_the_choice_is_parity_first_then_measured_speed():
    assert native.resolve("python", "onnx", "python", PASSED)[0] == "python"
    assert native.resolve("auto", "onnx", "python", PASSED)[0] == "native"
    slower = {**PASSED, "speed": {"python_texts_per_s": 300.0, "native_texts_per_s": 100.0}}
    assert native.resolve("auto", "onnx", "python", slower) == (
        "python", f"auto: parity passed but the python path's preprocessing is faster ({slower['speed']})")
    failed = {**PASSED, "passed": False, "reason": "3 of 5000 texts tokenize differently"}
    assert native.resolve("auto", "int8", "python", failed)[0] == "python", "parity first, however fast"
    with pytest.raises(ParityError, match="3 of 5000"):
        native.resolve("native", "int8", "python", failed)
    with pytest.raises(ParityError, match="did not measure"):
        native.resolve("native", "onnx", "python", None)
    assert native.resolve("auto", "torchscript", "python", PASSED)[0] == "python"
    with pytest.raises(UsageError, match="native preprocessing puts the tokenizer ops"):
        ModelOptions.from_dict({"format": "torchscript", "preprocessing": "native"})


def test_a_native_repository_takes_raw_text_in_a_two_step_ensemble(tiny_roberta_artifacts, tmp_path):
    base = {"formats": ("onnx", "int8-static"), "format": "int8-static", "sub_batch_size": 4}
    release = build_repository([("sentiment", tiny_roberta_artifacts, ModelOptions(**base, preprocessing="native"))],
                               tmp_path / "py")
    names = layout.MODELS
    assert release.models[0].options["preprocessing"] == "native"
    assert release.as_json()["models"][0]["triton_models"] == [names.ensemble, names.classifier, names.postprocess]
    assert not (tmp_path / "py" / names.tokenizer).exists()
    ens = parse_config(layout.config_path(tmp_path / "py", names.ensemble).read_text())
    assert [s.model_name for s in ens.ensemble_scheduling.step] == [names.classifier, names.postprocess]
    clf = parse_config(layout.config_path(tmp_path / "py", names.classifier).read_text())
    assert [(i.name, i.data_type) for i in clf.input] == [(layout.TEXT, mc.TYPE_STRING)]
    runner = json.loads(clf.parameters["runner"].string_value)
    assert runner["native"] is True and runner["model_file"] == layout.NATIVE_MODEL_FILE
    version = layout.version_dir(tmp_path / "py", names.classifier)
    assert {p.name for p in version.iterdir()} >= {layout.NATIVE_MODEL_FILE, "model.py", "text_input.py"}
    # the merged graph: raw text in, the export's logits out, equal to the export on the python path's ids
    m = _manifest(tiny_roberta_artifacts)
    texts = ["I love this", "worst delivery ever 😡", "word " * 200]
    sess = native.session(version / layout.NATIVE_MODEL_FILE)
    from tritonfleet.convert import onnx_runner

    plain = onnx_runner(tiny_roberta_artifacts / layout.ONNX_INT8_STATIC_FILE, threads=1)
    for text, ids in zip(texts, native.python_ids(tiny_roberta_artifacts / "tokenizer" / "tokenizer.json", texts,
                                                  m["max_length"]), strict=True):
        arr = np.asarray([ids], dtype=np.int64)
        assert np.array_equal(native.run_texts(sess, [text])[0][0], plain(arr, np.ones_like(arr))[0])

    ort = build_repository([("sentiment", tiny_roberta_artifacts,
                             ModelOptions(**{**base, "sub_batch_size": None}, preprocessing="native",
                                          backend="onnxruntime", instance_kind="KIND_GPU"))], tmp_path / "ort")
    cfg = parse_config(layout.config_path(tmp_path / "ort", names.classifier).read_text())
    assert cfg.backend == "onnxruntime" and cfg.default_model_filename == layout.NATIVE_MODEL_FILE
    assert list(cfg.model_operations.op_library_filename) == [ModelOptions().native_op_library]
    assert ort.models[0].options["preprocessing"] == "native"
