"""Against a real tritonserver: an oversized request over HTTP and gRPC, and one request that makes a step raise,
batched with good ones.

A release of two models, as built, then three files swapped for ones that raise on an input a test chooses (the
server, the python models and onnxruntime / tokenizers are real; only what they load is chosen):
- `wordpiece` (python preprocessing): its tokenizer.json names an unknown token missing from its WordPiece vocabulary,
  so the real tokenizer raises on a character outside the vocabulary (a runic text) and encodes every other text
  as before; its classifier's ONNX graph sums a table's rows for the token ids, a table one row short of the
  vocabulary, so onnxruntime raises on the last token id (which the runner's vocabulary check lets through).
- `native` (native preprocessing): its ONNX graph casts each text to a number (every logit = the number), so
  onnxruntime raises on a text that is not a number.
A long queue delay and sub_batch_size 0 put the requests sent together in one execute() and one run.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from tritonfleet import layout
from tritonfleet.release import ModelOptions, Release
from tritonfleet.repo import build_repository
from tritonfleet.serve import TritonServer, free_ports

pytestmark = pytest.mark.integration

WORDPIECE, NATIVE = "wordpiece", "native"
MAX_BATCH = 16
#: Long enough that requests sent at once from as many threads all wait in the dynamic batcher for one execute().
QUEUE_DELAY_US = 1_000_000
#: Outside the (MiniLM) WordPiece vocabulary of the tiny model: its tokenizer raises on it once [UNK] is gone.
UNKNOWN_TO_THE_TOKENIZER = "ᚠᛇᚻ ᛒᛦᚦ"


def _onnx(nodes, inputs, initializers) -> bytes:
    graph = helper.make_graph(nodes, "raises_on_one_input", inputs,
                              [helper.make_tensor_value_info(layout.LOGITS, TensorProto.FLOAT, ["batch", 3])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # one every onnxruntime the runner may load reads
    return model.SerializeToString()


def _sum_of_ids_graph(rows: int) -> bytes:
    """logits[b] = sum of the token ids of row b, 3 times; onnxruntime's Gather raises on an id >= rows."""
    table = np.repeat(np.arange(rows, dtype=np.float32)[:, None], 3, axis=1)
    return _onnx([helper.make_node("Gather", ["table", layout.INPUT_IDS], ["rows"]),
                  helper.make_node("ReduceSum", ["rows", "axes"], [layout.LOGITS], keepdims=0)],
                 [helper.make_tensor_value_info(layout.INPUT_IDS, TensorProto.INT64, ["batch", "length"]),
                  helper.make_tensor_value_info(layout.ATTENTION_MASK, TensorProto.INT64, ["batch", "length"])],
                 [helper.make_tensor("table", TensorProto.FLOAT, list(table.shape), table.ravel()),
                  helper.make_tensor("axes", TensorProto.INT64, [1], [1])])


