"""Native (C++) preprocessing: the Hugging Face tokenizer as onnxruntime-extensions ops inside the model graph.

`tokenizer_graph` turns a fast tokenizer into an ONNX graph (raw text in, the classifier's token ids and mask
out) with the tokenizer op that onnxruntime-extensions generates for it (`gen_processing_models`), plus standard
ONNX ops for what that op does not do as the served python tokenizer does: the batch layout Triton uses (TEXT
[batch, 1]) and truncation to the model's maximum length keeping the closing special token. `merge` puts that
graph in front of a classifier export: one ONNX model, raw text in, logits out.

Nothing here tokenizes by hand: the graph runs the extensions' C++ tokenizer. Whether it tokenizes as the python
path does (the `tokenizers` library on tokenizer.json, which the tokenizer model serves) is measured, never
assumed (`measure_parity`): on generated texts of every kind (`parity_texts`) the token ids must be equal, and
labels through the merged model equal those through the python path. A tokenizer that differs on any text is
refused: `resolve` (build-repo) will not serve it natively.

Known: onnxruntime-extensions 0.15's converter leaves BERT's accent stripping off when the tokenizer lowercases
with `strip_accents` unset (the Hugging Face rule is: strip when lowercasing), so `tokenizer_graph` passes the
rule explicitly; its BertTokenizer op still differs on characters whose lowercase it does not know (e.g. Roman
numerals). transformers 5 has no slow RobertaTokenizer, whose vocabulary and merges the converter reads: they are
read from tokenizer.json instead (`_SlowBpeView`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import layout
from .errors import ParityError, UsageError

logger = logging.getLogger(__name__)

#: The graph's tensors: its input is the ensemble's TEXT, its outputs the classifier's inputs.
TEXT = layout.TEXT
#: Tokenizer classes onnxruntime-extensions can put in a graph here, and whether its op batches (pads) texts.
BATCHABLE = {"BertTokenizer": False, "RobertaTokenizer": True}
#: How many texts the parity listing shows (all are counted).
LISTED = 25
#: Texts whose labels are compared through the merged model (besides every text whose ids differ).
LABEL_SAMPLE = 200


def library_path() -> str:
    """The onnxruntime-extensions custom-op library (registered in every session that runs a native graph)."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise UsageError("native preprocessing needs onnxruntime-extensions (pip install onnxruntime-extensions)") \
            from None
    return get_library_path()


