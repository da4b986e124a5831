"""Native (C++) preprocessing served by a real tritonserver, next to the python tokenizer path of the same model:
the same answers, bit for bit (int8-static is batch-invariant, so neither the runs' grouping nor the sort key
matters), and the same INVALID_ARG messages for bad texts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonfleet import layout
from tritonfleet.client import TextClient
from tritonfleet.release import ModelOptions, Release
from tritonfleet.repo import build_repository
from tritonfleet.serve import TritonServer, free_ports
from tritonfleet.smoke import run_smoke_test

PLAIN, NATIVE = "plain", "native"


@pytest.fixture(scope="module")
def release(tiny_roberta_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Release:
    base = {"formats": ("onnx", "int8-static"), "format": "int8-static", "max_batch_size": 16,
            "max_queue_delay_us": 20000, "sub_batch_size": 3}
    return build_repository([(PLAIN, tiny_roberta_artifacts, ModelOptions(**base, preprocessing="python")),
                             (NATIVE, tiny_roberta_artifacts, ModelOptions(**base, preprocessing="native"))],
                            tmp_path_factory.mktemp("native") / "repo")


@pytest.fixture(scope="module")
def server(release: Release, tmp_path_factory: pytest.TempPathFactory):
    http, grpc, metrics = free_ports(3)
    with TritonServer(release.path, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      log_file=tmp_path_factory.mktemp("logs") / "tritonserver.log") as srv:
        yield srv


def test_the_release_serves_one_model_natively_and_passes_the_smoke_test(server, release):
    assert {m.name: m.options["preprocessing"] for m in release.models} == {PLAIN: "python", NATIVE: "native"}
    assert not (release.path / layout.model_names(NATIVE).tokenizer).exists()
    assert run_smoke_test(server.grpc_url, release=release.path) == 0


def test_native_answers_equal_the_python_tokenizer_path_under_concurrent_batching(server):
    texts = ["I love it 😊", "Ça coûte 5€ — naïve café", "東京は晴れです", "see https://x.com/a?b=1  ok",
             "word " * 400, "a\t\tb   c", "ok", "The delivery was late and the box was damaged."] * 3
    requests = [texts[i:i + 1 + i % 4] for i in range(0, len(texts), 2)]

    def ask(model: str) -> list[list[tuple[str, list[float]]]]:
        def one(batch: list[str]) -> list[tuple[str, list[float]]]:
            return [(p.label, p.scores) for p in TextClient(server.grpc_url).predict(batch, model)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, requests))

    plain, native = ask(PLAIN), ask(NATIVE)
    assert native == plain


def _infer(server, model: str, items: list[bytes]) -> InferenceServerException:
    inp = grpcclient.InferInput(layout.TEXT, [len(items), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b] for b in items], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        grpcclient.InferenceServerClient(server.grpc_url).infer(model, [inp])
    return err.value


@pytest.mark.parametrize("items", [[b""], [b"  \n"], [b"a" * 100_000], [b"caf\xe9 \xff"], [b"fine", b"\xff"]],
                         ids=["empty", "blank", "oversized", "non-UTF-8", "one bad item"])
def test_bad_texts_get_the_same_invalid_arg_natively(server, items):
    plain, native = _infer(server, PLAIN, items), _infer(server, NATIVE, items)
    assert native.status() == plain.status() == "StatusCode.INVALID_ARGUMENT"
    assert native.message().replace(f"'{NATIVE}'", "M") == plain.message().replace(f"'{PLAIN}'", "M")
    assert TextClient(server.grpc_url).predict(["still serving?"], NATIVE)[0].label
