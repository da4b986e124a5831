"""A model release, built, named, verified and found in one place.

A release is a Triton model repository that serves one or more named classifiers. Next to the models it holds:

    SHA256SUMS            the sha256 of every other file, in `sha256sum` format:
                          `sha256sum --check --strict SHA256SUMS` verifies the release on any host
    release.json          the spec it was built from (models, sources, options), its key, labels, parity figures
    <model>/golden.json   each model's golden file (the smoke test reads it; Triton ignores files there)

Two names identify it:
- its **key**: the sha256 of its inputs (each model's source and options, the tool version, the builder).
  The key addresses the build cache: the same inputs are never converted twice.
- its **id**: the sha256 of its SHA256SUMS, i.e. of its contents. Hosts keep releases under their id and
  Ansible compares ids; bytes that differ give another id.

This module is the one owner of: the options of a model (conversion and serving, one set of defaults, types
and help), the keys, the checksums, the release manifest, and the record of which release a fleet serves.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import __version__, layout
from .errors import NotBuiltError, ReleaseError, UsageError  # noqa: F401 - NotBuiltError is part of the API
from .util import atomic_directory, step

logger = logging.getLogger(__name__)

SUMS_FILE = "SHA256SUMS"
RELEASE_FILE = "release.json"

# --- checksums and keys: the one implementation ----------------------------------------------------------

_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_CHUNK):
            h.update(block)
    return h.hexdigest()


def _is_listed(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return path.is_file() and "__pycache__" not in rel.parts and rel.as_posix() != SUMS_FILE


def file_checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (SHA256SUMS itself and __pycache__ left out), by POSIX path, sorted
    bytewise (as `LC_ALL=C sort`)."""
    root = Path(root)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix().encode()):
        if not _is_listed(path, root):
            continue
        rel = path.relative_to(root).as_posix()
        if "\n" in rel or "\\" in rel:
            raise ReleaseError(f"{root}: the file name {rel!r} cannot be listed in {SUMS_FILE}")
        out[rel] = file_sha256(path)
    return out


def sums_text(checksums: Mapping[str, str]) -> str:
    """The SHA256SUMS text of `checksums`: one `<sha256>  <path>` line per file, as `sha256sum` writes it."""
    return "".join(f"{digest}  {rel}\n" for rel, digest in checksums.items())


def sums_id(sums: str | bytes) -> str:
    """The id of a SHA256SUMS text: its sha256. A release's id; a tree's checksum."""
    return hashlib.sha256(sums.encode() if isinstance(sums, str) else sums).hexdigest()


def tree_checksum(root: Path) -> str:
    """One sha256 for a directory tree, names and contents: the id of the SHA256SUMS text of its files.

    For a release this is its id (the sha256 of its SHA256SUMS file). `tritonfleet checksum DIR` prints it.
    """
    return sums_id(sums_text(file_checksums(root)))


