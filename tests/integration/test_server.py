"""Against a real tritonserver: smoke test over gRPC and HTTP, dynamic batching, and bad requests."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tritonfleet import layout
from tritonfleet.client import TextClient
from tritonfleet.demo import TASKS
from tritonfleet.demo.sentiment import ARTICLE_SENTENCES
from tritonfleet.golden import GoldenEntry, GoldenFile
from tritonfleet.smoke import run_smoke_test, served_variant

from .conftest import MAX_BATCH, TOPIC

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_smoke_test_of_the_release_passes_for_both_models(server, release, protocol, capsys):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    assert run_smoke_test(url, protocol=protocol, release=release.path) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "checks passed" in out
    for name in release.names():
        assert f"{name}: single " in out and f"{name}: empty text refused" in out


def test_two_models_answer_from_one_server_each_with_its_own_labels(server):
    client = TextClient(server.grpc_url)
    sentiment = client.predict(["I love you so much!"])[0]
    topic = client.predict(["The team won the match in the last minute!"], TOPIC)[0]
    assert (sentiment.label, len(sentiment.scores)) == ("positive", 3)
    assert (topic.label, len(topic.scores)) == ("sports", 4)


def test_the_topic_model_meets_its_quality_bar_when_served(server):
    task = TASKS[TOPIC]
    client = TextClient(server.grpc_url, model=TOPIC)
    texts = [t for t, _ in task.held_out]
    preds = [p for i in range(0, len(texts), MAX_BATCH) for p in client.predict(texts[i:i + MAX_BATCH])]
    accuracy = sum(p.label == task.labels[want] for p, (_, want) in zip(preds, task.held_out, strict=True)) / len(texts)
    print(f"served topic model: held-out accuracy {accuracy:.1%} on {len(texts)} texts")
    assert accuracy >= task.min_accuracy
    checks = dict(task.checks)
    assert {t: p.label for t, p in zip(checks, client.predict(list(checks)), strict=True)} == checks


def test_smoke_test_compares_an_int8_server_with_the_int8_golden_outputs(int8_server, server, demo_artifacts):
    assert served_variant(TextClient(int8_server.grpc_url)) == "int8"
    assert served_variant(TextClient(server.grpc_url)) == "fp32"
    out = io.StringIO()
    assert run_smoke_test(int8_server.grpc_url, demo_artifacts / layout.GOLDEN_FILE, out=out) == 0, out.getvalue()
    assert "serving int8" in out.getvalue()


def test_smoke_test_fails_on_a_golden_mismatch(server, demo_artifacts, tmp_path, capsys):
    gold = GoldenFile.load(demo_artifacts / layout.GOLDEN_FILE)
    first = gold.entries[0]
    wrong = next(label for label in gold.labels if label != first.label)
    gold.entries[0] = GoldenEntry(first.text, wrong, first.logits, first.scores)
    gold.save(tmp_path / "tampered.json")
    assert run_smoke_test(server.grpc_url, tmp_path / "tampered.json") == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "label"), list(ARTICLE_SENTENCES.items()))
def test_article_sentences_get_their_labels(server, text, label):
    (pred,) = TextClient(server.grpc_url).predict([text])
    assert pred.label == label
    assert abs(sum(pred.scores) - 1.0) < 1e-4


def test_the_articles_plain_tensor_interface(server, demo_artifacts):
    """Client-side tokenization straight to the classifier, as in the article's client."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(demo_artifacts / layout.TOKENIZER_DIR))
    enc = tok("I love you so much!", return_tensors="np")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = _tensor_inputs(enc["input_ids"], enc["attention_mask"])
    logits = client.infer(layout.MODELS.classifier, inputs).as_numpy(layout.LOGITS)
    assert logits.shape == (1, 3)
    assert ["negative", "neutral", "positive"][int(logits[0].argmax())] == "positive"


def _exec_and_infer_counts(client: TextClient, model: str) -> tuple[int, int]:
    stats = client.statistics(model)["model_stats"][0]
    return int(stats.get("execution_count", 0)), int(stats.get("inference_count", 0))


