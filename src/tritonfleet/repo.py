"""`tritonfleet build-repo`: render the Triton model repository from the conversion artifacts.

The layout (model names, tensor names, files) comes from `layout.py`; the config texts and python models come
from the templates in the project's `model_repository/` folder. Every rendered config.pbtxt is parsed back
with Triton's ModelConfig protobuf before anything is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from . import __version__, layout
from .convert import load_manifest
from .paths import TEMPLATE_DIR
from .util import atomic_directory, tree_checksum

logger = logging.getLogger(__name__)

BUILD_INFO_FILE = "tritonfleet-build.json"
INSTANCE_KINDS = ("KIND_CPU", "KIND_GPU")


@dataclass
class RepoOptions:
    """Serving parameters of the repository. Defaults suit a small CPU host."""

    backend: str = "python"
    runner_format: str = "onnx"
    max_batch_size: int = 64
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    tokenizer_instance_count: int = 1
    threads: int = 0
    #: python runner: sort each dynamic batch by length and run it this many rows at a time (0: all at once).
    #: None: 1 for int8 (validate() refuses any other value for int8, and says why), else 0.
    sub_batch_size: int | None = None
    warmup: bool = True
    warmup_batch_size: int = 1
    warmup_seq_len: int = 16
    max_text_bytes: int = 16384
    length_buckets: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    tensorrt: bool = False
    fp16: bool = False

    def validate(self) -> None:
        if self.backend not in layout.BACKENDS:
            raise ValueError(f"backend {self.backend!r}: choose one of {layout.BACKENDS}")
        if self.runner_format not in layout.RUNNER_FORMATS:
            raise ValueError(f"runner format {self.runner_format!r}: choose one of {layout.RUNNER_FORMATS}")
        if self.backend == "pytorch" and self.runner_format != "torchscript":
            raise ValueError("the pytorch backend serves TorchScript: use --format torchscript")
        if self.backend == "onnxruntime" and self.runner_format == "torchscript":
            raise ValueError("the onnxruntime backend serves ONNX: use --format onnx or int8")
        if self.instance_kind not in INSTANCE_KINDS:
            raise ValueError(f"instance kind {self.instance_kind!r}: choose one of {INSTANCE_KINDS}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if any(not 1 <= s <= self.max_batch_size for s in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes {self.preferred_batch_sizes} must lie in "
                             f"1..max_batch_size ({self.max_batch_size})")
        if self.sub_batch_size is not None and self.sub_batch_size < 0:
            raise ValueError("sub_batch_size must be 0 (the whole batch in one run) or more")
        if self.backend == "python" and self.runner_format == "int8" and self.sub_batch_size not in (None, 1):
            raise ValueError(
                f"sub_batch_size {self.sub_batch_size} with the int8 model: dynamic quantization scales the "
                "activations of a run as a whole, so a text's scores (and near a boundary its label) would depend "
                "on the texts batched with it. The python runner serves int8 one row per run (sub_batch_size 1).")
        if self.instance_count < 1 or self.tokenizer_instance_count < 1:
            raise ValueError("instance counts must be at least 1")
        if self.tensorrt and not (self.backend == "onnxruntime" and self.instance_kind == "KIND_GPU"):
            raise ValueError("--tensorrt needs the onnxruntime backend on KIND_GPU")
        if self.warmup and self.warmup_batch_size > self.max_batch_size:
            raise ValueError("warmup batch size exceeds max_batch_size")

    def effective_sub_batch_size(self) -> int:
        """The python runner's rows per run: the explicit value, else 1 for int8 and 0 (one run) otherwise."""
        if self.sub_batch_size is not None:
            return self.sub_batch_size
        return 1 if self.runner_format == "int8" else 0

    def int8_batch_invariant(self) -> bool:
        """False where an int8 model would run several rows at once (the native onnxruntime backend batches)."""
        return not (self.runner_format == "int8" and self.backend == "onnxruntime" and self.max_batch_size > 1)


def _environment() -> jinja2.Environment:
    if not TEMPLATE_DIR.is_dir():
        raise SystemExit(f"build-repo: template folder {TEMPLATE_DIR} not found (set TRITONFLEET_TEMPLATE_DIR)")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def parse_config(text: str, where: str = "config") -> model_config_pb2.ModelConfig:
    """Parse a config.pbtxt with Triton's own protobuf; raise ValueError naming the file on error."""
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{where}: not a valid Triton ModelConfig: {exc}") from exc