def content_key(data: Any) -> str:
    """The key of some inputs: the sha256 (16 hex digits) of their canonical JSON. Every cache key is this."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the options of a model: declared once ----------------------------------------------------------------
# Every option of a model is a field of ModelOptions. The CLI's flags (`convert`, `build-repo`), the release
# spec's `options`, the Ansible role's `model_conversion_options` (its argument_specs are generated from here and
# a unit test keeps them equal) and the benchmark's candidates all come from these fields.

CONVERT = "convert"  # the option changes the conversion artifacts (part of the conversion key)
SERVE = "serve"  # the option changes only the model repository built from them

FORMATS = ("torchscript", "onnx", "int8", "int8-static")
BACKENDS = ("python", "onnxruntime", "pytorch")
RUNNER_FORMATS = ("onnx", "int8", "int8-static", "torchscript")
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")
PREPROCESSING = ("python", "native", "auto")


def _option(default: Any, help: str, stage: str, choices: tuple[Any, ...] | None = None) -> Any:
    meta = {"help": help, "stage": stage, "choices": choices}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelOptions:
    """How one model is converted and served. Defaults suit a small CPU host; `validate()` says what is wrong."""

    # conversion
    formats: tuple[str, ...] = _option(
        ("torchscript", "onnx"), "export formats: torchscript, onnx, int8 (dynamic quantization), int8-static "
        "(calibrated, batch-invariant); both int8 formats are quantized from onnx", CONVERT, FORMATS)
    max_length: int = _option(0, "token limit (0: the tokenizer's own)", CONVERT)
    atol: float = _option(1e-4, "largest |logit difference| an fp32 export may have from the eager model", CONVERT)
    int8_min_agreement: float = _option(
        0.98, "share of check texts on which each int8 format must give the eager model's label", CONVERT)
    int8_per_channel: bool = _option(
        True, "int8 weight scales per output channel (--no-int8-per-channel: one per tensor, coarser)", CONVERT)
    int8_calibration_texts: int = _option(
        256, "int8-static: generated calibration texts (never a golden or agreement text)", CONVERT)
    native_parity_texts: int = _option(
        5000, "texts on which the native (C++) tokenizer graph must give the python tokenizer's ids and labels",
        CONVERT)
    opset: int = _option(17, "ONNX opset", CONVERT)
    trace_batch: int = _option(1, "batch size of the TorchScript trace's example input", CONVERT)
    trace_length: int = _option(100, "sequence length of the TorchScript trace's example input", CONVERT)
    # serving
    backend: str = _option(
        "python", "classifier backend (python: the runner for CPU hosts without NVIDIA's image)", SERVE, BACKENDS)
    format: str = _option("onnx", "which export the classifier serves", SERVE, RUNNER_FORMATS)
    max_batch_size: int = _option(64, "max_batch_size of the model's Triton models", SERVE)
    preferred_batch_sizes: tuple[int, ...] = _option((), "dynamic batcher's preferred batch sizes", SERVE)
    max_queue_delay_us: int = _option(2000, "dynamic batcher's queue delay (microseconds)", SERVE)
    max_queue_size: int = _option(
        1024, "requests a step may queue; past it Triton refuses at once (UNAVAILABLE; 0: unbounded)", SERVE)
    queue_timeout_us: int = _option(
        0, "a request that waited this long in a step's queue is refused (microseconds; 0: no limit)", SERVE)
    instance_count: int = _option(1, "instances of the classifier", SERVE)
    instance_kind: str = _option("KIND_CPU", "instance kind of the classifier", SERVE, INSTANCE_KINDS)
    preprocessing: str = _option(
        "auto", "tokenization: python (a python tokenizer model in the ensemble), native (onnxruntime-extensions "
        "C++ tokenizer ops in the classifier's ONNX graph; only where the conversion's parity passed), auto (native "
        "where parity passed and it measured faster, else python)", SERVE, PREPROCESSING)
    native_op_library: str = _option(
        "/opt/tritonserver/lib/libortextensions.so", "native preprocessing on the onnxruntime backend: the "
        "onnxruntime-extensions shared library on the serving host (model_operations op_library_filename)", SERVE)
    tokenizer_instance_count: int = _option(1, "instances of the tokenizer", SERVE)
    threads: int = _option(0, "runner intra-op threads (0: the runtime's default)", SERVE)
    sub_batch_size: int | None = _option(
        None, "python runner: sort each batch by length, run this many texts at a time (0: one run; unset: 1 for "
        "int8, else 0)", SERVE)
    warmup: bool = _option(True, "warm the classifier up when it loads", SERVE)
    max_text_bytes: int = _option(16384, "longer texts get INVALID_ARG", SERVE)
    tensorrt: bool = _option(False, "TensorRT accelerator (onnxruntime backend on KIND_GPU)", SERVE)
    fp16: bool = _option(False, "half precision where the backend supports it", SERVE)

    # --- derived from the fields ---------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> list[dict[str, Any]]:
        """Every option: name, type, default, choices, stage, help (for `release options`, docs and Ansible)."""
        hints = typing.get_type_hints(cls)
        return [{"name": f.name, "type": _type_name(hints[f.name]), "default": _jsonable(f.default),
                 "choices": list(f.metadata["choices"]) if f.metadata["choices"] else None,
                 "stage": f.metadata["stage"], "help": f.metadata["help"]} for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "options") -> ModelOptions:
        """Options from a mapping (a spec's JSON, Ansible's variables): unknown names and bad values are refused
        with a message naming them. Strings are converted ("16" -> 16, "true" -> True, "a,b" -> a list)."""
        data = dict(data or {})
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UsageError(f"{where}: unknown option(s) {', '.join(unknown)}; the options are: "
                             f"{', '.join(names)} (`tritonfleet release options` describes them)")
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
        opts = cls(**values)
        opts.validate(where)
        return opts

    def as_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def stage(self, stage: str) -> dict[str, Any]:
        """The options of one stage (CONVERT or SERVE) as a dict: what that stage's key covers."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.metadata["stage"] == stage}

    def changed(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        default = ModelOptions().as_dict()
        return {k: v for k, v in self.as_dict().items() if v != default[k]}

    def merged(self, overrides: Mapping[str, Any], where: str = "options") -> ModelOptions:
        """These options with `overrides` applied (validated as from_dict)."""
        return ModelOptions.from_dict({**self.changed(), **dict(overrides)}, where)

    def to_cli_args(self, stage: str) -> list[str]:
        """The command-line flags that give these options of `stage` (only those that differ from the default)."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["stage"] != stage or value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, tuple):
                args += [flag, ",".join(map(str, value))]
            else:
                args += [flag, str(value)]
        return args

    def validate(self, where: str = "options") -> None:
        """Refuse combinations that cannot work, saying why (UsageError)."""

        def fail(msg: str) -> None:
            raise UsageError(f"{where}: {msg}")

        for f in fields(self):
            choices, value = f.metadata["choices"], getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            if choices and any(v not in choices for v in values):
                fail(f"{f.name} {value!r}: choose from {', '.join(choices)}")
        if not self.formats:
            fail("formats is empty")
        if any(f in self.formats for f in layout.QUANTIZED_FORMATS) and "onnx" not in self.formats:
            fail("int8 and int8-static are quantized from the ONNX export: add onnx to formats")
        if self.int8_calibration_texts < 1 or self.native_parity_texts < 1:
            fail("int8_calibration_texts and native_parity_texts must be at least 1")
        if self.preprocessing == "native" and (self.format == "torchscript" or self.backend == "pytorch"):
            fail("native preprocessing puts the tokenizer ops in the ONNX graph: serve an ONNX format (onnx, int8, "
                 "int8-static) on the python or onnxruntime backend")
        if not 0.0 <= self.int8_min_agreement <= 1.0:
            fail("int8_min_agreement must lie in 0..1")
        if self.backend == "pytorch" and self.format != "torchscript":
            fail("the pytorch backend serves TorchScript: use format torchscript")
        if self.backend == "onnxruntime" and self.format == "torchscript":
            fail("the onnxruntime backend serves ONNX: use format onnx or int8")
        if self.format not in self.formats:
            fail(f"format {self.format} is served, so formats must include it (formats: {', '.join(self.formats)})")
        if self.max_batch_size < 1:
            fail("max_batch_size must be at least 1")
        if any(not 1 <= s <= self.max_batch_size for s in self.preferred_batch_sizes):
            fail(f"preferred_batch_sizes {list(self.preferred_batch_sizes)} must lie in 1..max_batch_size "
                 f"({self.max_batch_size})")
        if self.sub_batch_size is not None and self.sub_batch_size < 0:
            fail("sub_batch_size must be 0 (the whole batch in one run) or more")
        if self.backend == "python" and self.format == "int8" and self.sub_batch_size not in (None, 1):
            fail(f"sub_batch_size {self.sub_batch_size} with the int8 model: dynamic quantization scales the "
                 "activations of a run as a whole, so a text's scores (and near a boundary its label) would depend "
                 "on the texts batched with it. The python runner serves int8 one text per run (sub_batch_size 1); "
                 "int8-static (calibrated scales) may run sorted sub-batches.")
        if self.instance_count < 1 or self.tokenizer_instance_count < 1:
            fail("instance counts must be at least 1")
        if self.tensorrt and not (self.backend == "onnxruntime" and self.instance_kind == "KIND_GPU"):
            fail("tensorrt needs the onnxruntime backend on KIND_GPU")
        if self.max_text_bytes < 1 or self.max_length < 0 or self.threads < 0:
            fail("max_text_bytes must be positive, max_length and threads not negative")
        if self.max_queue_size < 0 or self.queue_timeout_us < 0:
            fail("max_queue_size and queue_timeout_us must not be negative (0: no limit)")

    def effective_sub_batch_size(self) -> int:
        """The python runner's texts per run: the explicit value, else 1 for int8 and 0 (one run) otherwise."""
        if self.sub_batch_size is not None:
            return self.sub_batch_size
        return 1 if self.format == "int8" else 0

    def int8_batch_invariant(self) -> bool:
        """False where a dynamically quantized int8 model would run several texts at once (the native onnxruntime
        backend batches). int8-static is batch-invariant (fixed scales; `convert` proves it bit for bit)."""
        return not (self.format == "int8" and self.backend == "onnxruntime" and self.max_batch_size > 1)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return f"list[{args[0].__name__}]"
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)).__name__
    return hint.__name__


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a value from JSON, YAML or a command line to the field's type, or refuse it naming `where`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    optional = bool(args) and type(None) in args and origin is not tuple
    if optional:
        if value is None or value == "":
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is tuple:
            items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
            return tuple(_coerce(v, args[0], where) for v in items)
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {value!r} is not a valid {_type_name(hint)}") from None
    raise UsageError(f"{where}: unsupported option type {hint!r}")