def test_dynamic_batching_really_happens(server):
    client = TextClient(server.grpc_url)
    model = layout.MODELS.classifier
    e0, i0 = _exec_and_infer_counts(client, model)
    texts = [f"request number {i}: the weather is fine today" for i in range(96)]

    def one(text: str) -> str:
        return TextClient(server.grpc_url).predict([text])[0].label

    with ThreadPoolExecutor(max_workers=32) as pool:
        labels = list(pool.map(one, texts))
    assert len(labels) == 96
    e1, i1 = _exec_and_infer_counts(client, model)
    executions, inferences = e1 - e0, i1 - i0
    assert inferences == 96
    assert executions < inferences, f"{executions} executions for {inferences} inferences: no batching"


WORDS = "the service was slow but the food was really good and I would come back"


def test_each_request_gets_its_own_answer_when_batched(server, demo_artifacts):
    """Texts of many lengths, sent concurrently (one or several per request): the runner trims, sorts and
    splits each dynamic batch, and every request must still get the scores of its own texts, in order."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(demo_artifacts / layout.TOKENIZER_DIR / "tokenizer.json"))
    session = ort.InferenceSession(str(demo_artifacts / layout.ONNX_FILE), providers=["CPUExecutionProvider"])
    words = WORDS.split()
    texts = [" ".join(words[: 1 + (i * 7) % len(words)] * (1 + i % 4)) + f" ({i})" for i in range(60)]
    requests = [texts[i:i + 1 + i % 3] for i in range(0, 60, 2)]

    def reference(text: str) -> np.ndarray:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        logits = session.run([layout.LOGITS], {layout.INPUT_IDS: ids, layout.ATTENTION_MASK: np.ones_like(ids)})
        z = np.exp(logits[0][0] - logits[0][0].max())
        return z / z.sum()

    def one(batch: list[str]) -> list[list[float]]:
        return [p.scores for p in TextClient(server.grpc_url).predict(batch)]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, requests))
    for batch, scores in zip(requests, answers, strict=True):
        assert len(scores) == len(batch)
        for text, got in zip(batch, scores, strict=True):
            np.testing.assert_allclose(got, reference(text), atol=1e-4, err_msg=text)


def _grpc_infer(server, inputs):
    return grpcclient.InferenceServerClient(server.grpc_url).infer(layout.MODELS.ensemble, inputs)


def _text_input(items, name=layout.TEXT, datatype="BYTES", mod=grpcclient):
    arr = np.array(items, dtype=object).reshape(-1, 1)
    inp = mod.InferInput(name, list(arr.shape), datatype)
    inp.set_data_from_numpy(arr)
    return inp


def _int_input():
    inp = grpcclient.InferInput(layout.TEXT, [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    return inp


BAD_REQUESTS = {
    "empty text": (lambda: [_text_input([b""])], "empty"),
    "blank text": (lambda: [_text_input([b"   \n"])], "empty"),
    "100000-character text": (lambda: [_text_input([b"a" * 100_000])], "100000 bytes"),
    "non-UTF-8 bytes": (lambda: [_text_input([b"caf\xe9 \xff\xfe"])], "not valid UTF-8"),
    "one bad item in a batch": (lambda: [_text_input([b"fine", b"\xff"])], "TEXT[1] is not valid UTF-8"),
    "wrong dtype": (lambda: [_int_input()], "expects 'BYTES'"),
    "misnamed input": (lambda: [_text_input([b"hello"], name="TXT")], "TXT"),
    "missing input": (lambda: [], "expected 1 inputs but got 0"),
    "more items than max_batch_size": (lambda: [_text_input([b"hi"] * (MAX_BATCH + 1))],
                                       f"batch-size must be <= {MAX_BATCH}"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_invalid_arg_and_server_stays_ready(server, case):
    make, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as err:
        _grpc_infer(server, make())
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT", str(err.value)
    assert message in err.value.message()
    client = TextClient(server.grpc_url)
    assert client.ready()
    assert client.predict(["still serving?"])[0].label in ("negative", "neutral", "positive")


def test_bad_request_over_http_is_a_400(server):
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException) as err:
        client.infer(layout.MODELS.ensemble, [_text_input([b"\xff"], mod=httpclient)])
    assert err.value.status() == "400"
    assert "not valid UTF-8" in err.value.message()


def test_demo_model_meets_its_quality_bar_when_served(server):
    """The embedded default model, measured through the server: >= 85% on >= 60 held-out texts (never trained
    on), and the article's three sentences right."""
    from tritonfleet.demo.sentiment import HELD_OUT, LABELS

    assert len(HELD_OUT) >= 60
    client = TextClient(server.grpc_url)
    texts = [t for t, _ in HELD_OUT]
    preds = [p for i in range(0, len(texts), MAX_BATCH) for p in client.predict(texts[i:i + MAX_BATCH])]
    accuracy = sum(p.label == LABELS[want] for p, (_, want) in zip(preds, HELD_OUT, strict=True)) / len(HELD_OUT)
    print(f"served demo model: held-out accuracy {accuracy:.1%} on {len(HELD_OUT)} texts")
    assert accuracy >= 0.85
    assert {t: p.label for t, p in zip(ARTICLE_SENTENCES, client.predict(list(ARTICLE_SENTENCES)), strict=True)} \
        == ARTICLE_SENTENCES


