"""The raw-text checks of the python models that take TEXT (model_repository/common/text_input.py), in-process.

The module under test is the file the models import, with python_backend's own `triton_python_backend_utils` (the
pure-Python half of pb_utils, from the nvidia-pytriton wheel's backend). Triton's request and tensor objects exist
only inside the backend stub, so `Request` and `Tensor` below stand in for them; the tensor records whether its texts
were read. Through a real server these checks are unreachable for a shape (Triton refuses a batch over max_batch_size
first: tests/integration/test_server.py), so this is where they are tested; the per-text checks are tested against a
real server in tests/integration/test_bad_requests.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from google.protobuf import json_format

from tritonfleet import layout
from tritonfleet.paths import TEMPLATE_DIR
from tritonfleet.release import ModelOptions
from tritonfleet.repo import parse_config, render_configs

MAX_BATCH = 16
MAX_TEXT_BYTES = 16384


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.fixture(scope="module")
def text_input() -> ModuleType:
    return _load("text_input", TEMPLATE_DIR / "common" / "text_input.py")


@pytest.fixture(scope="module")
def pb_utils() -> ModuleType:
    pytriton = pytest.importorskip("pytriton")
    path = Path(pytriton.__file__).parent / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    return _load("triton_python_backend_utils", path)


class Tensor:
    """A BYTES input as the stub hands it to execute(): its declared shape and its texts (a numpy object array)."""

    def __init__(self, shape: list[int], items: list[bytes] | None = None) -> None:
        self._shape, self._items = shape, items
        self.read = False

    def name(self) -> str:
        return layout.TEXT

    def shape(self) -> list[int]:
        return list(self._shape)

    def as_numpy(self) -> np.ndarray:
        self.read = True
        if self._items is None:
            pytest.fail(f"the texts of a tensor declaring shape {self._shape} were read")
        return np.array(self._items, dtype=np.object_).reshape(self._shape)


class Request:
    def __init__(self, tensor: Tensor) -> None:
        self._tensor = tensor

    def inputs(self) -> list[Tensor]:
        return [self._tensor]


@pytest.mark.parametrize("shape", [[MAX_BATCH + 1, 1], [2**31, 1], [MAX_BATCH, 2]], ids=str)
def test_a_request_declaring_more_texts_than_the_model_takes_is_refused_before_its_texts_are_read(
        text_input, pb_utils, shape):
    tensor = Tensor(shape)  # no texts: reading them fails the test
    texts, error = text_input.request_texts(pb_utils, Request(tensor), layout.TEXT, MAX_TEXT_BYTES, MAX_BATCH)
    assert texts is None and not tensor.read
    assert error == (f"input 'TEXT' has shape {shape} ({shape[0] * shape[1]} texts); this model takes at most "
                     f"{MAX_BATCH} per request (max_batch_size)")


@pytest.mark.parametrize("count", [1, MAX_BATCH])
def test_a_request_within_the_limit_gets_its_texts(text_input, pb_utils, count):
    items = [f"text {i}".encode() for i in range(count)]
    texts, error = text_input.request_texts(pb_utils, Request(Tensor([count, 1], items)), layout.TEXT,
                                            MAX_TEXT_BYTES, MAX_BATCH)
    assert (texts, error) == ([f"text {i}" for i in range(count)], None)


def test_each_text_is_still_checked_against_max_text_bytes(text_input, pb_utils):
    items = [b"fine", b"a" * (MAX_TEXT_BYTES + 1)]
    texts, error = text_input.request_texts(pb_utils, Request(Tensor([2, 1], items)), layout.TEXT, MAX_TEXT_BYTES,
                                            MAX_BATCH)
    assert texts is None
    assert error == f"TEXT[1] is {MAX_TEXT_BYTES + 1} bytes; the limit is {MAX_TEXT_BYTES} (parameter max_text_bytes)"


#: What render_configs reads of a conversion manifest.
MANIFEST = {"labels": ["negative", "neutral", "positive"], "parity": {}, "max_length": 128, "pad_token_id": 0,
            "vocab_size": 1000}


@pytest.mark.parametrize("max_batch_size", [1, 64])
@pytest.mark.parametrize(("preprocessing", "role"), [("python", "tokenizer"), ("native", "classifier")])
def test_the_limit_is_the_max_batch_size_of_each_model_that_takes_text(text_input, preprocessing, role,
                                                                       max_batch_size):
    """From the config each model is rendered with, as the dict Triton hands initialize()."""
    configs = render_configs(MANIFEST, ModelOptions(max_batch_size=max_batch_size, preprocessing=preprocessing))
    name = getattr(layout.MODELS, role)
    config = json_format.MessageToDict(parse_config(configs[name]), preserving_proto_field_name=True)
    assert text_input.max_texts(config, layout.TEXT) == max_batch_size
