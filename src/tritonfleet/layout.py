"""The model repository layout: the one place that names models, tensors and artifact files.

The CLI (`build-repo`, `smoke-test`, `predict`, the benchmark) and the Ansible roles (which call the CLI)
all take these names from here; nothing else spells them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# Conversion artifacts (`tritonfleet convert --output DIR`).
MANIFEST_FILE = "manifest.json"
GOLDEN_FILE = "golden.json"
TORCHSCRIPT_FILE = "model.pt"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
ONNX_INT8_STATIC_FILE = "model.int8-static.onnx"
TOKENIZER_DIR = "tokenizer"
#: The native (onnxruntime-extensions) tokenizer graph: TEXT -> INPUT__0, INPUT__1 (only when it passed parity).
NATIVE_TOKENIZER_FILE = "tokenizer.native.onnx"
#: In a classifier served with native preprocessing: that graph merged in front of the served export.
NATIVE_MODEL_FILE = "model.native.onnx"

# Tensor names. The classifier keeps the article's plain tensor interface (pytorch backend naming).
TEXT = "TEXT"
INPUT_IDS = "INPUT__0"
ATTENTION_MASK = "INPUT__1"
LOGITS = "OUTPUT__0"
LABEL = "LABEL"
SCORES = "SCORES"

#: Which artifact file serves each runner format.
FORMAT_FILES = {"onnx": ONNX_FILE, "int8": ONNX_INT8_FILE, "int8-static": ONNX_INT8_STATIC_FILE,
                "torchscript": TORCHSCRIPT_FILE}
#: The quantized formats: each has its own outputs in the golden file (`GoldenEntry.variants[format]`).
QUANTIZED_FORMATS = ("int8", "int8-static")


def variant(fmt: str) -> str:
    """The golden-file variant a served format answers with: the quantized format's name, else "fp32"."""
    return fmt if fmt in QUANTIZED_FORMATS else "fp32"


def variant_of_file(model_file: str) -> str:
    """The variant of a served model file (what a loaded config names), e.g. "int8" for model.int8.onnx."""
    return next((variant(f) for f, name in FORMAT_FILES.items() if name == model_file), "fp32")


@dataclass(frozen=True)
class ModelNames:
    """Names of the four Triton models that serve one classifier: the ensemble and its three steps."""

    ensemble: str
    tokenizer: str
    classifier: str
    postprocess: str

    def all(self) -> list[str]:
        return [self.ensemble, self.tokenizer, self.classifier, self.postprocess]

    def served(self, preprocessing: str) -> list[str]:
        """The Triton models a release holds for this classifier: all four, or without the tokenizer when it is
        served with native preprocessing (the classifier's graph tokenizes)."""
        return [n for n in self.all() if not (preprocessing == "native" and n == self.tokenizer)]

    def steps(self) -> list[str]:
        """The ensemble's internal steps (not meant to be called by clients)."""
        return [self.tokenizer, self.classifier, self.postprocess]

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def model_names(name: str) -> ModelNames:
    """The Triton models of the classifier called `name`: `name` (the ensemble clients call), `name_tokenizer`,
    `name_classifier`, `name_postprocess`."""
    return ModelNames(ensemble=name, tokenizer=f"{name}_tokenizer", classifier=f"{name}_classifier",
                      postprocess=f"{name}_postprocess")


#: The name of a model when none is given (the article's sentiment classifier).
DEFAULT_MODEL_NAME = "sentiment"
MODELS = model_names(DEFAULT_MODEL_NAME)
VERSION = "1"

#: Each model's golden file inside a release, in its ensemble's directory (Triton ignores files there).
GOLDEN_IN_RELEASE = "golden.json"


def model_dir(repo: Path, name: str) -> Path:
    return repo / name


def version_dir(repo: Path, name: str) -> Path:
    return repo / name / VERSION


def config_path(repo: Path, name: str) -> Path:
    return repo / name / "config.pbtxt"

#: A model directory may carry its own check texts: {"golden": [...], "agreement": [...]}. The golden texts join
#: the built-in edge cases in the golden file (and so the smoke test); the agreement texts are where int8 must
#: agree with fp32. The demo models write it; for a hub model, list the texts in the release spec instead.
MODEL_TEXTS_FILE = "tritonfleet-texts.json"
