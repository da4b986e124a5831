"""Setup D, the raw limit: the served runtime and model in-process (onnxruntime session), no server.

Each batch does the work the served pipeline does per text: tokenize (fast tokenizer, batched), then run the
session, either on the whole batch padded to its longest text, or (sub-batch size s > 0, what the python
runner does with --sub-batch-size) sorted by length and run s texts at a time, each run padded to its own
longest text. Batch sizes and sub-batch sizes are searched; the best pair is the limit.
Several processes can measure side by side (the harness starts N of them with one thread each, as C runs N
one-thread instances): `--start-at` gives them one schedule, so plan k is measured by all of them in the same
window, from start_at + k * (duration + gap).
Run as `python -m tritonfleet.bench.offline ...` (a clean process: its own threads, its own RSS); prints JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

import numpy as np

from .. import layout


def make_session(model_file: str, threads: int, inter_op: int = 1, execution_mode: str = "sequential"):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter_op
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if execution_mode == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    return ort.InferenceSession(model_file, so, providers=["CPUExecutionProvider"])


def measure(session, tokenizer, texts: list[str], batch_size: int, duration: float, pad_id: int,
            sub_batch_size: int = 0, start_at: float | None = None) -> dict[str, Any]:
    step = sub_batch_size or batch_size

    def run(encs: list[Any]) -> float:
        width = max(len(e.ids) for e in encs)
        ids = np.full((len(encs), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for r, e in enumerate(encs):
            ids[r, :len(e.ids)] = e.ids
            mask[r, :len(e.ids)] = 1
        t = time.perf_counter()
        session.run([layout.LOGITS], {layout.INPUT_IDS: ids, layout.ATTENTION_MASK: mask})
        return time.perf_counter() - t

    def one(start: int) -> tuple[int, float]:
        batch = [texts[(start + i) % len(texts)] for i in range(batch_size)]
        encs = tokenizer.encode_batch(batch)
        if sub_batch_size:
            encs.sort(key=lambda e: len(e.ids))
        return len(encs), sum(run(encs[i:i + step]) for i in range(0, len(encs), step))

    one(0)  # warm-up
    if start_at is not None:  # wait for the other processes measuring side by side
        time.sleep(max(0.0, start_at - time.time()))
    done, model_s, pos = 0, 0.0, 0
    t0 = time.perf_counter()
    while True:
        n, dt = one(pos)
        pos += n
        done += n
        model_s += dt
        if time.perf_counter() - t0 >= duration:
            break
    wall = time.perf_counter() - t0
    return {"batch_size": batch_size, "sub_batch_size": sub_batch_size, "texts": done, "seconds": round(wall, 2),
            "throughput": round(done / wall, 2), "model_only_throughput": round(done / model_s, 2),
            "batch_latency_ms": round(wall / max(1, done // batch_size) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonfleet.bench.offline")
    p.add_argument("--model-file", required=True)
    p.add_argument("--tokenizer-file", required=True)
    p.add_argument("--texts", required=True, help='JSON file {"texts": [...]}')
    p.add_argument("--batch-sizes", default="1,8,16,32,64")
    p.add_argument("--sorted-batches", default="",
                   help="BATCHxSUB,...: batches sorted by length and run SUB texts at a time, e.g. 32x2,32x4")
    p.add_argument("--duration", type=float, default=8, help="seconds per batch size")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (0: onnxruntime default)")
    p.add_argument("--inter-op", type=int, default=1)
    p.add_argument("--execution-mode", choices=("sequential", "parallel"), default="sequential")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--pad-id", type=int, default=0)
    p.add_argument("--start-at", type=float, help="epoch seconds: measure plan k from START_AT + k * (duration + gap)")
    p.add_argument("--gap", type=float, default=4.0, help="seconds between two plans' windows (with --start-at)")
    args = p.parse_args(argv)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer_file)
    tok.enable_truncation(max_length=args.max_length)
    tok.no_padding()
    texts = json.loads(open(args.texts).read())["texts"]  # noqa: SIM115
    session = make_session(args.model_file, args.threads, args.inter_op, args.execution_mode)
    plans = [(int(b), 0) for b in args.batch_sizes.split(",") if b]
    plans += [(int(b), int(sb)) for b, sb in (x.split("x") for x in args.sorted_batches.split(",") if x)]
    results = [measure(session, tok, texts, b, args.duration, args.pad_id, sb,
                       None if args.start_at is None else args.start_at + k * (args.duration + args.gap))
               for k, (b, sb) in enumerate(plans)]
    best = max(results, key=lambda r: r["throughput"])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump({"runtime": {"model_file": args.model_file, "intra_op_threads": args.threads,
                           "inter_op_threads": args.inter_op, "execution_mode": args.execution_mode},
               "batch_sizes": results, "best": best, "peak_rss_mb": round(peak_kb / 1024, 1)}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
