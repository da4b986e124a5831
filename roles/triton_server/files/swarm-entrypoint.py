#!/usr/bin/env python3
"""The entrypoint of a Triton task in swarm mode (role triton_server, entry point `service`; docs/SWARM.md).

It runs tritonserver and, beside it, the readiness the load balancer checks: GET /v2/health/ready on --port answers
with Triton's own readiness while the task runs, and 503 from the moment the swarm stops the task (SIGTERM); GET
/v2/models/<name>/ready the same with that model's readiness (the backend of one model at the load balancer). Triton
gets the SIGTERM --drain seconds later: by then the load balancer has seen the task go unready and sends it nothing
new, and the requests in flight finish (Triton's --exit-timeout-secs). A stopped Triton answers every new request
with UNAVAILABLE ("Server is stopping"), which a load balancer cannot retry: without the drain, the requests sent in
the second before the load balancer notices are lost. The swarm has no pre-stop hook; this is one.

    swarm-entrypoint.py --port 8003 --drain 5 --ready-url http://127.0.0.1:8000/v2/health/ready -- tritonserver ...

The exit status is tritonserver's, so the swarm sees a crash as one. Python's standard library only: it runs with
the image's python3 (NVIDIA's tritonserver image and the CPU image have one).
"""

from __future__ import annotations

import argparse
import http.server
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

READY_PATH = "/v2/health/ready"
#: A model's readiness: a name of the characters the load balancer admits in a model's name, nothing else.
MODEL_READY_PATH = re.compile(r"/v2/models/([A-Za-z0-9_.-]+)/ready")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="where the load balancer checks readiness")
    parser.add_argument("--drain", type=float, required=True, help="seconds between SIGTERM and Triton's SIGTERM")
    parser.add_argument("--ready-url", required=True, help="Triton's own readiness URL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- tritonserver and its arguments")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        parser.error("no command: give tritonserver and its arguments after --")
    if not args.ready_url.endswith(READY_PATH):
        parser.error(f"--ready-url must end with {READY_PATH} (the models' readiness is found beside it)")
    return args


def triton_ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


#: At most this many readiness checks at once (a load balancer makes one a second); more are closed at once.
MAX_CHECKS = 16
#: Seconds a check's connection may stay silent or slow before it is closed.
CHECK_TIMEOUT = 5


class ReadinessServer(http.server.ThreadingHTTPServer):
    """A thread per check, at most MAX_CHECKS at once: a flood of connections cannot exhaust the task's threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(MAX_CHECKS)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001 (socketserver's signature)
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:  # noqa: ANN001
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def main(argv: list[str]) -> int:
    args = parse(argv)
    stopping = threading.Event()
    signalled = threading.Lock()  # Triton gets one SIGTERM (a second one would make it exit at once)
    server: subprocess.Popen[bytes] | None = None

    def stop_triton_later() -> None:
        time.sleep(args.drain)
        if server is not None and server.poll() is None and signalled.acquire(blocking=False):
            server.send_signal(signal.SIGTERM)

    def on_stop(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        print(f"swarm-entrypoint: signal {signum}: unready now, stopping Triton in {args.drain:g} s", flush=True)
        threading.Thread(target=stop_triton_later, daemon=True).start()

    # Before Triton starts: a stop that comes while it starts is a stop too (never the default action, which would
    # leave Triton without its drain).
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

    triton = args.ready_url.removesuffix(READY_PATH)

    class Readiness(http.server.BaseHTTPRequestHandler):
        timeout = CHECK_TIMEOUT

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            model = MODEL_READY_PATH.fullmatch(self.path)
            url = args.ready_url if self.path == READY_PATH else triton + self.path if model else None
            if url is None:
                status = 404
            elif stopping.is_set() or not triton_ready(url):
                status = 503
            else:
                status = 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:  # one check a second per load balancer: keep the log quiet
            pass

    readiness = ReadinessServer(("0.0.0.0", args.port), Readiness)
    threading.Thread(target=readiness.serve_forever, daemon=True).start()
    if stopping.is_set():
        return 0
    server = subprocess.Popen(args.command)
    if stopping.is_set():  # stopped while it started: its drain is already counting
        threading.Thread(target=stop_triton_later, daemon=True).start()
    return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
