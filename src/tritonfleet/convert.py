"""`tritonfleet convert`: export a Hugging Face sequence classifier and prove each export against eager.

Exports:
- TorchScript, the article's way: torch.jit.trace through ModelTorchTraceAdapter;
- ONNX with dynamic batch and sequence axes;
- with ONNX, the native (C++) tokenizer graph when it passes parity with the python tokenizer (`native.py`);
- optionally int8 ONNX (onnxruntime dynamic quantization) and int8-static ONNX (calibrated QDQ, per-channel
  weights, MatMul only): its fixed activation scales make it batch-invariant, which is proved bit for bit.

Every fp32 export must match the eager model on the golden set (single texts and padded batches at sizes and
lengths other than the traced one) within `atol` with identical labels. int8 must agree on labels with eager
on at least `int8_min_agreement` of the agreement texts, which the caller gives (this module knows no data
set); int8-static is calibrated on generated texts that are none of those (`calibration.py`). Everything is
written to a scratch directory and renamed into place at the end: a failed conversion
leaves no partial artifacts. The options are `release.ModelOptions` (its conversion stage).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, layout, native
from . import golden as g
from .calibration import calibration_texts
from .errors import ParityError, ReleaseError, UsageError
from .release import CONVERT, ModelOptions, file_checksums
from .util import atomic_directory, step

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "cardiffnlp/twitter-roberta-base-sentiment"

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]

__all__ = ["DEFAULT_MODEL", "ParityError", "convert", "load_manifest"]


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def load_model(model: str, revision: str | None = None) -> tuple[Any, Any]:
    """Load any AutoModelForSequenceClassification and its tokenizer, from a hub id or a local directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = {}
    if revision:
        kwargs["revision"] = revision
    with step(f"Loading tokenizer and model {model}"):
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
            # Eager attention traces to a graph that is valid at every batch size and sequence length.
            clf = AutoModelForSequenceClassification.from_pretrained(
                model, attn_implementation="eager", **kwargs
            )
        except OSError as exc:
            raise UsageError(
                f"cannot load {model!r}: {' '.join(str(exc).split())} (a hub id needs network access; on an "
                "air-gapped host pass a local model directory)") from None
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"{model!r} has no fast tokenizer (tokenizer.json); the server needs one")
    clf.eval()
    return clf, tokenizer


def resolve_max_length(tokenizer: Any, config: Any, requested: int | None) -> int:
    if requested:
        return int(requested)
    tok_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if 0 < tok_max < 100_000:
        return tok_max
    positions = int(getattr(config, "max_position_embeddings", 512))
    # RoBERTa-style models reserve padding_idx + 1 positions.
    offset = 2 if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"} else 0
    return positions - offset


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def eager_runner(model: Any) -> Runner:
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.logits.float().numpy()

    return run


def torchscript_runner(module: Any) -> Runner:
    import torch

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()

    return run


def onnx_runner(path: Path, threads: int = 0) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return sess.run([layout.LOGITS], {layout.INPUT_IDS: ids, layout.ATTENTION_MASK: mask})[0]

    return run


def parity_cases(texts: Sequence[str], batches: Sequence[Sequence[int]]) -> list[list[int]]:
    """Every text alone (its natural length, batch 1), then the padded batches."""
    return [[i] for i in range(len(texts))] + [list(b) for b in batches]


def check_parity(
    name: str,
    candidate: Runner,
    reference: Runner,
    tokenizer: Any,
    max_length: int,
    atol: float,
    texts: Sequence[str] = g.GOLDEN_TEXTS,
    batches: Sequence[Sequence[int]] = g.GOLDEN_BATCHES,
) -> dict[str, Any]:
    """Compare an export with the eager model; raise ParityError naming the first text that disagrees."""
    worst = 0.0
    shapes: list[list[int]] = []
    for case in parity_cases(texts, batches):
        case_texts = [texts[i] for i in case]
        ids, mask = encode(tokenizer, case_texts, max_length)
        shapes.append(list(ids.shape))
        ref = reference(ids, mask)
        got = candidate(ids, mask)
        if got.shape != ref.shape:
            raise ParityError(f"{name}: output shape {got.shape} != eager {ref.shape} for input {ids.shape}")
        diff = np.abs(got - ref).max(axis=-1)
        for row, text in enumerate(case_texts):
            d = float(diff[row])
            worst = max(worst, d)
            if not d <= atol or int(got[row].argmax()) != int(ref[row].argmax()):
                raise ParityError(
                    f"{name} parity check failed on text {text[:80]!r} (input shape {list(ids.shape)}): "
                    f"max |logit difference| = {d:.3g} (tolerance {atol:g}), "
                    f"label {int(got[row].argmax())} vs eager {int(ref[row].argmax())}"
                )
    logger.info("%s parity OK: %d cases, shapes %s, max |logit diff| %.2e", name, len(shapes),
                sorted({tuple(s) for s in shapes}), worst)
    return {"max_abs_logit_diff": worst, "cases": len(shapes), "atol": atol, "input_shapes": shapes}