# --- the int8 model -------------------------------------------------------------------------------------


def test_int8_scores_do_not_depend_on_the_texts_batched_together(int8_server, demo_artifacts):
    """Dynamic quantization scales a run's activations as a whole; served one row per run, every text gets the
    scores it gets alone, however the dynamic batcher groups it."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(demo_artifacts / layout.TOKENIZER_DIR / "tokenizer.json"))
    session = ort.InferenceSession(str(demo_artifacts / layout.ONNX_INT8_FILE), providers=["CPUExecutionProvider"])

    def alone(text: str) -> np.ndarray:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        logits = session.run([layout.LOGITS], {layout.INPUT_IDS: ids, layout.ATTENTION_MASK: np.ones_like(ids)})
        z = np.exp(logits[0][0] - logits[0][0].max())
        return z / z.sum()

    words = WORDS.split()
    texts = [" ".join(words[: 1 + (i * 5) % len(words)] * (1 + i % 3)) + f" #{i}" for i in range(48)]
    requests = [texts[i:i + 1 + i % 4] for i in range(0, 48, 3)]

    def one(batch: list[str]) -> list[list[float]]:
        return [p.scores for p in TextClient(int8_server.grpc_url).predict(batch)]

    client = TextClient(int8_server.grpc_url)
    e0, i0 = _exec_and_infer_counts(client, layout.MODELS.classifier)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(one, requests))
    e1, i1 = _exec_and_infer_counts(client, layout.MODELS.classifier)
    assert e1 - e0 < len(requests), "the requests never shared an execution: the test proves nothing"
    assert i1 - i0 == sum(len(b) for b in requests)
    for batch, scores in zip(requests, answers, strict=True):
        for text, got in zip(batch, scores, strict=True):
            np.testing.assert_allclose(got, alone(text), atol=1e-6, err_msg=text)


# --- the article's tensor interface, bad input ----------------------------------------------------------


def _tensor_inputs(ids: np.ndarray, mask: np.ndarray | None = None) -> list[grpcclient.InferInput]:
    mask = np.ones_like(ids) if mask is None else mask
    inputs = [grpcclient.InferInput(layout.INPUT_IDS, list(ids.shape), "INT64"),
              grpcclient.InferInput(layout.ATTENTION_MASK, list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids.astype(np.int64))
    inputs[1].set_data_from_numpy(mask.astype(np.int64))
    return inputs


BAD_TENSORS = {
    "token id past the vocabulary": (np.array([[0, 10**9, 2]]), "token ids must lie in"),
    "negative token id": (np.array([[0, -5, 2]]), "token ids must lie in"),
    "zero-length sequence": (np.zeros((1, 0)), "at least one token"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_tensor_request_gets_invalid_arg_and_spares_its_batch(server, case):
    """A bad request to the classifier fails alone: requests that share its dynamic batch are answered."""
    ids, message = BAD_TENSORS[case]
    good = np.array([[0, 100, 200, 300, 2]])

    def send(arr: np.ndarray):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return client.infer(layout.MODELS.classifier, _tensor_inputs(arr)).as_numpy(layout.LOGITS)
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, [good] * 3 + [ids] + [good] * 3))
    bad = results[3]
    assert isinstance(bad, InferenceServerException), bad
    assert bad.status() == "StatusCode.INVALID_ARGUMENT" and message in bad.message(), bad.message()
    others = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, np.ndarray) and r.shape == (1, 3) for r in others), others
    assert TextClient(server.grpc_url).ready()
