"""convert: exports match eager at shapes other than the traced one; failures name the text, write nothing."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from tritonfleet import golden as g
from tritonfleet import layout
from tritonfleet.adapter import ModelTorchTraceAdapter
from tritonfleet.cli import main
from tritonfleet.convert import convert, encode, load_model, onnx_runner, parity_lines, torchscript_runner
from tritonfleet.errors import ParityError
from tritonfleet.release import FORMATS, ModelOptions


@pytest.fixture(scope="module")
def eager(tiny_model):
    return load_model(str(tiny_model))


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize(("batch", "length"), [(3, 17), (8, 64)])
def test_export_matches_eager_at_untraced_batch_and_length(tiny_artifacts, eager, fmt, batch, length):
    """Traced at [1, 100]; checked at other batch sizes and sequence lengths (the trace pitfall)."""
    import torch

    model, tokenizer = eager
    texts = [("word " * (length - 2)).strip()] + [g.GOLDEN_TEXTS[i % 4] for i in range(1, batch)]
    ids, mask = encode(tokenizer, texts, length)
    assert ids.shape == (batch, length)
    if fmt == "torchscript":
        run = torchscript_runner(torch.jit.load(str(tiny_artifacts / layout.TORCHSCRIPT_FILE)))
    else:
        run = onnx_runner(tiny_artifacts / layout.ONNX_FILE)
    with torch.no_grad():
        want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    got = run(ids, mask)
    assert np.abs(got - want).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


def test_manifest_records_parity_and_file_checksums(tiny_artifacts):
    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    assert manifest["labels"] == ["negative", "neutral", "positive"]
    for fmt in ("torchscript", "onnx"):
        assert manifest["parity"][fmt]["max_abs_logit_diff"] <= 1e-4
        shapes = {tuple(s) for s in manifest["parity"][fmt]["input_shapes"]}
        assert len({s[0] for s in shapes}) > 1 and len({s[1] for s in shapes}) > 1
    assert 0.5 <= manifest["parity"]["int8"]["label_agreement"] <= 1.0
    for name in (layout.TORCHSCRIPT_FILE, layout.ONNX_FILE, layout.ONNX_INT8_FILE, layout.GOLDEN_FILE,
                 "tokenizer/tokenizer.json"):
        assert len(manifest["files"][name]) == 64


class ShapeDependentAdapter(ModelTorchTraceAdapter):
    """Python control flow on a shape: tracing at length 100 bakes the long branch in."""

    def forward(self, input_ids, attention_mask):
        logits = super().forward(input_ids, attention_mask)
        if input_ids.shape[1] > 50:
            return logits * 2.0 + 1.0
        return logits


def test_parity_failure_names_the_text_and_keeps_old_artifacts(tiny_model, tmp_path):
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "previous.txt").write_text("the last good conversion")
    with pytest.raises(ParityError) as err:
        convert(str(tiny_model), out, ModelOptions(formats=("torchscript",), format="torchscript"),
                adapter_factory=ShapeDependentAdapter)
    assert g.GOLDEN_TEXTS[0][:20] in str(err.value)
    assert "max |logit difference|" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts"], "a scratch folder was left behind"
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def test_int8_below_threshold_fails_and_writes_nothing(tiny_model, tmp_path, monkeypatch):
    # The tiny model's random weights quantize without flipping a label: make the measured agreement 0.5.
    monkeypatch.setattr("tritonfleet.convert.label_agreement", lambda *a, **k: (0.5, ["one text", "another"]))
    out = tmp_path / "int8"
    with pytest.raises(ParityError, match=r"int8 label agreement 0.5000 is below the threshold 0.98 .*'one text'"):
        convert(str(tiny_model), out, ModelOptions(formats=("onnx", "int8")))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_cli_convert_exits_nonzero_on_unknown_format(tiny_model, tmp_path, capsys):
    code = main(["convert", "--model", str(tiny_model), "--output", str(tmp_path / "x"), "--formats", "tflite"])
    assert code == 2
    assert "formats ('tflite',): choose from torchscript, onnx, int8" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_int8_matmul_weights_have_one_zero_point_per_output_column(tiny_artifacts):
    """Every quantized MatMul carries a weight zero point per output column (per-channel), not one per tensor.

    The exporter names weights freely (val_62, ...), so the check follows the graph: MatMulInteger's fourth input
    is the weight zero point.
    """
    import onnx

    manifest = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())
    assert manifest["parity"]["int8"]["per_channel"] is True
    graph = onnx.load(str(tiny_artifacts / layout.ONNX_INT8_FILE)).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert matmuls, "the int8 model has no MatMulInteger"
    per_tensor = [n.name for n in matmuls if len(n.input) < 4 or len(dims.get(n.input[3], [])) != 1
                  or dims[n.input[3]][0] < 2]
    assert per_tensor == [], f"{len(per_tensor)} of {len(matmuls)} MatMulInteger weights are per tensor"


def test_the_parity_summary_has_a_line_for_every_check_of_every_formats_combination(tiny_artifacts):
    """Every report kind the conversion writes (logits, labels, native) prints, whichever formats made it: the
    formats' own reports, plus native's wherever onnx is exported."""
    full = json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())["parity"]
    assert set(full) == {"torchscript", "onnx", "native", "int8", "int8-static"}
    combinations = [c for n in range(1, len(FORMATS) + 1) for c in itertools.combinations(FORMATS, n)
                    if "onnx" in c or not set(c) & set(layout.QUANTIZED_FORMATS)]
    assert len(combinations) == 9
    for formats in combinations:
        parity = {name: full[name] for name in (*formats, *(("native",) if "onnx" in formats else ()))}
        lines = parity_lines(parity)
        assert [line.split()[0] for line in lines] == list(parity), formats
        assert all(" parity " in f" {line} " for line in lines), lines


def test_the_parity_summary_says_when_native_parity_was_not_met():
    report = {"native": {"supported": False, "passed": False, "reason": "no native tokenizer graph: WordPiece"}}
    assert parity_lines(report) == ["native       parity not met (preprocessing native is refused, auto serves "
                                    "python): no native tokenizer graph: WordPiece"]


def test_cli_convert_to_onnx_alone_prints_its_summary(tiny_model, tmp_path, capsys):
    """The report of 2026-12-03: `convert --formats onnx` converted, then ended in a KeyError in the summary."""
    out = tmp_path / "onnx"
    code = main(["convert", "--model", str(tiny_model), "--output", str(out), "--formats", "onnx",
                 "--native-parity-texts", "50"])
    printed = capsys.readouterr().out
    assert code == 0
    # The summary ends the output (torch.onnx prints its progress before it).
    assert [line.split()[0] for line in printed.splitlines()[-3:]] == ["onnx", "native", "artifacts:"], printed
