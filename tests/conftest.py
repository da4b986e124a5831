"""Shared fixtures: small real models built offline, and their conversion artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The marker of each test tree (pyproject.toml describes them; scripts/test.sh selects stages by them).
TREE_MARKERS = {"unit": "unit", "integration": "integration", "bench": "bench", "infra": "deploy", "deploy": "deploy"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        tree = Path(item.fspath).relative_to(root).parts[0]
        if tree in TREE_MARKERS:
            item.add_marker(TREE_MARKERS[tree])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT classifier with the real MiniLM tokenizer (fast, for mechanics not labels)."""
    from tritonfleet.random_model import make_random_model

    return make_random_model(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tritonfleet.convert import convert
    from tritonfleet.release import ModelOptions

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    convert(str(tiny_model), out, ModelOptions(formats=("torchscript", "onnx", "int8", "int8-static"),
                                              int8_min_agreement=0.5, int8_calibration_texts=64))
    return out


@pytest.fixture(scope="session")
def tiny_roberta_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random RoBERTa with a byte-level BPE tokenizer: its native tokenizer graph passes parity."""
    from tritonfleet.convert import convert
    from tritonfleet.random_model import make_random_model
    from tritonfleet.release import ModelOptions

    model = make_random_model(tmp_path_factory.mktemp("models") / "tiny-roberta", "tiny-roberta")
    out = tmp_path_factory.mktemp("artifacts") / "tiny-roberta"
    convert(str(model), out, ModelOptions(formats=("onnx", "int8-static"), int8_min_agreement=0.0,
                                          int8_calibration_texts=32))
    return out