def add_option_arguments(parser: argparse.ArgumentParser, stage: str) -> None:
    """The command-line flags of one stage's options, derived from ModelOptions (defaults, types, help)."""
    hints = typing.get_type_hints(ModelOptions)
    group = parser.add_argument_group(f"{stage} options (ModelOptions; `tritonfleet release options` lists them)")
    for f in fields(ModelOptions):
        if f.metadata["stage"] != stage:
            continue
        flag = "--" + f.name.replace("_", "-")
        shown = f.default if not isinstance(f.default, tuple) else ",".join(map(str, f.default)) or "none"
        help_text = f"{f.metadata['help']} (default: {shown})"
        if hints[f.name] is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                               choices=None, help=help_text + (f"; one of {', '.join(f.metadata['choices'])}"
                                                               if f.metadata["choices"] else ""))


def options_from_args(args: argparse.Namespace, stage: str, base: ModelOptions | None = None) -> ModelOptions:
    """ModelOptions from the flags `add_option_arguments` added: unset flags keep `base`'s (or the default)."""
    given = {f.name: getattr(args, f.name) for f in fields(ModelOptions)
             if f.metadata["stage"] == stage and getattr(args, f.name, None) is not None}
    return (base or ModelOptions()).merged(given, "command line")


# --- the spec of a release ---------------------------------------------------------------------------------