def parity_lines(parity: dict[str, dict[str, Any]]) -> list[str]:
    """One line per check of a manifest's parity report, as `tritonfleet convert` prints it. The reports differ by
    kind: logits (torchscript, onnx), labels (int8, int8-static), and the native tokenizer, which may fail its
    parity without failing the conversion (`native.resolve` then refuses native preprocessing)."""
    lines = []
    for name, report in parity.items():
        if "label_agreement" in report:
            figure = f"parity OK: label agreement {report['label_agreement']:.2%} on {report['texts']} texts"
        elif "max_abs_logit_diff" in report:
            figure = f"parity OK: max |logit diff| {report['max_abs_logit_diff']:.1e} over {report['cases']} cases"
        elif report.get("passed"):
            figure = f"parity OK: {report.get('reason', '')}"
        else:
            figure = f"parity not met (preprocessing native is refused, auto serves python): {report.get('reason')}"
        lines.append(f"{name:<12} {figure}")
    return lines


def label_agreement(candidate: Runner, reference: Runner, tokenizer: Any, texts: Sequence[str],
                    max_length: int) -> tuple[float, list[str]]:
    """Share of texts whose label is the same under both runners, and the texts that differ."""
    differ: list[str] = []
    for text in texts:
        ids, mask = encode(tokenizer, [text], max_length)
        if int(candidate(ids, mask)[0].argmax()) != int(reference(ids, mask)[0].argmax()):
            differ.append(text)
    return 1.0 - len(differ) / max(1, len(texts)), differ


def export_torchscript(adapter: Any, tokenizer: Any, shape: tuple[int, int], path: Path) -> Any:
    import torch

    gen = torch.Generator().manual_seed(0)
    vocab = int(getattr(tokenizer, "vocab_size", 1000))
    ids = torch.randint(0, vocab, shape, generator=gen)
    mask = torch.ones_like(ids)
    with step(f"Tracing TorchScript at input shape {list(shape)}"), torch.no_grad():
        traced = torch.jit.trace(adapter, (ids, mask), check_trace=False)
    torch.jit.save(traced, str(path))
    return torch.jit.load(str(path)).eval()


def export_onnx(adapter: Any, tokenizer: Any, shape: tuple[int, int], path: Path, opset: int) -> None:
    import torch
    from torch.export import Dim

    # Example inputs at batch 2 and a short length: the exporter must not specialise on either.
    ids, mask = (torch.from_numpy(a) for a in encode(tokenizer, ["an example text", "another one"], 32))
    batch, seq = Dim("batch", min=1, max=4096), Dim("sequence", min=1, max=8192)
    dynamic = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with step(f"Exporting ONNX (opset {opset}, dynamic batch and sequence axes)"), torch.no_grad():
        program = torch.onnx.export(
            adapter,
            (ids, mask),
            input_names=[layout.INPUT_IDS, layout.ATTENTION_MASK],
            output_names=[layout.LOGITS],
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            external_data=False,
        )
        program.save(str(path), external_data=False)


def quantize_int8(src: Path, dst: Path, per_channel: bool = True) -> None:
    """onnxruntime dynamic quantization: int8 weights, activations quantized at run time.

    Per-channel weight scales (one per output column) keep the labels of the demo model identical to fp32 on
    all 100 agreement texts, where one scale per tensor changed 2 of them; the CPU speed is the same.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantizer logs one line per tensor at INFO
    scales = "per-channel" if per_channel else "per-tensor"
    try:
        with step(f"Quantizing ONNX to int8 (onnxruntime dynamic quantization, {scales} weight scales)"):
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=per_channel)
    finally:
        root.setLevel(level)


def quantize_int8_static(src: Path, dst: Path, samples: Sequence[tuple[np.ndarray, np.ndarray]],
                         per_channel: bool = True) -> None:
    """onnxruntime static quantization: QDQ, int8 weights (per output channel) and uint8 activations whose scales
    are fixed by calibration (MinMax over `samples`, one text per sample), MatMul with constant weights only.

    Fixed scales make a text's scores independent of the texts batched with it, unlike dynamic quantization.
    uint8 activations (U8S8, as dynamic quantization uses): with int8 activations (S8S8) the roberta-base export
    ran 4-7x slower on the build machine's CPU (AVX-512 VNNI), 4.2 against 28-29 texts/s at one text per run.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            pair = next(self._it, None)
            return None if pair is None else {layout.INPUT_IDS: pair[0], layout.ATTENTION_MASK: pair[1]}

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with step(f"Quantizing ONNX to int8-static (QDQ, calibrated on {len(samples)} texts, MatMul only)"):
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul"], per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


