"""Setup R, the framework a user would pick instead of Triton: Ray Serve with `@serve.batch` dynamic batching.

The same ONNX Runtime model file, session options and thread budget as setup C (replicas x intra-op threads =
C's instances x threads), raw text in, label out, over HTTP (POST /predict {"text": ...}), as the loadgen's
http-text mode sends it. Configured for throughput as Ray Serve's documentation recommends: `@serve.batch` with
a small wait, `max_ongoing_requests` above the batch size so that batches can fill (the default, 5, caps every
batch at 5), one replica per unit of the CPU budget, logging off the request path, no dashboard.
Each batch does what C's runner does: fast tokenization (batched), sorted by length, `sub_batch_size` texts per
run (1 for dynamic int8: the same semantics as C), padding to each run's longest text, softmax, label.

Run as `python -m tritonfleet.bench.ray_app --config JSON --port PORT`: it starts a local Ray (its processes are
children of this one), deploys, prints "ready" and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

import numpy as np

from .. import layout

#: Ray Serve's settings, from its performance guide: batch size and wait, and requests in flight per replica.
RAY_SETTINGS = {"max_batch_size": 32, "batch_wait_timeout_s": 0.005, "max_ongoing_requests": 64}


class Classifier:
    """The deployment's class (decorated in `build_app`): ONNX Runtime session + fast tokenizer, batched."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(cfg["threads"])
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(cfg["model_file"], so, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(cfg["tokenizer_file"])
        self.tok.enable_truncation(max_length=int(cfg["max_length"]))
        self.tok.no_padding()
        self.pad_id = int(cfg["pad_token_id"])
        self.labels = list(cfg["labels"])
        self.sub_batch_size = int(cfg["sub_batch_size"])
        self.max_text_bytes = int(cfg["max_text_bytes"])

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        encs = self.tok.encode_batch(texts)
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
        step = self.sub_batch_size or len(order)
        logits = np.zeros((len(encs), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), step):
            rows = order[start:start + step]
            width = max(len(encs[i].ids) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for k, i in enumerate(rows):
                ids[k, :len(encs[i].ids)] = encs[i].ids
                mask[k, :len(encs[i].ids)] = 1
            out = self.session.run([layout.LOGITS], {layout.INPUT_IDS: ids, layout.ATTENTION_MASK: mask})[0]
            logits[rows] = out
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = z / z.sum(axis=1, keepdims=True)
        return [{"label": self.labels[int(s.argmax())], "scores": [float(x) for x in s]} for s in scores]


def build_app(cfg: dict[str, Any]) -> Any:
    """The Ray Serve application of `cfg` (model file, tokenizer, replicas, threads, batching)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    settings = {**RAY_SETTINGS, **cfg.get("ray", {})}

    @serve.deployment(num_replicas=int(cfg["replicas"]), ray_actor_options={"num_cpus": int(cfg["threads"])},
                      max_ongoing_requests=int(settings["max_ongoing_requests"]),
                      logging_config={"enable_access_log": False, "log_level": "WARNING"})
    class RayClassifier(Classifier):
        @serve.batch(max_batch_size=int(settings["max_batch_size"]),
                     batch_wait_timeout_s=float(settings["batch_wait_timeout_s"]))
        async def predict(self, texts: list[str]) -> list[dict[str, Any]]:
            return self.classify(texts)

        async def __call__(self, request: Request) -> Any:
            text = (await request.json()).get("text")
            if not isinstance(text, str) or not text.strip():
                return JSONResponse({"error": "text is empty; send at least one non-blank character"}, 400)
            if len(text.encode("utf-8")) > self.max_text_bytes:
                return JSONResponse({"error": f"text is over {self.max_text_bytes} bytes"}, 400)
            return await self.predict(text)

    return RayClassifier.bind(cfg)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonfleet.bench.ray_app")
    p.add_argument("--config", required=True, help="JSON: model_file, tokenizer_file, max_length, pad_token_id, "
                                                   "labels, replicas, threads, sub_batch_size, max_text_bytes")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    cfg = json.loads(args.config)
    import ray
    from ray import serve

    cpus = int(cfg["replicas"]) * int(cfg["threads"])
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             object_store_memory=256 * 2**20, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config={"log_level": "WARNING"})
    serve.run(build_app(cfg), name="tritonfleet", route_prefix="/predict")
    print("ready", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