#: A model's name is the name of its Triton ensemble; its steps are <name>_tokenizer, _classifier, _postprocess.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
#: A hub model's revision in a release: a commit. A branch or a tag converts whatever it points to at the time, and
#: the release key (hub id@revision) could not tell two of its commits apart: a cached release would be reused.
COMMIT_PATTERN = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelSpec:
    """One model of a release: its name, where it comes from, its options and its check texts."""

    name: str
    model: str
    revision: str = "main"
    options: ModelOptions = field(default_factory=ModelOptions)
    #: Texts added to the golden file (and so to the smoke test), after the built-in edge cases.
    golden_texts: tuple[str, ...] = ()
    #: Texts on which int8 must agree with fp32, besides the golden texts.
    agreement_texts: tuple[str, ...] = ()

    @property
    def local_dir(self) -> Path | None:
        """The model's directory when it is a local one (else a hub id)."""
        path = Path(self.model)
        return path if path.is_dir() else None

    def source_identity(self) -> str:
        """What the model is: the tree checksum of a local directory, or `hub id@revision`."""
        local = self.local_dir
        return f"dir-sha256:{tree_checksum(local)}" if local else f"{self.model}@{self.revision}"

    def check_texts(self) -> tuple[list[str], list[str]]:
        """(golden, agreement) texts: the spec's, then those of the model directory's MODEL_TEXTS_FILE."""
        golden, agreement = list(self.golden_texts), list(self.agreement_texts)
        local = self.local_dir
        if local and (local / layout.MODEL_TEXTS_FILE).is_file():
            try:
                texts = json.loads((local / layout.MODEL_TEXTS_FILE).read_text(encoding="utf-8"))
                golden += [str(t) for t in texts.get("golden", [])]
                agreement += [str(t) for t in texts.get("agreement", [])]
            except (ValueError, AttributeError) as exc:
                raise ReleaseError(f"{local / layout.MODEL_TEXTS_FILE}: not a JSON object of text lists: {exc}") \
                    from None
        return golden, agreement


