"""Closed-loop load generator: N users, each sends one request and waits for the answer, again and again.

One asyncio event loop in one process (keep it cheap: it shares the cores with the server). Modes:
- `grpc-text`: the ensemble (raw text, TEXT -> LABEL, SCORES) over tritonclient.grpc.aio;
- `grpc-tensor`: the classifier's tensor interface (INPUT__0/INPUT__1 token ids), a fallback for perf_analyzer;
- `http-text`: POST {"text": ...} to the Flask server over aiohttp.
Run as `python -m tritonfleet.bench.loadgen ...`; prints one JSON object (stats over the measured window,
and this process's own CPU time in that window) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

import numpy as np

from .. import layout


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    a = np.asarray(latencies) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "mean_ms": round(float(a.mean()), 2),
            "max_ms": round(float(a.max()), 2)}


class Stats:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.errors = 0
        self.errors_total = 0
        self.error_samples: list[str] = []
        self.error_statuses: dict[str, int] = {}
        #: Every request, in the order they ended: (end, latency, status) with times in seconds from `begin`,
        #: status "OK" or the error's; kept only with --events.
        self.events: list[tuple[float, float, str]] | None = None
        self.begin = start

    def ok(self, t0: float, t1: float) -> None:
        if self.start <= t1 <= self.end:
            self.latencies.append(t1 - t0)
        if self.events is not None:
            self.events.append((round(t1 - self.begin, 4), round(t1 - t0, 4), "OK"))

    def error(self, t1: float, exc: BaseException | str, t0: float | None = None) -> None:
        self.errors_total += 1
        status = getattr(exc, "status", None)
        status = str(status() if callable(status) else status or type(exc).__name__)
        if self.events is not None:
            self.events.append((round(t1 - self.begin, 4), round(t1 - (t0 if t0 is not None else t1), 4), status))
        self.error_statuses[status] = self.error_statuses.get(status, 0) + 1
        if self.start <= t1 <= self.end:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(" ".join(str(exc).split())[:300])


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    payload = json.loads(open(args.data).read())  # noqa: SIM115, ASYNC230 - read before the clock starts
    loop = asyncio.get_running_loop()
    t_begin = loop.time()
    unix_begin = time.time()
    stats = Stats(t_begin + args.warmup, t_begin + args.warmup + args.duration)
    stats.begin = t_begin
    if args.events:
        stats.events = []

    def stop() -> None:  # SIGTERM ends the run early (the users finish their request in flight); stats still print
        stats.end = min(stats.end, loop.time())

    loop.add_signal_handler(signal.SIGTERM, stop)
    close: list[Any] = []

    if args.mode == "http-text":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                        timeout=aiohttp.ClientTimeout(total=args.timeout))
        close.append(session.close)
        url = f"http://{args.url}/predict"
        bodies = [json.dumps({"text": t}).encode() for t in payload["texts"]]

        async def send(i: int) -> None:
            async with session.post(url, data=bodies[i], headers={"Content-Type": "application/json"}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
        n_items = len(bodies)
    else:
        import tritonclient.grpc as grpcclient
        from tritonclient.grpc import aio as grpcaio

        # One channel per 50 users: HTTP/2 caps concurrent streams per connection. TLS with --ca-file.
        tls = {"ssl": True, "root_certificates": args.ca_file} if args.ca_file else {}
        clients = [grpcaio.InferenceServerClient(args.url, **tls) for _ in range(max(1, -(-args.users // 50)))]
        close.extend(c.close for c in clients)
        if args.mode == "grpc-text":
            model = args.model
            requests = []
            for t in payload["texts"]:
                inp = grpcclient.InferInput(layout.TEXT, [1, 1], "BYTES")
                inp.set_data_from_numpy(np.array([[t.encode()]], dtype=np.object_))
                requests.append([inp])
            outputs = [grpcclient.InferRequestedOutput(layout.LABEL), grpcclient.InferRequestedOutput(layout.SCORES)]
        else:
            model = layout.MODELS.classifier
            requests = []
            for item in payload["data"]:
                pair = []
                for name in (layout.INPUT_IDS, layout.ATTENTION_MASK):
                    arr = np.asarray(item[name]["content"], dtype=np.int64).reshape(1, -1)
                    inp = grpcclient.InferInput(name, list(arr.shape), "INT64")
                    inp.set_data_from_numpy(arr)
                    pair.append(inp)
                requests.append(pair)
            outputs = [grpcclient.InferRequestedOutput(layout.LOGITS)]

        async def send(i: int) -> None:
            client = clients[i % len(clients)]
            await client.infer(model, requests[i], outputs=outputs, client_timeout=args.timeout)
        n_items = len(requests)

    counter = [0]

    async def user(u: int) -> None:
        idx = (u * 7919) % n_items
        while True:
            t0 = loop.time()
            if t0 >= stats.end:
                return
            try:
                await send(idx)
            except Exception as exc:  # noqa: BLE001 - every failure is an error of the benchmark
                stats.error(loop.time(), exc, t0)
                await asyncio.sleep(0.05)
            else:
                stats.ok(t0, loop.time())
            counter[0] += 1
            idx = (idx + 1) % n_items

    cpu = {}

    async def clock() -> None:
        await asyncio.sleep(max(0.0, stats.start - loop.time()))
        cpu["t0"] = time.process_time()
        while loop.time() < stats.end:  # stop() may bring the end forward
            await asyncio.sleep(min(0.2, max(0.0, stats.end - loop.time())))
        cpu["t1"] = time.process_time()

    await asyncio.gather(clock(), *(user(u) for u in range(args.users)))
    for fn in close:
        res = fn()
        if asyncio.iscoroutine(res):
            await res
    done = len(stats.latencies)
    measured = max(1e-9, stats.end - stats.start)
    if args.latencies:
        np.save(args.latencies, np.asarray(stats.latencies, dtype=np.float64))
    if args.events:
        with open(args.events, "w") as f:  # noqa: ASYNC230 - after the clock stopped
            json.dump({"unix_begin": unix_begin, "events": stats.events}, f)
    return {
        "mode": args.mode, "users": args.users, "duration_s": round(measured, 2), "warmup_s": args.warmup,
        "completed": done, "throughput": round(done / measured, 2), "errors": stats.errors,
        "sent_total": counter[0],
        "errors_total": stats.errors_total, "error_samples": stats.error_samples,
        "error_statuses": stats.error_statuses,
        **percentiles(stats.latencies),
        "client_cpu_s": round(cpu.get("t1", 0) - cpu.get("t0", 0), 2),
        "client_cpu_cores": round((cpu.get("t1", 0) - cpu.get("t0", 0)) / measured, 3),
        "load_generator": {"http-text": "aiohttp asyncio (1 event loop)",
                           "grpc-text": "tritonclient.grpc.aio (1 event loop)",
                           "grpc-tensor": "tritonclient.grpc.aio (1 event loop; perf_analyzer not found)"}[args.mode],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonfleet.bench.loadgen")
    p.add_argument("--mode", choices=("grpc-text", "grpc-tensor", "http-text"), required=True)
    p.add_argument("--url", required=True, help="HOST:PORT")
    p.add_argument("--data", required=True, help='JSON file: {"texts": [...]} or perf_analyzer\'s {"data": [...]}')
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--warmup", type=float, default=10)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--model", default=layout.MODELS.ensemble, help="grpc-text: the model (ensemble) to call")
    p.add_argument("--ca-file", help="gRPC over TLS, trusting this CA (a load balancer's certificate)")
    p.add_argument("--latencies", help="also write the measured window's latencies (seconds, .npy) here, for "
                                       "merging the percentiles of several load generator processes")
    p.add_argument("--events", help="also write every request (end and latency in seconds from the start, status "
                                    "OK or the error's) as JSON here, with the start's Unix time: a timeline")
    args = p.parse_args(argv)
    result = asyncio.run(_run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
