"""Render the Triton models of a classifier from its conversion artifacts (`tritonfleet build-repo`, and each
model of a release).

The layout (model names, tensor names, files) comes from `layout.py`; the config texts and python models come
from the templates in the project's `model_repository/` folder, rendered once per model name. Every rendered
config.pbtxt is parsed back with Triton's ModelConfig protobuf before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import text_format

from . import layout, native
from .convert import load_manifest
from .errors import ReleaseError, UsageError
from .paths import TEMPLATE_DIR
from .release import SERVE, ModelOptions, Release, write_release
from .util import atomic_directory

logger = logging.getLogger(__name__)

#: The classifier's warm-up request and the tokenizer's length buckets (not options: no host needs others).
WARMUP_BATCH_SIZE = 1
WARMUP_SEQ_LEN = 16
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
#: The raw-text checks shared by the python models that take TEXT (the tokenizer; the native classifier runner).
TEXT_INPUT_MODULE = "text_input.py"


def _environment() -> jinja2.Environment:
    if not TEMPLATE_DIR.is_dir():
        raise ReleaseError(f"template folder {TEMPLATE_DIR} not found (set TRITONFLEET_TEMPLATE_DIR)")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _model_config_pb2() -> Any:
    """Triton's ModelConfig protobuf module (tritonclient's). Where the gRPC client cannot be imported (the GPU
    host's grpcio is older than the one tritonclient's generated code demands), the module file is loaded on its
    own: parsing a config needs protobuf only."""
    import importlib
    import importlib.util
    import sys

    try:
        return importlib.import_module("tritonclient.grpc.model_config_pb2")
    except (ImportError, RuntimeError) as exc:
        name = "tritonfleet._model_config_pb2"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.find_spec("tritonclient")
        if spec is None or spec.origin is None:
            raise ReleaseError(f"cannot parse Triton configs here: tritonclient is not importable ({exc})") from None
        path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        sys.modules[name] = module
        logger.info("Triton's ModelConfig loaded from %s (tritonclient.grpc: %s)", path, exc)
        return module


def parse_config(text: str, where: str = "config") -> Any:
    """Parse a config.pbtxt with Triton's own protobuf (a ModelConfig); raise ReleaseError naming the file."""
    try:
        return text_format.Parse(text, _model_config_pb2().ModelConfig())
    except text_format.ParseError as exc:
        raise ReleaseError(f"{where}: not a valid Triton ModelConfig: {exc}") from exc


def render_configs(manifest: dict[str, Any], opts: ModelOptions,
                   name: str = layout.DEFAULT_MODEL_NAME) -> dict[str, str]:
    """The config.pbtxt text of every Triton model of the classifier `name`, keyed by Triton model name."""
    opts.validate()
    names = layout.model_names(name)
    labels = list(manifest["labels"])
    is_native = opts.preprocessing == "native"
    batchable = bool((manifest["parity"].get("native") or {}).get("batchable", True))
    if is_native and opts.backend == "onnxruntime" and not batchable and opts.max_batch_size > 1:
        raise UsageError(f"{name}: this tokenizer's native op tokenizes one text per run, which the onnxruntime "
                         "backend cannot batch: serve it with the python backend (or max_batch_size 1)")
    tensors = {k: getattr(layout, k) for k in ("TEXT", "INPUT_IDS", "ATTENTION_MASK", "LOGITS", "LABEL", "SCORES")}
    model_file = layout.NATIVE_MODEL_FILE if is_native else layout.FORMAT_FILES[opts.format]
    ctx: dict[str, Any] = {
        "names": names,
        "t": tensors,
        "o": opts,
        "warmup": {"batch_size": WARMUP_BATCH_SIZE, "seq_len": WARMUP_SEQ_LEN},
        "num_labels": len(labels),
        "default_model_filename": None if opts.backend == "python" else model_file,
        "tokenizer_params": {"tokenizer": json.dumps({
            "text": layout.TEXT, "input_ids": layout.INPUT_IDS, "attention_mask": layout.ATTENTION_MASK,
            "max_length": manifest["max_length"], "pad_token_id": manifest["pad_token_id"],
            "max_text_bytes": opts.max_text_bytes, "length_buckets": list(LENGTH_BUCKETS),
            "tokenizer_file": f"{layout.TOKENIZER_DIR}/tokenizer.json"})},
        "classifier_params": {} if opts.backend != "python" else {"runner": json.dumps({
            "input_ids": layout.INPUT_IDS, "attention_mask": layout.ATTENTION_MASK, "logits": layout.LOGITS,
            "format": "torchscript" if opts.format == "torchscript" else "onnx",
            "native": is_native, "text": layout.TEXT, "max_text_bytes": opts.max_text_bytes, "batchable": batchable,
            "warmup": opts.warmup,
            "model_file": model_file, "pad_token_id": manifest["pad_token_id"],
            "max_length": manifest["max_length"], "threads": opts.threads, "fp16": opts.fp16,
            "vocab_size": int(manifest.get("vocab_size", 0)),
            "sub_batch_size": opts.effective_sub_batch_size()})},
        "postprocess_params": {"postprocess": json.dumps({
            "logits": layout.LOGITS, "label": layout.LABEL, "scores": layout.SCORES, "labels": labels})},
    }
    env = _environment()
    out = {}
    for role, triton_name in names.as_dict().items():
        if is_native and role == "tokenizer":
            continue  # the classifier's graph tokenizes
        text = env.get_template(f"{role}/config.pbtxt.j2").render(**ctx)
        parsed = parse_config(text, f"{triton_name}/config.pbtxt")
        if parsed.name != triton_name:
            raise ReleaseError(f"{role}/config.pbtxt.j2 renders the name {parsed.name!r}, not {triton_name!r}")
        out[triton_name] = text
    return out