def session(model: Any, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session of a native graph (a ModelProto, bytes or a path), extensions registered."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.register_custom_ops_library(library_path())
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


class _SlowBpeView:
    """What the extensions' RobertaTokenizer converter reads from a slow tokenizer (encoder, bpe_ranks), taken from
    the fast tokenizer's tokenizer.json: transformers 5 has no slow RobertaTokenizer any more."""

    def __init__(self, tokenizer_json: dict[str, Any]) -> None:
        model = tokenizer_json["model"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.encoder = dict(model["vocab"])
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.added_tokens_encoder: dict[str, int] = {}


def tokenizer_kind(tokenizer: Any) -> str:
    """The tokenizer's class without "Fast" (e.g. BertTokenizer); UsageError when no native op exists for it."""
    name = type(tokenizer).__name__.removesuffix("Fast")
    if name not in BATCHABLE:
        raise UsageError(f"no native tokenizer op for {name} here (supported: {', '.join(BATCHABLE)})")
    return name


def _op_graph(tokenizer: Any, kind: str) -> Any:
    from onnxruntime_extensions import gen_processing_models

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if kind == "BertTokenizer":
        norm = spec.get("normalizer") or {}
        lowercase = bool(norm.get("lowercase", getattr(tokenizer, "do_lower_case", False)))
        strip = norm.get("strip_accents")
        # Hugging Face: strip_accents None follows lowercase; the converter would leave it off.
        pre, _ = gen_processing_models(tokenizer, pre_kwargs={"strip_accents": int(lowercase if strip is None
                                                                                     else bool(strip))})
    else:
        view = type("RobertaTokenizer", (_SlowBpeView,), {})(spec)
        pre, _ = gen_processing_models(view, pre_kwargs={})
    return pre


def tokenizer_graph(tokenizer: Any, max_length: int, opset: int = 17) -> Any:
    """TEXT (string [batch, 1]) -> INPUT__0 ids, INPUT__1 mask (int64 [batch, length]) with the extensions'
    tokenizer op, truncated to `max_length` as the python path truncates (the closing special token kept)."""
    import onnx
    from onnx import TensorProto, helper

    kind = tokenizer_kind(tokenizer)
    pre = _op_graph(tokenizer, kind)
    op = pre.graph.node[0]
    outs = [o.name for o in pre.graph.output]
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if eos is None:
        raise UsageError(f"{kind}: no closing special token (sep/eos) to keep when truncating")
    ids_out, mask_out = outs[0], outs[outs.index("attention_mask")]
    node = helper.make_node(op.op_type, ["text_flat"], [f"tok_{o}" for o in outs], domain=op.domain,
                            name="tokenizer")
    node.attribute.extend(op.attribute)
    c = helper.make_tensor
    nodes = [helper.make_node("Reshape", [TEXT, "flat_shape"], ["text_flat"]), node]
    ids, mask = f"tok_{ids_out}", f"tok_{mask_out}"
    if not BATCHABLE[kind]:  # one text: the op returns [length]
        nodes += [helper.make_node("Unsqueeze", [ids, "axis0"], ["ids2"]),
                  helper.make_node("Unsqueeze", [mask, "axis0"], ["mask2"])]
        ids, mask = "ids2", "mask2"
    nodes += [
        helper.make_node("Cast", [ids], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Cast", [mask], ["mask64"], to=TensorProto.INT64),
        # truncation: the first max_length-1 tokens, then the row's own last token or, if it was longer, eos
        helper.make_node("Slice", ["ids64", "zero", "m_minus_1", "axis1"], ["head"]),
        helper.make_node("Slice", ["ids64", "m_minus_1", "m", "axis1"], ["last"]),
        helper.make_node("ReduceSum", ["mask64", "axis1"], ["lengths"], keepdims=1),
        helper.make_node("Greater", ["lengths", "m"], ["overflow"]),
        helper.make_node("Where", ["overflow", "eos", "last"], ["last_kept"]),
        helper.make_node("Concat", ["head", "last_kept"], [layout.INPUT_IDS], axis=1),
        helper.make_node("Slice", ["mask64", "zero", "m", "axis1"], [layout.ATTENTION_MASK]),
    ]
    inits = [c("flat_shape", TensorProto.INT64, [1], [-1]),
             *([] if BATCHABLE[kind] else [c("axis0", TensorProto.INT64, [1], [0])]),
             c("axis1", TensorProto.INT64, [1], [1]), c("zero", TensorProto.INT64, [1], [0]),
             c("m", TensorProto.INT64, [1], [max_length]), c("m_minus_1", TensorProto.INT64, [1], [max_length - 1]),
             c("eos", TensorProto.INT64, [], [int(eos)]), *pre.graph.initializer]
    graph = helper.make_graph(
        nodes, "native_tokenizer",
        [helper.make_tensor_value_info(TEXT, TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info(layout.INPUT_IDS, TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info(layout.ATTENTION_MASK, TensorProto.INT64, ["batch", "sequence"])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid("ai.onnx.contrib", 1)])
    model.ir_version = 8
    model.doc_string = f"tritonfleet native tokenizer: {kind} (onnxruntime-extensions), max_length {max_length}"
    onnx.checker.check_model(model)
    return model


def merge(tokenizer_model: Any, classifier_file: Path) -> Any:
    """One model: the tokenizer graph in front of the classifier export (TEXT in, OUTPUT__0 logits out)."""
    import onnx
    from onnx import compose, helper

    clf = onnx.load(str(classifier_file))
    tok = onnx.ModelProto()
    tok.CopyFrom(tokenizer_model)
    tok.ir_version = clf.ir_version
    default = next(o.version for o in clf.opset_import if o.domain in ("", "ai.onnx"))
    del tok.opset_import[:]
    tok.opset_import.extend([helper.make_opsetid("", default), helper.make_opsetid("ai.onnx.contrib", 1)])
    tok = compose.add_prefix(tok, "native/", rename_inputs=False)
    merged = compose.merge_models(tok, clf, io_map=[(f"native/{layout.INPUT_IDS}", layout.INPUT_IDS),
                                                    (f"native/{layout.ATTENTION_MASK}", layout.ATTENTION_MASK)])
    merged.doc_string = f"{tokenizer_model.doc_string}, then {Path(classifier_file).name}"
    return merged


def run_texts(sess: Any, texts: Sequence[str]) -> list[np.ndarray]:
    """Every output of a native session for a batch of texts."""
    return sess.run(None, {TEXT: np.array([[t] for t in texts], dtype=object)})


# --- parity ---------------------------------------------------------------------------------------------------

_WORDS = ("good", "bad", "service", "waited", "hours", "friendly", "staff", "price", "quality", "love", "hate",
          "movie", "phone", "battery", "screen", "delivery", "refund", "support", "update", "crash", "fast",
          "slow", "cheap", "expensive", "music", "food", "coffee", "hotel", "room")
_ACCENTED = ["Ça coûte 5€ — naïve café", "crème brûlée à la façon", "Ångström über São Paulo", "niño señor mañana",
             "Łódź Kraków Gdańsk", "Dvořák Čapek Škoda", "résumé fiancée déjà vu", "ÉCOLE ÉTÉ À BIENTÔT",
             "Zürich Müller straße", "İstanbul ılık Ağrı"]
_CJK = ["東京は晴れです", "我喜欢这部电影", "서비스가 정말 좋아요", "とても美味しかった", "价格太贵了",
        "日本語 と English の mix", "これは テスト です", "好 不好", "今日はありがとう！", "漢字かなカナ"]
_EMOJI = ["😊", "👍🏽", "👨‍👩‍👧", "🔥🔥🔥", "❤️", "🙄", "😡", "🎉", "🤷‍♀️", "🇫🇷"]
_URLS = ["https://example.com/a?b=1&c=2", "http://shop.test/item/123#reviews", "www.example.org/path_to/page.html",
         "mailto:someone@example.com", "ftp://files.test/x.tar.gz", "https://t.co/AbC123xyz"]
_ODD = ["Ⅻ", "ﬁnance ﬂow", "ǅemal", "ß", "ＦＵＬＬＷＩＤＴＨ", "e\u0301", "zero\u200bwidth", "\u00a0nbsp\u00a0",
        "שלום", "مرحبا", "Привет мир", "Ω≈ç√∫", "½ ¾ ²", "™ © ®", "ǈ ǋ", "\u2028line sep"]
_SPACES = ["  ", "\t", "\n", "\r\n", "   \t  ", "\u3000", "\n\n\n"]


def parity_texts(count: int, golden: Sequence[str], seed: int = 11) -> list[tuple[str, str]]:
    """At least `count` (category, text) pairs: the golden texts, then generated texts of every kind the served
    tokenizer meets: plain, emoji, accents, CJK, URLs, whitespace runs, unusual Unicode, and texts far over any
    maximum length. Blank texts are left out: the server refuses them before tokenizing."""
    rng = random.Random(seed)
    out = [("golden", t) for t in golden if t.strip()]

    def words(n: int) -> list[str]:
        return [rng.choice(_WORDS) for _ in range(n)]

    makers: list[tuple[str, Callable[[], str]]] = [
        ("plain", lambda: " ".join(words(rng.randint(1, 30))).capitalize() + rng.choice([".", "!", "?", ""])),
        ("emoji", lambda: " ".join(words(rng.randint(1, 8)) + [rng.choice(_EMOJI) for _ in range(rng.randint(1, 3))])),
        ("accents", lambda: f"{rng.choice(_ACCENTED)} {' '.join(words(rng.randint(0, 6)))}"),
        ("cjk", lambda: f"{rng.choice(_CJK)}{rng.choice(['', ' ', '。'])}{' '.join(words(rng.randint(0, 3)))}"),
        ("urls", lambda: f"{' '.join(words(rng.randint(0, 5)))} {rng.choice(_URLS)} {' '.join(words(2))}"),
        ("whitespace", lambda: rng.choice(_SPACES).join(words(rng.randint(2, 6))) + rng.choice(["", " ", "\t"])),
        ("unicode", lambda: f"{' '.join(words(rng.randint(0, 4)))} {rng.choice(_ODD)} {rng.choice(_ODD)}"),
        ("mixed_case", lambda: " ".join(w.upper() if rng.random() < 0.5 else w.title() for w in words(6))),
        ("numbers", lambda: f"{rng.randint(0, 10**6)} {rng.random() * 100:.2f}% {' '.join(words(3))} "
                            f"#{rng.randint(1, 99)}"),
        ("over_max_length", lambda: " ".join(words(rng.randint(600, 900)))),
    ]
    k = 0
    while len(out) < count:
        category, make = makers[k % len(makers)]
        text = make()
        if text.strip():
            out.append((category, text))
        k += 1
    return out


def python_ids(tokenizer_file: Path, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids as the served python tokenizer makes them (tokenizers on tokenizer.json, truncation on)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    return [list(e.ids) for e in tok.encode_batch(list(texts))]


def native_ids(sess: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids from a native tokenizer graph, one text per run (the graph's padding removed)."""
    out = []
    for text in texts:
        ids, mask = run_texts(sess, [text])[:2]
        out.append([int(i) for i, m in zip(ids[0], mask[0], strict=True) if m])
    return out


def measure_parity(tokenizer: Any, tokenizer_file: Path, max_length: int, golden: Sequence[str], count: int,
                   classifier: Path) -> tuple[dict[str, Any], Any | None]:
    """Parity of the native tokenizer graph with the python path on `count` texts: token ids of every text, and
    labels through the merged model (`classifier` behind the graph) on the texts whose ids differ and a sample.
    Returns (report, the tokenizer graph or None when no graph could be made)."""
    try:
        kind = tokenizer_kind(tokenizer)
        graph = tokenizer_graph(tokenizer, max_length)
        tok_sess = session(graph)
    except (UsageError, ImportError, ValueError, AttributeError, KeyError) as exc:
        return {"supported": False, "passed": False, "reason": f"no native tokenizer graph: {exc}"}, None
    cases = parity_texts(count, golden)
    texts = [t for _, t in cases]
    t0 = time.perf_counter()
    want = python_ids(tokenizer_file, texts, max_length)
    got = native_ids(tok_sess, texts)
    per_category: dict[str, dict[str, int]] = {}
    differ, differing = [], []
    for (category, text), a, b in zip(cases, want, got, strict=True):
        row = per_category.setdefault(category, {"texts": 0, "mismatches": 0})
        row["texts"] += 1
        if a != b:
            row["mismatches"] += 1
            differing.append(text)
            differ.append({"category": category, "text": text[:200], "python_ids": a[:40], "native_ids": b[:40]})
    try:
        labels = _label_parity(graph, classifier, tokenizer_file, max_length, differing, texts, want)
    except Exception as exc:  # noqa: BLE001 - a graph that cannot be merged or run fails parity, not the conversion
        labels = {"texts": 0, "differ": 1, "listing": [], "error": " ".join(str(exc).split())[:500]}
    passed = not differ and labels["differ"] == 0
    report = {
        "supported": True, "op": kind, "batchable": BATCHABLE[kind], "texts": len(texts),
        "categories": per_category, "mismatches": len(differ), "listing": differ[:LISTED], "labels": labels,
        "speed": tokenization_speed(tokenizer_file, tok_sess, texts, max_length, BATCHABLE[kind]),
        "passed": passed, "seconds": round(time.perf_counter() - t0, 1),
        "reason": ("token ids and labels equal the python path on every text" if passed else
                   f"{len(differ)} of {len(texts)} texts tokenize differently"
                   + (f" (first: {differ[0]['category']} {differ[0]['text'][:60]!r})" if differ else "")
                   + (f"; labels: {labels['error']}" if "error" in labels else
                      f"; {labels['differ']} labels differ" if labels["differ"] else "")),
    }
    logger.info("native preprocessing (%s): %s", kind, report["reason"])
    return report, graph


def _label_parity(graph: Any, classifier: Path, tokenizer_file: Path, max_length: int, differing: list[str],
                  texts: list[str], ids: list[list[int]]) -> dict[str, Any]:
    """Labels through the merged model against the classifier on the python path's ids."""
    from .convert import onnx_runner

    sample = random.Random(3).sample(range(len(texts)), min(LABEL_SAMPLE, len(texts)))
    chosen = list(dict.fromkeys([*differing, *(texts[i] for i in sample)]))
    by_text = dict(zip(texts, ids, strict=True))
    merged = session(merge(graph, classifier))
    plain = onnx_runner(classifier, threads=1)
    worst, bad = 0.0, []
    for text in chosen:
        want_ids = np.asarray([by_text[text]], dtype=np.int64)
        want = plain(want_ids, np.ones_like(want_ids))[0]
        try:
            got = merged.run([layout.LOGITS], {TEXT: np.array([[text]], dtype=object)})[0][0]
        except Exception as exc:  # noqa: BLE001 - e.g. ids the model cannot take: a difference, listed
            bad.append(f"{text[:150]} (the merged model failed: {' '.join(str(exc).split())[:200]})")
            continue
        if int(got.argmax()) != int(want.argmax()):
            bad.append(text[:200])
        if text not in differing:
            worst = max(worst, float(np.abs(got - want).max()))
    return {"texts": len(chosen), "differ": len(bad), "listing": bad[:LISTED],
            "max_abs_logit_diff_same_ids": worst}


def tokenization_speed(tokenizer_file: Path, sess: Any, texts: list[str], max_length: int,
                       batchable: bool, batch: int = 32) -> dict[str, float]:
    """Texts per second of each path's preprocessing (in batches of `batch`: tokenize, pad), here, one thread."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    sample = [t for t in texts if len(t) < 2000][:1024]

    def python_path(chunk: list[str]) -> None:
        enc = tok.encode_batch(chunk)
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), dtype=np.int64)
        for r, e in enumerate(enc):
            ids[r, :len(e.ids)] = e.ids

    def native_path(chunk: list[str]) -> None:
        if batchable:
            run_texts(sess, chunk)
        else:
            for text in chunk:
                run_texts(sess, [text])

    out = {}
    for name, fn in (("python_texts_per_s", python_path), ("native_texts_per_s", native_path)):
        t0 = time.perf_counter()
        for i in range(0, len(sample), batch):
            fn(sample[i:i + batch])
        out[name] = round(len(sample) / (time.perf_counter() - t0), 1)
    return out


def resolve(mode: str, fmt: str, backend: str, report: dict[str, Any] | None) -> tuple[str, str]:
    """The preprocessing a model is served with, and why: `python` as asked; `native` only where the conversion's
    parity passed (ParityError otherwise: the build refuses it); `auto`: native where parity passed and its
    measured preprocessing speed is at least the python path's, else python."""
    if mode == "python":
        return "python", "asked for"
    why_not = None
    if fmt == "torchscript" or backend == "pytorch":
        why_not = "the TorchScript export cannot hold the tokenizer ops"
    elif not report:
        why_not = "the conversion did not measure native parity (convert again with this version)"
    elif not report.get("passed"):
        why_not = f"native parity failed: {report.get('reason')}"
    if mode == "native":
        if why_not:
            raise ParityError(f"native preprocessing refused: {why_not}")
        return "native", report["reason"]  # type: ignore[index]
    if why_not:
        return "python", f"auto: {why_not}"
    speed = report["speed"]  # type: ignore[index]
    if speed["native_texts_per_s"] >= speed["python_texts_per_s"]:
        return "native", f"auto: parity passed and native preprocessing is faster ({speed})"
    return "python", f"auto: parity passed but the python path's preprocessing is faster ({speed})"
