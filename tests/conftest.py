"""Shared fixtures: small real models built offline, and their conversion artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT classifier with the real MiniLM tokenizer (fast, for mechanics not labels)."""
    from tritonfleet.random_model import make_random_model

    return make_random_model(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonfleet.convert import ConvertOptions, convert

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    convert(ConvertOptions(model=str(tiny_model), output=out, formats=("torchscript", "onnx", "int8"),
                           int8_min_agreement=0.5))
    return out