def batch_invariance(runner: Runner, tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Whether each text's logits are bit-identical alone (its own length) and inside a padded batch of all the
    texts. Returns the figures and the texts that differ."""
    ids, mask = encode(tokenizer, texts, max_length)
    batched = runner(ids, mask)
    differ = []
    for row, text in enumerate(texts):
        one_ids, one_mask = encode(tokenizer, [text], max_length)
        if not np.array_equal(runner(one_ids, one_mask)[0], batched[row]):
            differ.append(text)
    return {"bit_identical": not differ, "texts": len(texts), "batch_shape": list(ids.shape), "differ": differ}


def quantized_agreement(name: str, runner: Runner, eager: Runner, tokenizer: Any, texts: Sequence[str],
                        max_length: int, opts: ModelOptions) -> dict[str, Any]:
    """A quantized export's label agreement with eager; ParityError below `opts.int8_min_agreement`."""
    with step(f"Measuring {name} label agreement on {len(texts)} texts"):
        agree, differ = label_agreement(runner, eager, tokenizer, texts, max_length)
    logger.info("%s label agreement with eager: %.4f (%d texts)", name, agree, len(texts))
    if agree < opts.int8_min_agreement:
        raise ParityError(
            f"{name} label agreement {agree:.4f} is below the threshold {opts.int8_min_agreement} "
            f"({len(differ)} of {len(texts)} texts differ" + (f", first: {differ[0][:80]!r})" if differ else ")"))
    return {"label_agreement": agree, "texts": len(texts), "disagreements": differ,
            "min_agreement": opts.int8_min_agreement, "per_channel": opts.int8_per_channel}


def convert(model: str, output: Path, options: ModelOptions | None = None, *, revision: str | None = None,
            golden_texts: Sequence[str] = (), agreement_texts: Sequence[str] = (), key: str = "",
            source: str = "", adapter_factory: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Convert `model` (hub id or directory) into `output`; return the manifest.

    The golden file holds the built-in golden texts and `golden_texts`; int8 must agree with eager on the golden
    texts and `agreement_texts`. `key` and `source` (the conversion key and the model's identity, see
    `release.conversion_key`) are recorded in the manifest. Raises ParityError on a parity failure and UsageError
    on bad options; either way `output` is left as it was.
    """
    from .adapter import ModelTorchTraceAdapter

    opts = options or ModelOptions()
    opts.validate()
    t0 = time.perf_counter()
    clf, tokenizer = load_model(model, revision)
    max_length = resolve_max_length(tokenizer, clf.config, opts.max_length)
    labels = [clf.config.id2label[i] for i in range(clf.config.num_labels)]
    logger.info("Model: %d labels %s, max length %d tokens", len(labels), labels, max_length)
    adapter = (adapter_factory or ModelTorchTraceAdapter)(clf)
    eager = eager_runner(clf)
    golden = list(dict.fromkeys([*g.GOLDEN_TEXTS, *golden_texts]))
    # The built-in batches (indices into GOLDEN_TEXTS), and with extra golden texts one batch of all of them.
    batches = [*g.GOLDEN_BATCHES, *([list(range(len(golden)))] if len(golden) > len(g.GOLDEN_TEXTS) else [])]
    trace_shape = (opts.trace_batch, opts.trace_length)
    parity: dict[str, Any] = {}

    def check(name: str, runner: Runner) -> dict[str, Any]:
        return check_parity(name, runner, eager, tokenizer, max_length, opts.atol, golden, batches)

    with atomic_directory(output) as out:
        tokenizer.save_pretrained(str(out / layout.TOKENIZER_DIR))
        if not (out / layout.TOKENIZER_DIR / "tokenizer.json").is_file():
            raise ReleaseError("the tokenizer did not save a tokenizer.json")
        if "torchscript" in opts.formats:
            ts = export_torchscript(adapter, tokenizer, trace_shape, out / layout.TORCHSCRIPT_FILE)
            parity["torchscript"] = check("TorchScript", torchscript_runner(ts))
        if "onnx" in opts.formats:
            export_onnx(adapter, tokenizer, trace_shape, out / layout.ONNX_FILE, opts.opset)
            parity["onnx"] = check("ONNX", onnx_runner(out / layout.ONNX_FILE))
            with step(f"Measuring native (C++) preprocessing parity on {opts.native_parity_texts} texts"):
                parity["native"], graph = native.measure_parity(
                    tokenizer, out / layout.TOKENIZER_DIR / "tokenizer.json", max_length, golden,
                    opts.native_parity_texts, out / layout.ONNX_FILE)
            if graph is not None and parity["native"]["passed"]:
                graph_file = out / layout.NATIVE_TOKENIZER_FILE
                graph_file.write_bytes(graph.SerializeToString())
        quantized: dict[str, Runner] = {}
        texts = list(dict.fromkeys([*golden, *agreement_texts]))
        if "int8" in opts.formats:
            quantize_int8(out / layout.ONNX_FILE, out / layout.ONNX_INT8_FILE, opts.int8_per_channel)
            quantized["int8"] = onnx_runner(out / layout.ONNX_INT8_FILE)
            parity["int8"] = quantized_agreement("int8", quantized["int8"], eager, tokenizer, texts, max_length, opts)
        if "int8-static" in opts.formats:
            calib, dropped = calibration_texts(opts.int8_calibration_texts, exclude=texts)
            samples = [encode(tokenizer, [t], max_length) for t in calib]
            quantize_int8_static(out / layout.ONNX_FILE, out / layout.ONNX_INT8_STATIC_FILE, samples,
                                 opts.int8_per_channel)
            run_static = onnx_runner(out / layout.ONNX_INT8_STATIC_FILE)
            rep = quantized_agreement("int8-static", run_static, eager, tokenizer, texts, max_length, opts)
            servable = [t for t in golden if g.is_servable(t)]
            invariance = batch_invariance(run_static, tokenizer, servable, max_length)
            if not invariance["bit_identical"]:
                raise ParityError(f"int8-static is not batch-invariant: {len(invariance['differ'])} of "
                                  f"{len(servable)} texts score differently alone and in a batch of shape "
                                  f"{invariance['batch_shape']}, first {invariance['differ'][0][:80]!r}")
            parity["int8-static"] = {**rep, "batch_invariance": invariance,
                                     "calibration": {"texts": len(calib), "method": "MinMax", "format": "QDQ",
                                                     "ops": ["MatMul"], "dropped_overlapping": dropped,
                                                     "overlap_with_checked_texts": 0}}
            quantized["int8-static"] = run_static

        with step("Writing the golden file"):
            entries = []
            for text in golden:
                ids, mask = encode(tokenizer, [text], max_length)
                logits = eager(ids, mask)[0]
                entry = g.GoldenEntry(text=text, label=labels[int(logits.argmax())],
                                      logits=[float(x) for x in logits],
                                      scores=[float(x) for x in softmax(logits)])
                for variant, run in quantized.items():
                    q = run(ids, mask)[0]
                    entry.variants[variant] = {"label": labels[int(q.argmax())],
                                               "scores": [float(x) for x in softmax(q)]}
                entries.append(entry)
            g.GoldenFile(model=model, labels=labels, max_length=max_length, entries=entries).save(
                out / layout.GOLDEN_FILE)

        manifest = {
            "tool": f"tritonfleet {__version__}",
            "conversion_key": key,
            "model": model,
            "revision": revision or "",
            "source": source,
            "options": opts.stage(CONVERT),
            "labels": labels,
            "max_length": max_length,
            "pad_token_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
            "vocab_size": int(clf.config.vocab_size),
            "parity": parity,
            "files": file_checksums(out),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (out / layout.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("Conversion done in %.1f s: %s", time.perf_counter() - t0, os.fspath(output))
    return manifest


def load_manifest(artifacts: Path) -> dict[str, Any]:
    path = Path(artifacts) / layout.MANIFEST_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReleaseError(f"no {layout.MANIFEST_FILE} in {artifacts}: run `tritonfleet convert` first") from None
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"{path} is not JSON: {exc}") from None