@dataclass(frozen=True)
class ReleaseSpec:
    """What a release is built from: its models (at least one, names unique) and the builder (e.g. the conversion
    image), which is part of the key."""

    models: tuple[ModelSpec, ...]
    builder: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "release spec") -> ReleaseSpec:
        """From JSON/YAML: {"models": [{"name", "model", "revision"?, "options"?, "golden_texts"?,
        "agreement_texts"?}], "options"?: options every model gets unless it sets its own, "builder"?}."""
        if not isinstance(data, Mapping):
            raise UsageError(f"{where}: expected an object with a list 'models'")
        unknown = sorted(set(data) - {"models", "options", "builder"})
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: models, options, builder)")
        common = data.get("options") or {}
        entries = data.get("models")
        if not isinstance(entries, list) or not entries:
            raise UsageError(f"{where}: 'models' must be a non-empty list")
        models = []
        for i, entry in enumerate(entries):
            at = f"{where}: models[{i}]"
            if not isinstance(entry, Mapping):
                raise UsageError(f"{at} must be an object")
            bad = sorted(set(entry) - {f.name for f in fields(ModelSpec)})
            if bad:
                raise UsageError(f"{at}: unknown key(s) {', '.join(bad)} (allowed: "
                                 f"{', '.join(f.name for f in fields(ModelSpec))})")
            name = str(entry.get("name") or "")
            if not NAME_PATTERN.fullmatch(name):
                raise UsageError(f"{at}: name {name!r} must match {NAME_PATTERN.pattern} (it names Triton models)")
            if not str(entry.get("model") or ""):
                raise UsageError(f"{at} ({name}): 'model' (a hub id or a model directory) is required")
            options = ModelOptions.from_dict({**common, **(entry.get("options") or {})}, f"{at} ({name}) options")
            revision = str(entry.get("revision") or "")
            if not Path(str(entry["model"])).is_dir() and not COMMIT_PATTERN.fullmatch(revision):
                raise UsageError(f"{at} ({name}): the hub model {entry['model']} needs 'revision', the 40-character "
                                 f"commit you validated (got {revision or 'none'!r}): a branch or a tag converts "
                                 "whatever it points to at the time, and the release key could not tell two of its "
                                 "commits apart")
            models.append(ModelSpec(
                name=name, model=str(entry["model"]), revision=revision or "main",
                options=options, golden_texts=tuple(map(str, entry.get("golden_texts") or ())),
                agreement_texts=tuple(map(str, entry.get("agreement_texts") or ()))))
        triton_names = [n for m in models for n in layout.model_names(m.name).all()]
        clashes = sorted({n for n in triton_names if triton_names.count(n) > 1})
        if clashes:
            raise UsageError(f"{where}: model names clash in the Triton repository: {', '.join(clashes)}")
        return cls(models=tuple(models), builder=str(data.get("builder") or ""))

    @classmethod
    def load(cls, source: str | Path) -> ReleaseSpec:
        """From a JSON file, or '-' for standard input."""
        try:
            text = sys.stdin.read() if str(source) == "-" else Path(source).read_text(encoding="utf-8")
            return cls.from_dict(json.loads(text), f"release spec {source}")
        except FileNotFoundError:
            raise UsageError(f"release spec {source}: no such file") from None
        except json.JSONDecodeError as exc:
            raise UsageError(f"release spec {source}: not JSON: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return {"builder": self.builder, "models": [
            {"name": m.name, "model": m.model, "revision": m.revision, "options": m.options.changed(),
             "golden_texts": list(m.golden_texts), "agreement_texts": list(m.agreement_texts)}
            for m in self.models]}