def _number_graph() -> bytes:
    """logits[b] = float(text b), 3 times; onnxruntime's Cast raises on a text that is not a number."""
    return _onnx([helper.make_node("Cast", [layout.TEXT], ["value"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["value", "ones"], [layout.LOGITS])],
                 [helper.make_tensor_value_info(layout.TEXT, TensorProto.STRING, ["batch", 1])],
                 [helper.make_tensor("ones", TensorProto.FLOAT, [1, 3], [1.0, 1.0, 1.0])])


@pytest.fixture(scope="module")
def vocab_size(tiny_artifacts: Path) -> int:
    return int(json.loads((tiny_artifacts / layout.MANIFEST_FILE).read_text())["vocab_size"])


@pytest.fixture(scope="module")
def release(tiny_artifacts: Path, tiny_roberta_artifacts: Path, vocab_size: int,
            tmp_path_factory: pytest.TempPathFactory) -> Release:
    base = {"max_batch_size": MAX_BATCH, "max_queue_delay_us": QUEUE_DELAY_US, "sub_batch_size": 0}
    release = build_repository(
        [(WORDPIECE, tiny_artifacts, ModelOptions(**base, preprocessing="python")),
         # warmup off: the number graph raises on the runner's warm-up text
         (NATIVE, tiny_roberta_artifacts, ModelOptions(**base, preprocessing="native", warmup=False))],
        tmp_path_factory.mktemp("bad-requests") / "repo")
    names = layout.model_names(WORDPIECE)
    tokenizer_json = layout.version_dir(release.path, names.tokenizer) / layout.TOKENIZER_DIR / "tokenizer.json"
    spec = json.loads(tokenizer_json.read_text())
    assert spec["model"]["type"] == "WordPiece" and spec["model"]["unk_token"] in spec["model"]["vocab"]
    spec["model"]["unk_token"] = "[NOT-IN-THE-VOCABULARY]"
    tokenizer_json.write_text(json.dumps(spec))
    onnx_file = layout.version_dir(release.path, names.classifier) / layout.FORMAT_FILES["onnx"]
    onnx_file.write_bytes(_sum_of_ids_graph(vocab_size - 1))
    native_file = layout.version_dir(release.path, layout.model_names(NATIVE).classifier) / layout.NATIVE_MODEL_FILE
    native_file.write_bytes(_number_graph())
    return release


@pytest.fixture(scope="module")
def server(release: Release, tmp_path_factory: pytest.TempPathFactory):
    http, grpc, metrics = free_ports(3)
    with TritonServer(release.path, http_port=http, grpc_port=grpc, metrics_port=metrics,
                      log_file=tmp_path_factory.mktemp("logs") / "tritonserver.log") as srv:
        yield srv


def _text(items: list[str] | list[bytes], mod=grpcclient):
    arr = np.array([[t.encode() if isinstance(t, str) else t] for t in items], dtype=np.object_)
    inp = mod.InferInput(layout.TEXT, list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    return [inp]


def _ids(rows: list[list[int]]):
    """Token ids of ragged rows, padded with 0 (the tiny model's pad id), and their mask."""
    width = max(map(len, rows))
    ids = np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    mask = np.array([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    inputs = [grpcclient.InferInput(layout.INPUT_IDS, list(ids.shape), "INT64"),
              grpcclient.InferInput(layout.ATTENTION_MASK, list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids)
    inputs[1].set_data_from_numpy(mask)
    return inputs


def _executions(server, model: str) -> int:
    stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(model, as_json=True)
    return int(stats["model_stats"][0].get("execution_count", 0))


def _send_together(server, model: str, requests: list) -> list:
    """Every request at once, one thread each: each one's result, or its InferenceServerException. Checks that the
    model served them all in one execute() (else the test would prove nothing)."""
    before = _executions(server, model)

    def one(inputs):
        try:
            return grpcclient.InferenceServerClient(server.grpc_url).infer(model, inputs)
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        results = list(pool.map(one, requests))
    assert _executions(server, model) - before == 1, "the requests did not share one execute()"
    return results


def _assert_refused(result, status: str, message: str) -> None:
    assert isinstance(result, InferenceServerException), result
    assert result.status() == status and message in result.message(), (result.status(), result.message())


# --- a request larger than anything a model takes (item 1 of issue 19) -------------------------------------------

#: MAX_BATCH texts of 1 MiB: 16 MiB, 64 times the largest request the model takes (MAX_BATCH texts of max_text_bytes).
OVERSIZED = [b"a" * 2**20] * MAX_BATCH
#: The model each path serves raw text with, and a text it answers.
TEXT_MODELS = {"python tokenizer": (WORDPIECE, "still serving?"), "native": (NATIVE, "7")}


@pytest.mark.parametrize("path", list(TEXT_MODELS))
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_oversized_request_is_refused_and_the_server_stays_ready(server, protocol, path):
    """Triton 2.51 has no request-size option (src/tritonfleet/serve.py): it hands the request to the model, whose
    text checks refuse it, and goes on serving."""
    model, good = TEXT_MODELS[path]
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    with pytest.raises(InferenceServerException) as err:
        client.infer(model, _text(OVERSIZED, mod))
    assert err.value.status() == ("400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT")
    assert f"TEXT[0] is {2**20} bytes; the limit is 16384 (parameter max_text_bytes)" in err.value.message()
    assert client.is_server_ready()
    assert client.infer(model, _text([good], mod)).as_numpy(layout.LABEL).shape == (1, 1)


# --- one request that makes a step raise, batched with good ones (item 2 of issue 19) ----------------------------

def test_a_text_the_tokenizer_raises_on_fails_only_its_own_request(server, release):
    from tokenizers import Tokenizer

    names = layout.model_names(WORDPIECE)
    tok = Tokenizer.from_file(str(layout.version_dir(release.path, names.tokenizer) / layout.TOKENIZER_DIR
                                  / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    batch = [["the team won the match"], ["I love it", "the service was slow"], [UNKNOWN_TO_THE_TOKENIZER],
             ["a fine day"], ["what a great film", "terrible", "ok"], ["a fine text", UNKNOWN_TO_THE_TOKENIZER],
             ["see you tomorrow"]]
    bad = {2, 5}
    results = _send_together(server, names.tokenizer, [_text(texts) for texts in batch])
    for r, (texts, result) in enumerate(zip(batch, results, strict=True)):
        if r in bad:
            _assert_refused(result, "StatusCode.INVALID_ARGUMENT", "the tokenizer cannot encode this request's TEXT")
            continue
        assert not isinstance(result, InferenceServerException), (texts, result.message())
        ids, mask = result.as_numpy(layout.INPUT_IDS), result.as_numpy(layout.ATTENTION_MASK)
        assert [list(row[m == 1]) for row, m in zip(ids, mask, strict=True)] == [tok.encode(t).ids for t in texts]


def test_a_text_the_native_model_raises_on_fails_only_its_own_request(server):
    batch = [["1"], ["2", "3"], ["not a number"], ["4.5"], ["5", "nor this"], ["6", "7", "8"]]
    bad = {2, 4}
    results = _send_together(server, layout.model_names(NATIVE).classifier, [_text(texts) for texts in batch])
    for r, (texts, result) in enumerate(zip(batch, results, strict=True)):
        if r in bad:
            _assert_refused(result, "StatusCode.INTERNAL", "the model failed on")
            continue
        assert not isinstance(result, InferenceServerException), (texts, result.message())
        np.testing.assert_array_equal(result.as_numpy(layout.LOGITS), [[float(t)] * 3 for t in texts])


def test_token_ids_the_model_raises_on_fail_only_their_own_request(server, vocab_size):
    """The runner's tensor path (the article's interface, ragged rows): the same isolation."""
    last = vocab_size - 1  # a valid id that the graph's table lacks
    batch = [[[101, 7, 102]], [[101, 2000, 3000, 102], [101, 102]], [[101, last, 102]], [[5] * 40],
             [[101, 9, 102], [101, 8, last, 102]], [[1, 2], [3, 4, 5, 6], [7]]]
    bad = {2, 4}
    results = _send_together(server, layout.model_names(WORDPIECE).classifier, [_ids(rows) for rows in batch])
    for r, (rows, result) in enumerate(zip(batch, results, strict=True)):
        if r in bad:
            _assert_refused(result, "StatusCode.INTERNAL", "the model failed on input of shape")
            continue
        assert not isinstance(result, InferenceServerException), (rows, result.message())
        np.testing.assert_array_equal(result.as_numpy(layout.LOGITS), [[float(sum(row))] * 3 for row in rows])