def served_options(artifacts: Path, opts: ModelOptions, name: str) -> ModelOptions:
    """`opts`' serving options with the conversion options the artifacts were made with (their manifest's), and
    the preprocessing resolved (`native.resolve`: native only where the conversion's parity passed)."""
    manifest = load_manifest(artifacts)
    merged = ModelOptions.from_dict({**opts.stage(SERVE), **manifest["options"]}, f"{name} ({artifacts}) options")
    mode, why = native.resolve(merged.preprocessing, merged.format, merged.backend,
                               manifest["parity"].get("native"))
    logger.info("%s: %s preprocessing (%s)", name, mode, why)
    return dataclasses.replace(merged, preprocessing=mode)


def write_model(repo: Path, name: str, artifacts: Path, opts: ModelOptions) -> None:
    """Write the four Triton models of the classifier `name` from `artifacts` into the repository folder `repo`.
    `opts` must be `served_options(...)`: their conversion options are the artifacts' own."""
    manifest = load_manifest(artifacts)
    configs = render_configs(manifest, opts, name)
    if not opts.int8_batch_invariant():
        logger.warning("%s: the onnxruntime backend runs each dynamic batch of the int8 model in one run; its "
                       "scores then depend on the texts batched together (dynamic quantization)", name)
    model_file = layout.FORMAT_FILES[opts.format]
    if not (Path(artifacts) / model_file).is_file():
        raise UsageError(f"{artifacts} has no {model_file}: convert with the {opts.format} format first")
    names = layout.model_names(name)
    for triton_name, text in configs.items():
        layout.version_dir(repo, triton_name).mkdir(parents=True)
        layout.config_path(repo, triton_name).write_text(text)
    is_native = opts.preprocessing == "native"
    for role in ("postprocess",) if is_native else ("tokenizer", "postprocess"):
        shutil.copy2(TEMPLATE_DIR / role / layout.VERSION / "model.py",
                     layout.version_dir(repo, getattr(names, role)))
    if not is_native:
        tok_dir = layout.version_dir(repo, names.tokenizer)
        shutil.copy2(TEMPLATE_DIR / "common" / TEXT_INPUT_MODULE, tok_dir)
        (tok_dir / layout.TOKENIZER_DIR).mkdir()
        shutil.copy2(Path(artifacts) / layout.TOKENIZER_DIR / "tokenizer.json",
                     tok_dir / layout.TOKENIZER_DIR / "tokenizer.json")
    clf = layout.version_dir(repo, names.classifier)
    if is_native:
        graph = Path(artifacts) / layout.NATIVE_TOKENIZER_FILE
        if not graph.is_file():
            raise ReleaseError(f"{artifacts} has no {layout.NATIVE_TOKENIZER_FILE}: native preprocessing needs a "
                               "conversion whose native parity passed")
        import onnx

        merged = native.merge(onnx.load(str(graph)), Path(artifacts) / model_file)
        onnx.save(merged, str(clf / layout.NATIVE_MODEL_FILE))
    else:
        shutil.copy2(Path(artifacts) / model_file, clf / model_file)
    if opts.backend == "python":
        shutil.copy2(TEMPLATE_DIR / "classifier" / layout.VERSION / "model.py", clf)
        if is_native:
            shutil.copy2(TEMPLATE_DIR / "common" / TEXT_INPUT_MODULE, clf)


def build_repository(models: list[tuple[str, Path, ModelOptions]], output: Path) -> Release:
    """Write a release of `models` ((name, conversion artifacts, options)) to `output`, atomically (scratch
    folder, then one rename): `tritonfleet build-repo`. Returns it, opened and verified."""
    with atomic_directory(output) as repo:
        write_release(repo, models)
    release = Release.open(output)
    logger.info("Model repository written to %s (%s; release id %s)", output,
                ", ".join(f"{n}: {o.backend} {o.format}" for n, _, o in models), release.id[:12])
    return release
