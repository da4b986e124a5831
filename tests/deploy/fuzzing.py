"""Malformed inference requests for the fuzz test, generated with hypothesis.

Every request starts from a valid one and gets at least one defect a client could make: a wrong shape, dtype,
size, tensor name, model name, text encoding, header, or a truncated, garbled or oversized body. The values
inside each defect are hypothesis's to choose. A server must answer every one with a client error (HTTP 4xx, gRPC
INVALID_ARGUMENT and its kin), never with a server error, a hang or a crash.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from tritonfleet import layout

#: gRPC statuses that tell the client its request was wrong (not a failure of the server).
CLIENT_ERROR_STATUSES = {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.OUT_OF_RANGE",
                         "StatusCode.FAILED_PRECONDITION", "StatusCode.UNIMPLEMENTED",
                         "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.PERMISSION_DENIED"}
WRONG_DTYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16", "NONSENSE", ""]
WRONG_NAMES = ["text", "INPUT__0", "", "TËXT", "TEXT " * 50]
WRONG_MODELS = ["no_such_model", "", "../etc/passwd", "sentiment/../topic", "x" * 300]

good_texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)


def triton_batch(first_dim: int) -> int:
    """The number of texts Triton 2.51 expects of a [first_dim, 1] BYTES input: it counts in 32 bits, and a count
    of 0 becomes 1 (measured on the fleet). Such a request is served as the texts it carries; its models see a
    shape that matches them, so none can refuse it, and the load balancer cannot read gRPC. The fuzzer leaves
    these shapes out; docs/DEPLOY.md says so."""
    return first_dim % 2**32 or 1


@dataclass
class Tensor:
    name: str = layout.TEXT
    datatype: str = "BYTES"
    shape: list[int] = field(default_factory=lambda: [1, 1])
    items: list[bytes] = field(default_factory=lambda: [b"a text"])
    raw: bytes | None = None  # the tensor's bytes as sent, when a defect garbles the serialization

    def serialized(self) -> bytes:
        """BYTES tensor serialization: a 4-byte little-endian length before each element."""
        if self.raw is not None:
            return self.raw
        return b"".join(struct.pack("<I", len(b)) + b for b in self.items)


@dataclass
class Request:
    defect: str
    model: str = layout.DEFAULT_MODEL_NAME
    tensors: list[Tensor] = field(default_factory=lambda: [Tensor()])


@st.composite
def malformed(draw: st.DrawFn, max_batch_size: int) -> Request:
    """A request with one defect (and the values of that defect chosen by hypothesis)."""
    n = draw(st.integers(1, max_batch_size))
    items = [t.encode() for t in draw(st.lists(good_texts, min_size=n, max_size=n))]
    tensor = Tensor(items=items, shape=[n, 1])
    req = Request(defect=draw(st.sampled_from(
        ["dtype", "name", "shape-mismatch", "shape-huge", "shape-negative", "empty-text", "blank-text",
         "oversized-text", "non-utf8", "lying-length", "truncated", "no-input", "two-inputs", "model",
         "over-max-batch"])), tensors=[tensor])
    d = req.defect
    if d == "dtype":
        tensor.datatype = draw(st.sampled_from(WRONG_DTYPES))
    elif d == "name":
        tensor.name = draw(st.sampled_from(WRONG_NAMES))
    elif d == "shape-mismatch":
        tensor.shape = [draw(st.integers(0, 64).filter(lambda k: triton_batch(k) != n)), 1]
    elif d == "shape-huge":
        tensor.shape = [draw(st.sampled_from([2**31, 2**40, 2**62])), draw(st.integers(1, 2**20))]
        if tensor.shape[1] == 1 and triton_batch(tensor.shape[0]) == n:
            tensor.shape[1] = 2
    elif d == "shape-negative":
        tensor.shape = [draw(st.integers(-(2**40), -1).filter(lambda k: triton_batch(k) != n)), 1]
    elif d == "empty-text":
        tensor.items[draw(st.integers(0, n - 1))] = b""
    elif d == "blank-text":
        tensor.items[draw(st.integers(0, n - 1))] = draw(st.text(" \t\n\r", min_size=1, max_size=20)).encode()
    elif d == "oversized-text":
        tensor.items[draw(st.integers(0, n - 1))] = b"x" * draw(st.integers(16_385, 200_000))
    elif d == "non-utf8":
        tensor.items[draw(st.integers(0, n - 1))] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"a\xed\xa0\x80b",
                                                                        b"\x80" * 8]))
    elif d == "lying-length":
        tensor.raw = struct.pack("<I", draw(st.integers(41, 2**32 - 1))) + draw(st.binary(max_size=40))
    elif d == "truncated":
        whole = tensor.serialized()
        tensor.raw = whole[: draw(st.integers(1, len(whole) - 1))]
    elif d == "no-input":
        req.tensors = []
    elif d == "two-inputs":
        req.tensors.append(Tensor(name=draw(st.sampled_from(["EXTRA", layout.TEXT]))))
    elif d == "model":
        req.model = draw(st.sampled_from(WRONG_MODELS))
    elif d == "over-max-batch":
        extra = draw(st.integers(max_batch_size + 1, 4 * max_batch_size))
        tensor.items = (items * extra)[:extra]
        tensor.shape = [extra, 1]
    return req


@st.composite
def http_requests(draw: st.DrawFn, max_batch_size: int) -> tuple[str, dict[str, str], bytes, str]:
    """(model, headers, body, defect) of a POST /v2/models/<model>/infer that is wrong: a malformed request as
    JSON, or an HTTP-level defect (not JSON, truncated JSON, a lying binary-tensor header, a wrong content type
    with a binary body)."""
    req = draw(malformed(max_batch_size))
    level = draw(st.sampled_from(["json", "json", "not-json", "truncated-json", "binary-header"]))

    def tensor_json(t: Tensor) -> dict[str, Any]:
        data: Any = [b.decode("latin-1") for b in t.items] if t.raw is None else t.raw.decode("latin-1")
        return {"name": t.name, "shape": t.shape, "datatype": t.datatype, "data": data}

    body = json.dumps({"inputs": [tensor_json(t) for t in req.tensors]}).encode()
    headers = {"Content-Type": "application/json"}
    if level == "json" and req.defect not in ("non-utf8", "lying-length", "truncated"):
        return req.model, headers, body, req.defect  # JSON carries text, not bytes: those defects need the rest
    if level == "not-json":
        return req.model, headers, draw(st.binary(min_size=1, max_size=200).filter(lambda b: b[:1] != b"{")), level
    if level == "truncated-json" or req.defect in ("non-utf8", "lying-length", "truncated"):
        return req.model, headers, body[: draw(st.integers(0, len(body) - 1))], "truncated-json"
    # Binary tensor extension: the header says its JSON part is longer or shorter than it is.
    t = req.tensors[0] if req.tensors else Tensor()
    header = json.dumps({"inputs": [{"name": t.name, "shape": t.shape, "datatype": t.datatype,
                                     "parameters": {"binary_data_size": len(t.serialized())}}]}).encode()
    # A declared length of 0 is not a lie that Triton can misread: it means "no binary part" and Triton 2.51 reads
    # the leading JSON and answers it (measured). The lies are a header shorter or longer than the JSON.
    lie = draw(st.integers(1 - len(header), 1000).filter(lambda k: k != 0))
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(header) + lie)}
    return req.model, headers, header + t.serialized(), "binary-header"


# --- smuggled model names -----------------------------------------------------------------------------------------

def varint(value: int, padding: int = 0) -> bytes:
    """Protobuf's varint of value, with `padding` extra bytes of zeros (a longer encoding parsers still accept)."""
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    if padding:
        out[-1] |= 0x80
        out += b"\x80" * (padding - 1) + b"\x00"
    return bytes(out)


@st.composite
def name_field(draw: st.DrawFn, names: list[str]) -> bytes:
    """Field 1 (the model's name) as a string, with its tag and length in the shortest encoding or a longer one."""
    name = draw(st.sampled_from(names)).encode()
    return (varint(1 << 3 | 2, draw(st.integers(0, 3))) + varint(len(name), draw(st.integers(0, 3))) + name)


@st.composite
def smuggled(draw: st.DrawFn, public: list[str], internal: list[str], rest: bytes) -> bytes:
    """A request message that names an internal model in field 1, perhaps beside public names, in any order:
    field 1 repeated (protobuf keeps the last), of another wire type (a varint, 4 or 8 bytes, which protobuf
    skips as unknown), and around the other fields of a real request (`rest`). The message's bytes: gRPC frames
    them."""
    parts = [draw(name_field(internal))]
    parts += draw(st.lists(name_field(public + internal), max_size=3))
    parts += draw(st.lists(st.sampled_from([varint(1 << 3 | 0) + varint(7), varint(1 << 3 | 5) + b"\x01\x02\x03\x04",
                                            varint(1 << 3 | 1) + bytes(8)]), max_size=2))
    if rest:
        parts.append(rest)
    return b"".join(draw(st.permutations(parts)))