def render_configs(manifest: dict[str, Any], opts: RepoOptions) -> dict[str, str]:
    """The config.pbtxt text of every model, keyed by model name."""
    opts.validate()
    labels = list(manifest["labels"])
    tensors = {k: getattr(layout, k) for k in ("TEXT", "INPUT_IDS", "ATTENTION_MASK", "LOGITS", "LABEL", "SCORES")}
    model_file = layout.FORMAT_FILES[opts.runner_format]
    ctx: dict[str, Any] = {
        "names": layout.MODELS,
        "t": tensors,
        "o": opts,
        "num_labels": len(labels),
        "default_model_filename": None if opts.backend == "python" else model_file,
        "tokenizer_params": {"tokenizer": json.dumps({
            "text": layout.TEXT, "input_ids": layout.INPUT_IDS, "attention_mask": layout.ATTENTION_MASK,
            "max_length": manifest["max_length"], "pad_token_id": manifest["pad_token_id"],
            "max_text_bytes": opts.max_text_bytes, "length_buckets": opts.length_buckets,
            "tokenizer_file": f"{layout.TOKENIZER_DIR}/tokenizer.json"})},
        "classifier_params": {} if opts.backend != "python" else {"runner": json.dumps({
            "input_ids": layout.INPUT_IDS, "attention_mask": layout.ATTENTION_MASK, "logits": layout.LOGITS,
            "format": "torchscript" if opts.runner_format == "torchscript" else "onnx",
            "model_file": model_file, "pad_token_id": manifest["pad_token_id"],
            "max_length": manifest["max_length"], "threads": opts.threads, "fp16": opts.fp16,
            "vocab_size": int(manifest.get("vocab_size", 0)),
            "sub_batch_size": opts.effective_sub_batch_size()})},
        "postprocess_params": {"postprocess": json.dumps({
            "logits": layout.LOGITS, "label": layout.LABEL, "scores": layout.SCORES, "labels": labels})},
    }
    env = _environment()
    out = {}
    for name in layout.MODELS.all():
        text = env.get_template(f"{name}/config.pbtxt.j2").render(**ctx)
        parsed = parse_config(text, f"{name}/config.pbtxt")
        if parsed.name != name:
            raise ValueError(f"{name}/config.pbtxt renders the name {parsed.name!r}")
        out[name] = text
    return out


def build_repository(artifacts: Path, output: Path, opts: RepoOptions) -> dict[str, Any]:
    """Write the repository to `output` (atomically: scratch folder, then one rename)."""
    manifest = load_manifest(artifacts)
    configs = render_configs(manifest, opts)
    if not opts.int8_batch_invariant():
        logger.warning("build-repo: the onnxruntime backend runs each dynamic batch of the int8 model in one run; "
                       "its scores then depend on the texts batched together (dynamic quantization)")
    model_file = layout.FORMAT_FILES[opts.runner_format]
    if not (Path(artifacts) / model_file).is_file():
        raise SystemExit(f"build-repo: {artifacts} has no {model_file}; convert with that format first")
    names = layout.MODELS
    with atomic_directory(output) as repo:
        for name, text in configs.items():
            layout.version_dir(repo, name).mkdir(parents=True)
            layout.config_path(repo, name).write_text(text)
        for name in (names.tokenizer, names.postprocess):
            shutil.copy2(TEMPLATE_DIR / name / layout.VERSION / "model.py", layout.version_dir(repo, name))
        tok_dst = layout.version_dir(repo, names.tokenizer) / layout.TOKENIZER_DIR
        tok_dst.mkdir()
        shutil.copy2(Path(artifacts) / layout.TOKENIZER_DIR / "tokenizer.json", tok_dst / "tokenizer.json")
        clf = layout.version_dir(repo, names.classifier)
        shutil.copy2(Path(artifacts) / model_file, clf / model_file)
        if opts.backend == "python":
            shutil.copy2(TEMPLATE_DIR / names.classifier / layout.VERSION / "model.py", clf)
        info = {
            "tool": f"tritonfleet {__version__}",
            "model": manifest["model"],
            "conversion_key": manifest["cache_key"],
            "variant": "int8" if opts.runner_format == "int8" else "fp32",
            "options": asdict(opts),
            "models": names.as_dict(),
            "checksum": tree_checksum(repo),
        }
        (repo / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    logger.info("Model repository written to %s (backend %s, %s, checksum %s)", output, opts.backend,
                opts.runner_format, info["checksum"][:12])
    return info
