"""The processes a benchmark run starts: tritonserver, the Flask server and the Ray Serve app (each watched as a
`Server`), and the python helpers (load generator, offline runs) whose JSON it reads."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import layout
from ..serve import free_ports
from .procmon import tree

logger = logging.getLogger(__name__)


def free_port() -> int:
    return free_ports(1)[0]


def subprocess_env() -> dict[str, str]:
    """The helpers' environment: offline by default (no hub lookups mid-measurement), no tokenizer threads."""
    return {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run a python helper (loadgen, offline) and return the JSON it prints."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env(), check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Server:
    """A running server (Triton or Flask) with a monitor over its process tree."""

    def __init__(self, kind: str, proc: subprocess.Popen[bytes] | None, url: str, triton: Any = None) -> None:
        self.kind, self.proc, self.url, self.triton = kind, proc, url, triton

    @property
    def pid(self) -> int:
        return self.triton.proc.pid if self.triton else self.proc.pid  # type: ignore[union-attr]

    def classifier_counts(self) -> tuple[int, int] | None:
        """(inferences, executions) of the classifier so far: their ratio over a run is Triton's batch size."""
        if not self.triton:
            return None
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        try:
            stats = client.get_inference_statistics(layout.MODELS.classifier, as_json=True)["model_stats"][0]
        finally:
            client.close()
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def stop(self) -> None:
        if self.triton:
            self.triton.stop()
        elif self.proc and self.proc.poll() is None:
            family = set(tree(self.proc.pid))  # Ray's own processes: stopped with it, whatever they do
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            for pid in family - {self.proc.pid}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


def start_triton(repo: Path, log: Path, ready_timeout: float) -> Server:
    from ..serve import TritonServer

    http, grpc, metrics = free_ports(3)
    s = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, log_file=log)
    t0 = time.monotonic()
    s.start(ready_timeout=ready_timeout)
    logger.info("bench: tritonserver ready in %.1f s (%s)", time.monotonic() - t0, repo.name)
    return Server("triton", None, s.grpc_url, s)


def start_flask(model_dir: Path, log: Path, ready_timeout: float) -> Server:
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tritonfleet.bench.flask_app", "--model", str(model_dir),
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=subprocess_env(),
                                start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Flask server exited ({proc.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return Server("flask", proc, f"127.0.0.1:{port}")
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"the Flask server was not ready within {ready_timeout:.0f} s; see {log}")


def start_ray(config: dict[str, Any], log: Path, ready_timeout: float) -> Server:
    """Setup R's Ray Serve application (`tritonfleet.bench.ray_app`) on a free loopback port."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tritonfleet.bench.ray_app", "--config", json.dumps(config),
                                 "--port", str(port)], stdout=fh, stderr=subprocess.STDOUT,
                                env={**subprocess_env(), "RAY_USAGE_STATS_ENABLED": "0",
                                     "RAY_DEDUP_LOGS": "0"}, start_new_session=True)
    deadline = time.monotonic() + ready_timeout
    server = Server("ray", proc, f"127.0.0.1:{port}")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Ray Serve app exited ({proc.returncode}); see {log}")
        if b"\nready\n" in b"\n" + log.read_bytes():
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"the Ray Serve app was not ready within {ready_timeout:.0f} s; see {log}")
