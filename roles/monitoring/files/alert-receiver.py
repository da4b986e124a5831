#!/usr/bin/env python3
"""tritonfleet's alert receiver: records what Alertmanager's webhook sends.

POST (any path): the notification (JSON) is appended to the log as one line, with `received` (Unix time, when it
arrived) added. GET (any path): the log, one JSON object per line. Python's standard library only.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1 << 20


def make_handler(log: Path, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes = b"", content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self._answer(413 if length else 411)
                return
            try:
                notification = json.loads(self.rfile.read(length))
            except ValueError:
                self._answer(400, b"not JSON\n")
                return
            if not isinstance(notification, dict):
                self._answer(400, b"not a JSON object\n")
                return
            line = json.dumps({"received": time.time(), **notification}, sort_keys=True)
            with lock, log.open("a") as out:
                out.write(line + "\n")
            self._answer(200, b"recorded\n")

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                body = log.read_bytes() if log.exists() else b""
            self._answer(200, body, "application/x-ndjson")

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    parser.add_argument("--log", type=Path, required=True, help="the JSON lines file")
    args = parser.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((args.address, args.port), make_handler(args.log, threading.Lock()))
    print(f"alert receiver on http://{args.address}:{args.port}/, recording to {args.log}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