# --- keys ---------------------------------------------------------------------------------------------------

#: The code that makes each stage's files: a change to it changes that stage's keys (no stale cache hit after an
#: upgrade, and a builder running other code than its caller is caught by `build(expect_key=...)`). Serving also
#: covers the repository templates (`*.j2`, `*.py` under TEMPLATE_DIR).
_STAGE_CODE = {CONVERT: ("convert.py", "adapter.py", "golden.py", "calibration.py", "native.py"),
               SERVE: ("repo.py", "release.py", "native.py")}


def code_identity(stage: str) -> str:
    """The tool's version and the checksums of the code (and, for serving, the repository templates) of `stage`."""
    from .paths import TEMPLATE_DIR

    here = Path(__file__).parent
    files = {name: file_sha256(here / name) for name in _STAGE_CODE[stage]}
    if stage == SERVE:  # the templates and python models the repository is rendered from (not their README)
        files.update({f"templates/{k}": v for k, v in file_checksums(TEMPLATE_DIR).items()
                      if k.endswith((".j2", ".py"))})
    return f"{__version__}+{content_key(files)}"


def conversion_key(model: ModelSpec, builder: str = "", identity: str | None = None) -> str:
    """The key of a model's conversion artifacts: its source (`identity`, computed when not given), its conversion
    options and check texts, the tool version and the builder. Serving options are not in it: changing them
    reuses the artifacts."""
    return content_key({"source": identity or model.source_identity(), "convert": model.options.stage(CONVERT),
                        "golden_texts": list(model.golden_texts), "agreement_texts": list(model.agreement_texts),
                        "tool": code_identity(CONVERT), "builder": builder})


def _release_key(entries: list[tuple[str, str, ModelOptions]], builder: str) -> str:
    """The key of a release of (name, conversion key, options) entries."""
    return content_key({"models": [{"name": name, "conversion": ckey, "serve": opts.stage(SERVE)}
                                   for name, ckey, opts in entries], "tool": code_identity(SERVE), "builder": builder})


def release_key(spec: ReleaseSpec) -> str:
    """The key of a release: its models' names, conversion keys and serving options; the tool; the builder."""
    return _release_key([(m.name, conversion_key(m, spec.builder), m.options) for m in spec.models], spec.builder)


# --- a built release ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseModel:
    """One model of a built release, as release.json records it."""

    name: str
    model: str
    revision: str
    source: str
    conversion_key: str
    options: dict[str, Any]
    labels: list[str]
    variant: str
    max_length: int
    parity: dict[str, Any]

    @property
    def names(self) -> layout.ModelNames:
        return layout.model_names(self.name)

    @property
    def golden(self) -> str:
        """The golden file's path inside the release."""
        return f"{self.name}/{layout.GOLDEN_IN_RELEASE}"


@dataclass(frozen=True)
class Release:
    """A release on disk, checked against its SHA256SUMS when opened."""

    path: Path
    key: str
    id: str
    builder: str
    models: tuple[ReleaseModel, ...]
    checksums: dict[str, str]

    @classmethod
    def open(cls, path: Path, verify: bool = True) -> Release:
        """Read a release; with `verify`, refuse it (ReleaseError) unless every file matches SHA256SUMS exactly."""
        path = Path(path).resolve()
        try:
            sums = (path / SUMS_FILE).read_bytes()
            info = json.loads((path / RELEASE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ReleaseError(f"{path} is not a release: {Path(exc.filename).name} is missing") from None
        except json.JSONDecodeError as exc:
            raise ReleaseError(f"{path}/{RELEASE_FILE} is not JSON: {exc}") from None
        listed = parse_sums(sums.decode(), path / SUMS_FILE)
        if verify:
            check_files(path, listed)
        try:
            models = tuple(ReleaseModel(**m) for m in info["models"])
            return cls(path=path, key=info["key"], id=sums_id(sums), builder=info["builder"],
                       models=models, checksums=listed)
        except (KeyError, TypeError) as exc:
            raise ReleaseError(f"{path}/{RELEASE_FILE} is malformed: {exc}") from None

    def model(self, name: str) -> ReleaseModel:
        for m in self.models:
            if m.name == name:
                return m
        raise ReleaseError(f"release {self.key} has no model {name!r} (it has {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def golden_file(self, name: str) -> Path:
        return self.path / self.model(name).golden

    def as_json(self) -> dict[str, Any]:
        """What `tritonfleet release` prints and Ansible's release fact holds."""
        return {"path": str(self.path), "key": self.key, "id": self.id, "builder": self.builder,
                "models": [{**m.__dict__, "golden": str(self.path / m.golden),
                            "triton_models": m.names.served(m.options.get("preprocessing", "python"))}
                           for m in self.models],
                "checksums": self.checksums}


def parse_sums(text: str, where: Path | str) -> dict[str, str]:
    """The entries of a SHA256SUMS text ("<64 hex>  <path>" per line), refusing anything else."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64})  (\S.*)", line)
        if not m or m.group(2) in out:
            raise ReleaseError(f"{where}: line {n} is not a `<sha256>  <path>` entry (or repeats a path)")
        out[m.group(2)] = m.group(1)
    return out


def check_files(root: Path, listed: Mapping[str, str]) -> None:
    """Raise ReleaseError naming what differs when the files under `root` are not exactly `listed`."""
    actual = file_checksums(root)
    problems = [f"missing {p}" for p in listed if p not in actual]
    problems += [f"not listed {p}" for p in actual if p not in listed]
    problems += [f"changed {p}" for p in listed if p in actual and actual[p] != listed[p]]
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ReleaseError(f"{root} does not match its {SUMS_FILE}: {'; '.join(problems[:5])}{more}")


def write_sums(root: Path) -> str:
    """Write SHA256SUMS for every file under `root`; return the release id (the sha256 of that file)."""
    text = sums_text(file_checksums(root))
    (Path(root) / SUMS_FILE).write_text(text)
    return sums_id(text)


# --- building and finding releases ----------------------------------------------------------------------


def artifacts_for(model: ModelSpec, cache: Path, builder: str = "") -> Path:
    """The conversion artifacts of `model` in `cache/<conversion key>/`, converted there when missing."""
    from .convert import convert

    identity = model.source_identity()
    key = conversion_key(model, builder, identity)
    out = Path(cache) / key
    if (out / layout.MANIFEST_FILE).is_file():
        logger.info("%s: conversion artifacts %s are cached (%s)", model.name, key, out)
        return out
    golden, agreement = model.check_texts()
    convert(model.model, out, model.options, revision=model.revision if not model.local_dir else None,
            golden_texts=golden, agreement_texts=agreement, key=key, source=identity)
    return out


def write_release(root: Path, models: list[tuple[str, Path, ModelOptions]], builder: str = "") -> str:
    """Write a release of `models` ((name, conversion artifacts, options)) into the empty directory `root`:
    the Triton models of each, their golden files, release.json and SHA256SUMS (last). Returns the key."""
    from .convert import load_manifest
    from .repo import served_options, write_model

    entries, records = [], []
    for name, artifacts, wanted in models:
        manifest = load_manifest(artifacts)
        options = served_options(artifacts, wanted, name)
        write_model(root, name, artifacts, options)
        shutil.copy2(Path(artifacts) / layout.GOLDEN_FILE, Path(root) / name / layout.GOLDEN_IN_RELEASE)
        # The key covers what was asked (`wanted`); what it resolves to (e.g. preprocessing auto) follows from it.
        entries.append((name, manifest["conversion_key"], wanted))
        records.append(ReleaseModel(
            name=name, model=manifest["model"], revision=manifest["revision"], source=manifest["source"],
            conversion_key=manifest["conversion_key"], options=options.as_dict(), labels=manifest["labels"],
            variant=layout.variant(options.format), max_length=manifest["max_length"],
            parity=manifest["parity"]).__dict__)
    key = _release_key(entries, builder)
    info = {"format": 1, "tool": f"tritonfleet {__version__}", "key": key, "builder": builder, "models": records}
    (Path(root) / RELEASE_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_sums(root)
    return key


def build(spec: ReleaseSpec, releases: Path, artifacts: Path, *, force: bool = False,
          expect_key: str = "") -> Release:
    """Build the release of `spec` into `releases/<key>/` (converting what `artifacts` does not cache yet), or
    return it when it is already there and intact. A failure leaves nothing behind. `expect_key`: the key the
    caller computed (Ansible's controller); a builder that computes another one refuses to build."""
    key = release_key(spec)
    if expect_key and expect_key != key:
        raise ReleaseError(f"this builder computes the release key {key}, the caller {expect_key}: the builder runs "
                           f"other tritonfleet code ({code_identity(CONVERT)}, {code_identity(SERVE)}) or has other "
                           "model files than the caller; rebuild or pull the conversion image again")
    target = Path(releases) / key
    if not force and (target / RELEASE_FILE).is_file():
        logger.info("release %s is built (%s)", key, target)
        return Release.open(target)
    parts = [(m.name, artifacts_for(m, artifacts, spec.builder), m.options) for m in spec.models]
    with step(f"Writing release {key} ({', '.join(m.name for m in spec.models)})"), atomic_directory(target) as tmp:
        written = write_release(tmp, parts, spec.builder)
    if written != key:  # the two computations of the key must agree, or the cache would never hit
        raise ReleaseError(f"release key mismatch: spec {key}, written {written}")
    return Release.open(target)


def locate(spec: ReleaseSpec, releases: Path) -> Release:
    """The built release of `spec` in `releases/`, verified; NotBuiltError when it is not there."""
    key = release_key(spec)
    target = Path(releases) / key
    if not (target / RELEASE_FILE).is_file():
        raise NotBuiltError(f"the release of this spec (key {key}) is not built in {releases}", key, str(target))
    return Release.open(target)


# --- which release a fleet serves: written when a deploy activates one, never guessed ----------------------


def record_deploy(record: Path, release: Release, host: str | None = None, keep: int = 20) -> dict[str, Any]:
    """Record that `host` (None: the whole fleet, after a complete rollout) now serves `release`. The newest entry
    comes first; `keep` entries are kept per host. The file is rewritten atomically, under a lock."""
    record = Path(record)
    record.parent.mkdir(parents=True, exist_ok=True)
    entry = {"id": release.id, "key": release.key, "path": str(release.path), "models": release.names(),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(record.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_record(record)
        history = data["fleet"] if host is None else data["hosts"].setdefault(host, [])
        history.insert(0, entry)
        del history[keep:]
        tmp = record.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, record)
    return entry


def read_record(record: Path) -> dict[str, Any]:
    """The deploy record: {"fleet": [entries], "hosts": {host: [entries]}}, newest first; empty when missing."""
    try:
        data = json.loads(Path(record).read_text())
    except FileNotFoundError:
        return {"fleet": [], "hosts": {}}
    except json.JSONDecodeError as exc:
        raise ReleaseError(f"deploy record {record} is not JSON: {exc}") from None
    return {"fleet": list(data.get("fleet", [])), "hosts": dict(data.get("hosts", {}))}


def deployed(record: Path, host: str | None = None, previous: bool = False) -> Release:
    """The release the record says `host` (None: the fleet) serves, opened and verified; with `previous`, the one
    it served before (a rollback activates it again)."""
    data = read_record(record)
    history = data["fleet"] if host is None else data["hosts"].get(host, [])
    who = "the fleet" if host is None else host
    if not history:
        raise ReleaseError(f"{record}: no release was deployed to {who} yet")
    if previous:
        older = [e for e in history if e["id"] != history[0]["id"]]
        if not older:
            raise ReleaseError(f"{record}: {who} has served no other release before {history[0]['id'][:12]}")
        return Release.open(Path(older[0]["path"]))
    return Release.open(Path(history[0]["path"]))
